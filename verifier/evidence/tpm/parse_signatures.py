"""Parse a TPMT_SIGNATURE (untrusted bytes): RSASSA, RSAPSS or ECDSA, bounded.

Framed by the strict hand-written reader of :mod:`.wire` (pytss is its test
oracle); an ECDSA (r, s) is re-encoded as DER, which is what ``cryptography``
verifies. Nothing is verified here: ``signature`` checks it against a key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import wire
from verifier.evidence.tpm.parse_common import (
    HASH_ALGS,
    MAX_SIGNATURE_SIZE,
    as_bytes,
    hash_name,
    slot_setters,
)

__all__ = ["SIG_SCHEMES", "TpmSignature", "parse_signature"]

# TPM_ALG_ID of the signature schemes -> our name.
SIG_SCHEMES = {0x0014: "rsassa", 0x0016: "rsapss", 0x0018: "ecdsa"}


@dataclass(frozen=True, slots=True)
class TpmSignature:
    """A TPMT_SIGNATURE. For ECDSA, ``signature`` is the DER encoding of (r, s),
    which is what ``cryptography`` verifies."""

    scheme: str
    hash_algorithm: str
    signature: bytes


_SIG_SCHEME, _SIG_HASH, _SIG_VALUE = slot_setters(
    TpmSignature, ("scheme", "hash_algorithm", "signature")
)


def parse_signature(data: bytes) -> TpmSignature:
    """Parse a marshalled TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA)."""
    # as_bytes() inline for the common case (exact bytes within the bound), as in
    # parse_quote_attest; anything else goes through it and its errors.
    if type(data) is bytes and len(data) <= MAX_SIGNATURE_SIZE:
        raw = data
    else:
        raw = as_bytes(data, what="TPMT_SIGNATURE", limit=MAX_SIGNATURE_SIZE)
    alg, hash_alg, parts = wire.read_signature(raw)
    scheme = SIG_SCHEMES[alg]
    if scheme == "ecdsa":
        r, s = parts
        if not r or not s:
            raise ParseError("TPMT_SIGNATURE: empty ECDSA r or s")
        signature = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    else:
        (signature,) = parts
        if not signature:
            raise ParseError("TPMT_SIGNATURE: empty RSA signature")
    # hash_name() only for an unknown hash, for its error (it names the scheme as
    # before: "ECDSA" for ECDSA).
    hash_algorithm = HASH_ALGS.get(hash_alg)
    if hash_algorithm is None:
        hash_algorithm = hash_name(hash_alg, what="ECDSA" if scheme == "ecdsa" else scheme)
    # TpmSignature(scheme, hash_algorithm, signature), slot by slot (slot_setters).
    sig: TpmSignature = object.__new__(TpmSignature)
    _SIG_SCHEME(sig, scheme)
    _SIG_HASH(sig, hash_algorithm)
    _SIG_VALUE(sig, signature)
    return sig
