"""Erase receipts: the agent's AK-signed statement that it erased a release.

A receipt is a TPM quote whose qualifyingData is the verifier's derivation of a
fresh nonce and the release id, so it cannot be produced before the verifier
asked, for another release, or by another TPM.
"""

from __future__ import annotations

import hashlib
import hmac

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.parse import TpmPublic, parse_quote_attest, parse_signature
from verifier.evidence.tpm.signature import SignatureCheckError, verify_tpm_signature
from verifier.verdict import Reason, VerificationError

_ERASE_DOMAIN = b"weightgate/v1/erase-receipt\x00"


def erase_qualifying_data(nonce: bytes, release_id: str) -> bytes:
    return hashlib.sha256(_ERASE_DOMAIN + nonce + b"\x00" + release_id.encode()).digest()


def verify_erase_receipt(
    *, attest: bytes, signature: bytes, ak: TpmPublic, expected_qualifying_data: bytes
) -> None:
    """Raise VerificationError unless, in order: `attest` is a TPM quote
    (erase.receipt.malformed), signed by the enrolled AK over those exact bytes
    (erase.receipt.signature_invalid), with extraData equal to the qualifying
    data the verifier issued for this release (erase.receipt.nonce_mismatch)."""
    try:
        info = parse_quote_attest(attest)
        sig = parse_signature(signature)
    except ParseError as exc:
        raise VerificationError(Reason("erase.receipt.malformed", str(exc))) from None
    try:
        verify_tpm_signature(attest, sig, ak, allow_sha1=False)
    except SignatureCheckError as exc:
        raise VerificationError(Reason("erase.receipt.signature_invalid", str(exc))) from None
    if not hmac.compare_digest(info.extra_data, expected_qualifying_data):
        raise VerificationError(
            Reason("erase.receipt.nonce_mismatch", "receipt does not answer this revocation")
        )
