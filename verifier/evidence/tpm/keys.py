"""TPM public areas as ``cryptography`` keys, TPM names, and the attestation-key policy.

The attestation key is checked, and turned into a ``cryptography`` key, on every
quote it signs. Both depend only on the enrolled key, a trusted input, so they are
memoised (bounded LRU) keyed by the whole :class:`TpmPublic` value -- its exact
TPMT_PUBLIC bytes and every field derived from them -- so that two values that
differ in anything never share an entry. Only successes are cached: a refused key
is checked afresh each time. :func:`attestation_public_key` returns the check and
the key from one lookup (the quote path); :func:`verification_key` returns the key
alone, unchecked. Nothing derived from per-quote (untrusted) bytes is cached, and
:func:`public_key`, which is also used on keys a host presents (binding keys), is
not cached either.
"""

from __future__ import annotations

import enum
import functools

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from verifier.evidence.tpm.parse import TpmPublic
from verifier.verdict import Reason, VerificationError

__all__ = [
    "PublicKey",
    "TpmaObject",
    "attestation_public_key",
    "check_attestation_key",
    "public_key",
    "tpm_name",
    "verification_key",
]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# Enrolled AKs whose check result and key object are kept; one verifier serves a
# fleet, but a quote burst comes from far fewer AKs than this.
AK_CACHE_SIZE = 1024


class TpmaObject(enum.IntFlag):
    """TPMA_OBJECT bits (TPM 2.0 Library, Part 2, 8.3)."""

    FIXED_TPM = 0x00000002
    ST_CLEAR = 0x00000004
    FIXED_PARENT = 0x00000010
    SENSITIVE_DATA_ORIGIN = 0x00000020
    USER_WITH_AUTH = 0x00000040
    ADMIN_WITH_POLICY = 0x00000080
    NO_DA = 0x00000400
    ENCRYPTED_DUPLICATION = 0x00000800
    RESTRICTED = 0x00010000
    DECRYPT = 0x00020000
    SIGN_ENCRYPT = 0x00040000


_CURVES: dict[str, ec.EllipticCurve] = {
    "p256": ec.SECP256R1(),
    "p384": ec.SECP384R1(),
    "p521": ec.SECP521R1(),
}

# RSA below 2048 bits is below NIST SP 800-57's 112-bit floor.
MIN_RSA_BITS = 2048
# SHA-1 names allow collisions between distinct public areas, i.e. two keys with
# one name: the name is what binds the AK to its credential activation.
STRONG_NAME_ALGORITHMS = frozenset({"sha256", "sha384", "sha512"})

_RESTRICTED_SIGNING = TpmaObject.RESTRICTED | TpmaObject.SIGN_ENCRYPT
# A key that could leave the TPM, or whose secret was imported, proves nothing
# about the TPM that holds it.
_TPM_RESIDENT = TpmaObject.FIXED_TPM | TpmaObject.FIXED_PARENT | TpmaObject.SENSITIVE_DATA_ORIGIN
_SIGNING_SCHEMES = {"rsa": frozenset({"rsassa", "rsapss"}), "ecc": frozenset({"ecdsa"})}


def public_key(pub: TpmPublic) -> PublicKey:
    """The ``cryptography`` public key of an RSA or ECC TPM public area.

    Raises ValueError if the key material is not a valid key (e.g. an ECC point not
    on its curve, an even RSA exponent).
    """
    if pub.key_type == "rsa":
        if pub.rsa_modulus is None or pub.rsa_exponent is None:
            raise ValueError("RSA public area without modulus or exponent")
        # TPM 2.0 Part 2, 12.2.3.5: exponent 0 means the default, 2^16 + 1.
        exponent = pub.rsa_exponent or 65537
        modulus = int.from_bytes(pub.rsa_modulus, "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    if pub.key_type == "ecc":
        if pub.ecc_curve not in _CURVES or pub.ecc_x is None or pub.ecc_y is None:
            raise ValueError(f"unsupported ECC public area (curve {pub.ecc_curve})")
        x = int.from_bytes(pub.ecc_x, "big")
        y = int.from_bytes(pub.ecc_y, "big")
        # public_key() checks that the point is on the curve.
        return ec.EllipticCurvePublicNumbers(x, y, _CURVES[pub.ecc_curve]).public_key()
    raise ValueError(f"unsupported key type {pub.key_type}")


@functools.lru_cache(maxsize=AK_CACHE_SIZE)
def _cached_public_key(pub: TpmPublic) -> PublicKey:
    return public_key(pub)


def verification_key(pub: TpmPublic) -> PublicKey:
    """:func:`public_key` of an attestation key (trusted: enrolled), memoised.

    For keys that ``check_attestation_key`` accepted: the signing key of quotes,
    certifications and receipts. Do not use it on keys taken from evidence.
    """
    try:
        return _cached_public_key(pub)
    except TypeError:
        # Unhashable (a field built from a bytearray, say): not cacheable, and a
        # TypeError from public_key() itself is raised again here.
        return public_key(pub)


def tpm_name(pub: TpmPublic) -> bytes:
    """TPM name of the object: nameAlg (2 bytes, big-endian) || H_nameAlg(TPMT_PUBLIC).

    Computed over the public area exactly as received, because that is what the
    TPM hashed (Part 1, 16).
    """
    return pub.name


def check_attestation_key(pub: TpmPublic) -> None:
    """Raise VerificationError unless ``pub`` is acceptable as an attestation key.

    Acceptance is memoised per :class:`TpmPublic` value (see the module docstring).

    Checks, in order:

    1. restricted and sign set, decrypt clear (``enrollment.ak_not_restricted_signing``):
       only a restricted signing key refuses to sign data that begins with
       TPM_GENERATED_VALUE, so only its quotes cannot be forged;
    2. fixedTPM, fixedParent, sensitiveDataOrigin set, and a fixed scheme (if any)
       that is a signing scheme for the key type (``enrollment.ak_attributes_invalid``);
    3. nameAlg SHA-256/384/512 (``enrollment.ak_weak_name_algorithm``);
    4. RSA of at least 2048 bits or ECC P-256/P-384/P-521 (``enrollment.ak_weak_key``);
    5. the key material is a valid public key (``enrollment.ak_invalid_key``).
    """
    attestation_public_key(pub)


def attestation_public_key(pub: TpmPublic) -> PublicKey:
    """:func:`check_attestation_key`, then the AK's ``cryptography`` key, in one
    memoised lookup (the per-quote path needs both: the check, then the key to
    verify the signature with). Raises as ``check_attestation_key`` does."""
    try:
        return _check_attestation_key_cached(pub)
    except TypeError:
        # Unhashable: check without the cache (a TypeError of the check itself is
        # raised again).
        return _check_attestation_key(pub)


def _check_attestation_key(pub: TpmPublic) -> PublicKey:
    attributes = TpmaObject(pub.attributes)
    if (attributes & _RESTRICTED_SIGNING) != _RESTRICTED_SIGNING or (
        attributes & TpmaObject.DECRYPT
    ):
        raise VerificationError(
            Reason(
                "enrollment.ak_not_restricted_signing",
                f"AK attributes 0x{pub.attributes:08x} are not restricted|sign without decrypt",
            )
        )
    missing = _TPM_RESIDENT & ~attributes
    if missing:
        raise VerificationError(
            Reason("enrollment.ak_attributes_invalid", f"AK lacks {missing.name}")
        )
    if pub.scheme is not None and pub.scheme not in _SIGNING_SCHEMES.get(pub.key_type, ()):
        raise VerificationError(
            Reason(
                "enrollment.ak_attributes_invalid",
                f"AK scheme {pub.scheme} is not a signing scheme for {pub.key_type}",
            )
        )
    if pub.name_algorithm not in STRONG_NAME_ALGORITHMS:
        raise VerificationError(
            Reason("enrollment.ak_weak_name_algorithm", f"AK nameAlg is {pub.name_algorithm}")
        )
    if pub.key_type == "rsa" and pub.key_bits < MIN_RSA_BITS:
        raise VerificationError(Reason("enrollment.ak_weak_key", f"RSA-{pub.key_bits} AK"))
    if pub.key_type == "ecc" and pub.ecc_curve not in _CURVES:
        raise VerificationError(Reason("enrollment.ak_weak_key", f"AK curve {pub.ecc_curve}"))
    try:
        return public_key(pub)
    except ValueError as exc:
        raise VerificationError(Reason("enrollment.ak_invalid_key", str(exc))) from exc


# Raises on refusal, and lru_cache does not keep exceptions: only acceptance (and the
# key object built while checking it) is cached.
_check_attestation_key_cached = functools.lru_cache(maxsize=AK_CACHE_SIZE)(_check_attestation_key)
