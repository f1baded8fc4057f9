"""Bind an SPDM measurement report to the device: signature, nonce, firmware id.

The report ends with a raw ECDSA P-384 signature, r || s (48 bytes each), by
the device leaf key over SHA-384 of every byte before it (the 37-byte
GET_MEASUREMENTS request and the MEASUREMENTS response). The request carries
the verifier's nonce, so the signature also covers the nonce; the leaf's FWID
extension must equal the FWID the firmware put in the report.

Each check raises :class:`VerificationError` with a named reason (STYLE.md,
"Raise, don't return False"); comparisons of values an attacker chooses use
``hmac.compare_digest`` so timing does not reveal how many bytes matched.
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from verifier.verdict import Reason, VerificationError

P384_COORDINATE_LEN = 48
SIGNATURE_LEN = 2 * P384_COORDINATE_LEN
NONCE_LEN = 32  # SPDM 1.1 GET_MEASUREMENTS nonce

CHECK_SIGNATURE = "nvidia.report.signature"
CHECK_NONCE = "nvidia.report.nonce"
CHECK_FWID = "nvidia.report.fwid"


def _fail(code: str, detail: str) -> VerificationError:
    return VerificationError(Reason(f"nvidia.report.{code}", detail), ())


def verify_report_signature(
    signed_bytes: bytes, signature_rs: bytes, leaf_public_key: CertificatePublicKeyTypes
) -> None:
    """Raise unless ``signature_rs`` is the leaf key's P-384 signature of ``signed_bytes``.

    Checks: the key is ECDSA P-384 (what NVIDIA devices use; another key type
    cannot have made this signature format); the signature is exactly 96 bytes;
    r and s are in range (by the library); the signature verifies over SHA-384.
    Reason: ``nvidia.report.signature_invalid``.
    """
    if not isinstance(leaf_public_key, ec.EllipticCurvePublicKey) or not isinstance(
        leaf_public_key.curve, ec.SECP384R1
    ):
        raise _fail("signature_invalid", "leaf key is not ECDSA P-384")
    if len(signature_rs) != SIGNATURE_LEN:
        raise _fail("signature_invalid", f"signature is {len(signature_rs)} bytes, not 96")
    r = int.from_bytes(signature_rs[:P384_COORDINATE_LEN], "big")
    s = int.from_bytes(signature_rs[P384_COORDINATE_LEN:], "big")
    try:
        leaf_public_key.verify(encode_dss_signature(r, s), signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        # Caught by type, never by message: InvalidSignature's message is empty.
        raise _fail("signature_invalid", "report signature does not verify") from None


def check_nonce(expected: bytes, request_nonce: bytes) -> None:
    """Raise unless the report's request nonce is the one this verifier derived.

    The nonce is what makes the (signed) report fresh; a report for another
    challenge is a replay. Reason: ``nvidia.report.nonce_mismatch``.
    """
    if len(expected) != NONCE_LEN:
        # A caller bug, not evidence: a short expected nonce would weaken the check.
        raise ValueError(f"expected nonce must be {NONCE_LEN} bytes")
    if not hmac.compare_digest(expected, request_nonce):
        raise _fail("nonce_mismatch", "report answers another nonce")


def check_fwid(cert_fwid: bytes, report_fwid: bytes) -> None:
    """Raise unless the report's FWID equals the one the leaf certificate attests.

    The leaf certificate is issued to the firmware measured into it; a report
    whose FWID differs was produced by other firmware than the certified one.
    Reason: ``nvidia.report.fwid_mismatch``.
    """
    if not cert_fwid:
        raise ValueError("certificate FWID is empty")
    if not hmac.compare_digest(cert_fwid, report_fwid):
        raise _fail("fwid_mismatch", "report FWID differs from the leaf certificate's")
