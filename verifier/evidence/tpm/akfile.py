"""Read an attestation key given to the offline tools, in the formats tpm2-tools writes.

* TPM2B_PUBLIC (``tpm2_createak -u``, ``ak.tpm2b_public``): a 2-byte size, then a
  TPMT_PUBLIC of exactly that size;
* TPMT_PUBLIC (``tpm2_readpublic -f tpmt``, go-tpm-tools ``ak_pub.tpmt``);
* PEM SubjectPublicKeyInfo or a PEM certificate (``tpm2_readpublic -f pem``).

A PEM key carries no TPM attributes and no nameAlg, so nobody can tell from it
whether the key is a restricted, TPM-resident signing key: the very property that
makes a quote unforgeable. It is wrapped in a TPMT_PUBLIC *assumed* to have the
AK attributes, so that the key-strength and signature checks still run, and
``attributes_known`` is False so that callers say what was not checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm2_pytss.constants import TPMA_OBJECT
from tpm2_pytss.types import TPMT_PUBLIC

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.parse import TpmPublic, parse_tpm2b_public, parse_tpmt_public

__all__ = ["AkFormat", "LoadedAk", "load_ak"]

AkFormat = Literal["tpm2b_public", "tpmt_public", "pem"]

# What an AK must have (keys.check_attestation_key); assumed, not known, for PEM.
_ASSUMED_AK_ATTRIBUTES = (
    TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
    | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
)
_PEM_MARKER = b"-----BEGIN "
_TPM_KEY_TYPES = (0x0001, 0x0023)  # TPM_ALG_RSA, TPM_ALG_ECC: how a TPMT_PUBLIC starts


@dataclass(frozen=True, slots=True)
class LoadedAk:
    """The AK as :func:`authenticate_quote` takes it, and where it came from."""

    public: TpmPublic
    source_format: AkFormat
    attributes_known: bool


def load_ak(data: bytes) -> LoadedAk:
    """Detect the format of ``data`` and read the key; ParseError if it is none of them."""
    if data.lstrip().startswith(_PEM_MARKER):
        return LoadedAk(_from_pem(data), "pem", attributes_known=False)
    if len(data) >= 2 and int.from_bytes(data[:2], "big") == len(data) - 2:
        return LoadedAk(parse_tpm2b_public(data), "tpm2b_public", attributes_known=True)
    if len(data) >= 2 and int.from_bytes(data[:2], "big") in _TPM_KEY_TYPES:
        return LoadedAk(parse_tpmt_public(data), "tpmt_public", attributes_known=True)
    raise ParseError(
        "not a TPM2B_PUBLIC, TPMT_PUBLIC or PEM public key / certificate "
        "(tpm2_createak -u, tpm2_readpublic -f tpmt|pem)"
    )


def _from_pem(data: bytes) -> TpmPublic:
    try:
        key: object = (
            x509.load_pem_x509_certificate(data).public_key()
            if b"CERTIFICATE-----" in data
            else serialization.load_pem_public_key(data)
        )
    except ValueError as exc:
        raise ParseError(f"PEM: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ParseError(f"PEM: a {type(key).__name__} cannot be a TPM attestation key")
    spki = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        public = TPMT_PUBLIC.from_pem(spki, objectAttributes=_ASSUMED_AK_ATTRIBUTES)
        marshalled = bytes(public.marshal())
    # The TSS (cffi) raises its own types, e.g. for a curve the TPM does not define.
    except Exception as exc:
        raise ParseError(f"PEM: not a key a TPM can hold ({exc})") from None
    return parse_tpmt_public(marshalled)
