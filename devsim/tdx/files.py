"""Files of a simulated TDX guest: the guest's error and the file helpers bound to it.

The private keys are ECDSA P-256 and refused on load when others can read
them: whoever can read the attestation key can sign quotes as the simulated
TD's quoting enclave. See :mod:`devsim.files`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from devsim.files import SimulatorFiles

__all__ = ["FILES", "TdxGuestError"]


class TdxGuestError(Exception):
    """A simulated TDX guest directory cannot be created or used; the message names the file."""


FILES = SimulatorFiles(TdxGuestError, ec.SECP256R1())
