"""IMA file signatures (the ``security.ima`` xattr an ima-sig entry carries).

Format v2 (``struct signature_v2_hdr``, ima-evm-utils ``imaevm.h``, kernel
``security/integrity/integrity.h``), packed, big-endian:

    type (1) = 3 (EVM_IMA_XATTR_DIGSIG) | version (1) = 2 | hash algo (1, enum
    hash_algo) | key id (4) | signature size (2) | signature

The signature is over the file digest itself: RSA PKCS#1 v1.5 with the DigestInfo
of the hash algorithm, or ECDSA (DER) over the digest. The key id is the last four
bytes of the key's X.509 subjectKeyIdentifier, i.e. of SHA-1 over the
subjectPublicKey bits (RFC 5280 method 1, what evmctl computes and the kernel looks
up); the shared vectors' keylime keys (RSA-2048 ``f3452d23``, secp256k1 ``531f4025``)
confirm it. Version 3 signatures (over an ``ima_file_id`` digest, used for
fs-verity) are recognised and refused as unsupported.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from verifier.evidence.errors import ParseError

__all__ = [
    "ImaSignature",
    "ImaSignatureError",
    "VerificationKey",
    "key_id",
    "load_verification_key",
    "parse_ima_signature",
    "verify_ima_signature",
]

_HEADER = struct.Struct(">BBB4sH")
_DIGSIG = 3  # EVM_IMA_XATTR_DIGSIG
_VERSIONS = (2, 3)
# enum hash_algo (include/uapi/linux/hash_info.h) -> kernel name; the SHA-2 family
# is what signatures are verified with (SHA-1 and MD5 are refused as too weak).
_HASH_ALGOS: Mapping[int, str] = MappingProxyType(
    {1: "md5", 2: "sha1", 4: "sha256", 5: "sha384", 6: "sha512", 7: "sha224", 17: "sm3"}
)
_VERIFY_HASHES: Mapping[str, hashes.HashAlgorithm] = MappingProxyType(
    {
        "sha224": hashes.SHA224(),
        "sha256": hashes.SHA256(),
        "sha384": hashes.SHA384(),
        "sha512": hashes.SHA512(),
    }
)
# Keys weaker than this cannot be trusted to sign what runs on a host holding weights.
_MIN_RSA_BITS = 2048
_MAX_SIGNATURE = 1024  # RSA-8192 is 1,024 bytes; an ECDSA DER signature is < 150

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class ImaSignatureError(ValueError):
    """A signature did not verify. ``code`` is stable (the reason code's last part)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ImaSignature:
    version: int
    hash_alg: str | None  # kernel name; None for an algorithm number we do not know
    hash_algo_id: int
    key_id: bytes  # 4 bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A trusted IMA signing key and its 4-byte key id."""

    key_id: bytes
    public_key: PublicKey


def parse_ima_signature(raw: bytes) -> ImaSignature:
    """The v2/v3 header and signature, every byte accounted for; raises ParseError only."""
    if len(raw) < _HEADER.size:
        raise ParseError(f"IMA signature: {len(raw)} bytes", code="truncated")
    kind, version, algo, kid, size = _HEADER.unpack_from(raw)
    if kind != _DIGSIG or version not in _VERSIONS:
        raise ParseError(f"IMA signature: type {kind} version {version}", code="bad_header")
    # keylime's ima-sig-bad-sigsize vector writes the size little-endian: it must
    # fail here rather than be read as a shorter or longer signature.
    if size != len(raw) - _HEADER.size or not 0 < size <= _MAX_SIGNATURE:
        raise ParseError(
            f"IMA signature: size field {size} but {len(raw) - _HEADER.size} bytes follow",
            code="bad_length",
        )
    return ImaSignature(version, _HASH_ALGOS.get(algo), algo, kid, raw[_HEADER.size :])


def key_id(public_key: PublicKey) -> bytes:
    """The IMA key id: the last 4 bytes of the RFC 5280 method-1 key identifier."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key).digest[-4:]


def load_verification_key(pem: bytes) -> VerificationKey:
    """A PEM public key or X.509 certificate; ValueError if it cannot be trusted.

    For a certificate the key id comes from its subjectKeyIdentifier extension when
    present (what the kernel's keyring indexes), else it is computed from the key.
    """
    kid: bytes | None = None
    key: PublicKeyTypes
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            cert = x509.load_pem_x509_certificate(pem)
            key = cert.public_key()
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
                kid = ski.value.digest[-4:]
            except x509.ExtensionNotFound:
                kid = None
        else:
            key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a PEM public key or certificate: {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits (minimum {_MIN_RSA_BITS})")
    elif not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"unsupported key type {type(key).__name__}")
    return VerificationKey(kid if kid is not None else key_id(key), key)


def verify_ima_signature(
    signature: ImaSignature,
    digest_alg: str,
    digest: bytes,
    keys: Mapping[bytes, VerificationKey],
) -> VerificationKey:
    """The key that signed ``digest``; raises ImaSignatureError naming the failed check.

    Checks, in order: version 2; the signature's hash algorithm is one we verify
    with and is the algorithm of the logged digest (the log holds only that digest);
    the key id names a trusted key; the signature verifies.
    """
    if signature.version != 2:
        raise ImaSignatureError(
            f"signature version {signature.version} is not supported", code="unsupported"
        )
    algorithm = _VERIFY_HASHES.get(signature.hash_alg or "")
    if algorithm is None:
        raise ImaSignatureError(
            f"signature hash algorithm {signature.hash_alg or signature.hash_algo_id}",
            code="unsupported",
        )
    if signature.hash_alg != digest_alg or len(digest) != algorithm.digest_size:
        raise ImaSignatureError(
            f"signature is over a {signature.hash_alg} digest, the log holds {digest_alg}",
            code="algorithm_mismatch",
        )
    key = keys.get(signature.key_id)
    if key is None:
        raise ImaSignatureError(
            f"no trusted key has id {signature.key_id.hex()}", code="key_unknown"
        )
    try:
        if isinstance(key.public_key, rsa.RSAPublicKey):
            key.public_key.verify(
                signature.signature, digest, padding.PKCS1v15(), Prehashed(algorithm)
            )
        else:
            key.public_key.verify(signature.signature, digest, ec.ECDSA(Prehashed(algorithm)))
    except InvalidSignature:
        # Compared by type, never by message (InvalidSignature's is empty).
        raise ImaSignatureError(
            f"signature by key {signature.key_id.hex()} does not verify", code="invalid"
        ) from None
    return key
