"""Parse a TPM2B_PUBLIC / TPMT_PUBLIC (untrusted bytes) of an RSA or ECC key.

Unmarshalled with tpm2-pytss through :func:`.unmarshal_exact` (bounded, no trailing
bytes, canonical encoding): the marshalled bytes are kept as received, because
the key's TPM name is a hash over them. Parsing only records the key's type,
attributes, policy and scheme; whether it is fit to be an AK is decided elsewhere
(``keys``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from tpm2_pytss.types import TPMT_PUBLIC

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.parse_common import (
    HASH_ALGS,
    HASH_IDS,
    MAX_PUBLIC_SIZE,
    as_bytes,
    hash_name,
    read_field,
    unmarshal_exact,
)
from verifier.evidence.tpm.parse_signatures import SIG_SCHEMES

__all__ = ["TpmPublic", "parse_tpm2b_public", "parse_tpmt_public"]

_ALG_NULL = 0x0010
_ALG_RSA = 0x0001
_ALG_ECC = 0x0023
_ALG_RSAES = 0x0015
# Every asymmetric scheme a TPMT_PUBLIC may name; an AK is later required to use a
# signing one compatible with its signatures, but parsing only records it.
_ASYM_SCHEMES = {
    **SIG_SCHEMES,
    0x0015: "rsaes",
    0x0017: "oaep",
    0x0019: "ecdh",
    0x001A: "ecdaa",
    0x001B: "sm2",
    0x001C: "ecschnorr",
    0x001D: "ecmqv",
}
# TPM_ECC_CURVE -> (our name, coordinate size in bytes)
_CURVES = {0x0003: ("p256", 32), 0x0004: ("p384", 48), 0x0005: ("p521", 66)}


@dataclass(frozen=True, slots=True)
class TpmPublic:
    """An RSA or ECC TPMT_PUBLIC.

    ``public_area`` keeps the marshalled bytes exactly as received: the TPM name is
    a hash over them. RSA keys fill the ``rsa_*`` fields, ECC keys the ``ecc_*`` ones.
    """

    key_type: str
    name_algorithm: str
    attributes: int
    auth_policy: bytes
    scheme: str | None
    scheme_hash: str | None
    public_area: bytes
    key_bits: int
    rsa_exponent: int | None = None
    rsa_modulus: bytes | None = None
    ecc_curve: str | None = None
    ecc_x: bytes | None = None
    ecc_y: bytes | None = None

    @property
    def name(self) -> bytes:
        """TPM name: nameAlg (2 bytes, big-endian) || H_nameAlg(public_area)."""
        alg_id = HASH_IDS[self.name_algorithm]
        digest = hashlib.new(self.name_algorithm, self.public_area).digest()
        return alg_id.to_bytes(2, "big") + digest


def parse_tpm2b_public(data: bytes) -> TpmPublic:
    """Parse a TPM2B_PUBLIC: a 2-byte big-endian size, then exactly that TPMT_PUBLIC."""
    raw = as_bytes(data, what="TPM2B_PUBLIC", limit=MAX_PUBLIC_SIZE + 2)
    if len(raw) < 2:
        raise ParseError("TPM2B_PUBLIC: truncated size")
    size = int.from_bytes(raw[:2], "big")
    if size != len(raw) - 2:
        raise ParseError(f"TPM2B_PUBLIC: size {size} but {len(raw) - 2} bytes follow")
    return parse_tpmt_public(raw[2:])


def _scheme(detail: Any) -> tuple[str | None, str | None]:
    alg = int(detail.scheme.scheme)
    if alg == _ALG_NULL:
        return None, None
    name = _ASYM_SCHEMES.get(alg)
    if name is None:
        raise ParseError(f"TPMT_PUBLIC: unsupported scheme 0x{alg:04x}")
    if alg == _ALG_RSAES:  # the only asymmetric scheme without a hash
        return name, None
    hash_alg = hash_name(int(detail.scheme.details.anySig.hashAlg), what="TPMT_PUBLIC scheme")
    return name, hash_alg


def parse_tpmt_public(data: bytes) -> TpmPublic:
    """Parse a marshalled TPMT_PUBLIC of an RSA or ECC key."""
    raw = as_bytes(data, what="TPMT_PUBLIC", limit=MAX_PUBLIC_SIZE)
    pub = unmarshal_exact(TPMT_PUBLIC, raw, what="TPMT_PUBLIC")

    def build() -> TpmPublic:
        name_alg = int(pub.nameAlg)
        if name_alg not in HASH_ALGS:
            # Without a hash there is no name, and the name is how a TPM object is bound.
            raise ParseError(f"TPMT_PUBLIC: unsupported nameAlg 0x{name_alg:04x}")
        common: dict[str, Any] = {
            "name_algorithm": HASH_ALGS[name_alg],
            "attributes": int(pub.objectAttributes),
            "auth_policy": bytes(pub.authPolicy),
            "public_area": raw,
        }
        key_type = int(pub.type)
        if key_type == _ALG_RSA:
            detail = pub.parameters.rsaDetail
            bits = int(detail.keyBits)
            modulus = bytes(pub.unique.rsa)
            if bits == 0 or bits % 8 or len(modulus) != bits // 8:
                raise ParseError(f"TPMT_PUBLIC: {len(modulus)}-byte modulus for {bits} bits")
            scheme, scheme_hash = _scheme(detail)
            return TpmPublic(
                key_type="rsa",
                scheme=scheme,
                scheme_hash=scheme_hash,
                key_bits=bits,
                rsa_exponent=int(detail.exponent),
                rsa_modulus=modulus,
                **common,
            )
        if key_type == _ALG_ECC:
            detail = pub.parameters.eccDetail
            curve_id = int(detail.curveID)
            if curve_id not in _CURVES:
                raise ParseError(f"TPMT_PUBLIC: unsupported curve 0x{curve_id:04x}")
            curve, size = _CURVES[curve_id]
            x, y = bytes(pub.unique.ecc.x), bytes(pub.unique.ecc.y)
            if not 0 < len(x) <= size or not 0 < len(y) <= size:
                raise ParseError(f"TPMT_PUBLIC: bad point coordinate size for {curve}")
            scheme, scheme_hash = _scheme(detail)
            return TpmPublic(
                key_type="ecc",
                scheme=scheme,
                scheme_hash=scheme_hash,
                key_bits=size * 8 if curve != "p521" else 521,
                ecc_curve=curve,
                ecc_x=x,
                ecc_y=y,
                **common,
            )
        raise ParseError(f"TPMT_PUBLIC: unsupported key type 0x{key_type:04x}")

    return read_field("TPMT_PUBLIC", build)
