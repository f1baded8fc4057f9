"""Files of a simulated SNP host: the host's error and the file helpers bound to it.

The VCEK key is ECDSA P-384 and refused on load when others can read it:
whoever can read it can sign reports as the simulated chip. See
:mod:`devsim.files`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from devsim.files import SimulatorFiles

__all__ = ["FILES", "SnpHostError"]


class SnpHostError(Exception):
    """A simulated SNP host directory cannot be created or used; the message names the file."""


FILES = SimulatorFiles(SnpHostError, ec.SECP384R1())
