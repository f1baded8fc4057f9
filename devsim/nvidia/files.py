"""Files of a fleet directory: the fleet's error and the file helpers bound to it.

Private keys are ECDSA P-384 and refused on load when others can read them:
anyone who can read one can impersonate the simulated GPU, exactly the mistake
the verifier's own key handling refuses. See :mod:`devsim.files`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from devsim.files import SimulatorFiles

__all__ = ["FILES", "FleetError"]


class FleetError(Exception):
    """A fleet directory cannot be created or used; the message names the file."""


FILES = SimulatorFiles(FleetError, ec.SECP384R1())
