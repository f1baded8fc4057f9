"""Certificate path validation to pinned roots, for EK certificates.

cryptography's x509.verification targets Web PKI server certificates and
rejects TPM EK certificates (critical SAN of directoryName form, no subject),
so the path is walked here: each link is a signature check by the next
certificate's key, that certificate must be a CA, every certificate must be
valid at the given time, and the path must end at a configured root (compared
as whole certificates, never by name alone).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes

# Manufacturer EK chains are 2-4 certificates deep; a longer path means a
# misconfigured or hostile input, and bounds the work per enrollment.
MAX_CHAIN_DEPTH = 6


class ChainError(Exception):
    """The certificate does not chain to a trusted root; the message says why."""


def load_pem_certificates(paths: Iterable[Path]) -> list[x509.Certificate]:
    certificates: list[x509.Certificate] = []
    for path in paths:
        certificates.extend(x509.load_pem_x509_certificates(path.read_bytes()))
    return certificates


def _is_self_signed(certificate: x509.Certificate) -> bool:
    if certificate.issuer != certificate.subject:
        return False
    try:
        certificate.verify_directly_issued_by(certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _fingerprint(certificate: x509.Certificate) -> bytes:
    return certificate.fingerprint(hashes.SHA256())


def verify_chain(
    leaf: x509.Certificate,
    *,
    trusted: Sequence[x509.Certificate],
    at: datetime,
) -> list[x509.Certificate]:
    """Return the path leaf → root, or raise ChainError.

    `trusted` holds the configured CA certificates: the self-signed ones are the
    roots, the rest may serve as intermediates. Nothing from the evidence other
    than the leaf is ever used.
    """
    roots = {_fingerprint(c) for c in trusted if _is_self_signed(c)}
    if not roots:
        raise ChainError("no self-signed root among the configured CA certificates")
    path = [leaf]
    current = leaf
    while len(path) <= MAX_CHAIN_DEPTH:
        if not current.not_valid_before_utc <= at <= current.not_valid_after_utc:
            raise ChainError(f"certificate {current.subject.rfc4514_string()!r} is not valid now")
        if _fingerprint(current) in roots:
            return path
        issuer = _find_issuer(current, trusted)
        if issuer is None:
            raise ChainError(
                f"no trusted issuer for {current.issuer.rfc4514_string() or '(empty name)'!r}"
            )
        path.append(issuer)
        current = issuer
    raise ChainError(f"chain longer than {MAX_CHAIN_DEPTH} certificates")


def _find_issuer(
    certificate: x509.Certificate, candidates: Sequence[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != certificate.issuer or not _is_ca(candidate):
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None
