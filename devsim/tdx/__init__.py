"""A simulated Intel TDX guest.

Real formats (a version-4 TDX quote with a TD 1.0 body, signed by the quoting
enclave's attestation key, certification data type 6 with a QE report signed by
the PCK key and the PEM PCK chain; DCAP collateral: TCB Info v3, QE Identity v2,
CRLs), made under a freshly generated TEST Intel SGX root that the verifier
trusts only where its SPKI SHA-256 is pinned explicitly. See
:mod:`devsim.tdx.guest` for the directory layout.
"""

from devsim.tdx.files import TdxGuestError
from devsim.tdx.guest import MAX_VALIDITY_DAYS, TdxGuest, create_tdx_guest, load_tdx_guest

__all__ = [
    "MAX_VALIDITY_DAYS",
    "TdxGuest",
    "TdxGuestError",
    "create_tdx_guest",
    "load_tdx_guest",
]
