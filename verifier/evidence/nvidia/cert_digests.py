"""Digests of a certificate that OCSP needs again and again, computed once per certificate.

OCSP lookups name an issuer by the SHA-256 of its SubjectPublicKeyInfo and a
responder by the SHA-1 key identifier of its key (RFC 6960 4.2.1 byKey). Both
need the key re-encoded (``public_bytes``), and the same few intermediates come
up for every GPU of every round. Both are pure functions of the certificate's
exact DER bytes, so they are remembered under the SHA-256 of those bytes (never
under the Python object or a name): another certificate, however alike, has
another DER digest and gets its own computation.
"""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from verifier.evidence.lru import BoundedLru

__all__ = ["der_sha256", "key_id", "spki_sha256"]

_SHA256 = hashes.SHA256()
# Certificates whose digests are remembered, least recently used out. A host
# round touches about 12 (8 leaves and BROMs share 4 CAs with the RIM chains);
# 4096 covers several hundred devices between evictions at about 200 bytes an
# entry, and a miss only costs the computation again.
_MAX_ENTRIES = 4096
_DIGESTS: BoundedLru[bytes, tuple[bytes, bytes]] = BoundedLru(_MAX_ENTRIES)


def der_sha256(certificate: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's exact DER encoding (its fingerprint)."""
    return certificate.fingerprint(_SHA256)


def _digests(certificate: x509.Certificate) -> tuple[bytes, bytes]:
    der = der_sha256(certificate)
    found = _DIGESTS.get(der)
    if found is not None:
        return found
    key = certificate.public_key()
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # RFC 6960 4.2.1 ResponderID byKey: SHA-1 of the subjectPublicKey BIT STRING,
    # which is what RFC 5280's key identifier method 1 computes.
    computed = (
        hashlib.sha256(spki).digest(),
        x509.SubjectKeyIdentifier.from_public_key(key).digest,
    )
    _DIGESTS.put(der, computed)
    return computed


def spki_sha256(certificate: x509.Certificate) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo."""
    return _digests(certificate)[0]


def key_id(certificate: x509.Certificate) -> bytes:
    """SHA-1 key identifier of the certificate's key (RFC 5280 4.2.1.2 method 1)."""
    return _digests(certificate)[1]
