"""Intel SGX PKI: chains to the pinned Intel SGX Root CA, and CRLs.

Two chains end at the root: the PCK chain in the quote (PCK leaf -> Intel SGX
PCK Platform or Processor CA -> root) and the collateral signing chain (Intel
SGX TCB Signing -> root). A chain's own copy of the root is never trusted: every
self-issued certificate it carries is dropped and the top certificate must be
signed by the pinned root's key (STYLE.md, "Verifying evidence" 7). A look-alike
root with the same subject DN ("Intel SGX Root CA") but another key, as in
Intel's QVL test data, therefore fails as ``untrusted``.

The root is pinned by SHA-256 of its SubjectPublicKeyInfo (as NVIDIA's is in
``nvidia/chain.py``): Intel can re-issue the root certificate with a new
validity under the same key without the pin going stale.

Each check raises :class:`VerificationError` with a named reason; ``prefix``
namespaces it (``tdx.pck`` for the PCK chain, ``tdx.collateral.signer`` for the
TCB signing chain).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Collection, Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.evidence.errors import ParseError
from verifier.verdict import Reason, VerificationError

__all__ = [
    "INTEL_ROOT_PINS",
    "INTEL_SGX_ROOT_CA_SPKI_SHA256",
    "check_crl",
    "check_pinned_root",
    "load_crl",
    "parse_pem_certificates",
    "spki_sha256",
    "verify_chain",
]

# Intel SGX Root CA (CN=Intel SGX Root CA, O=Intel Corporation; ECDSA P-256,
# valid 2018-05-21..2049-12-31; certificate SHA-256 44a0196b2b99f889b8e149e95b807a35
# 0e7424964399e885a7cbb8ccfab674d3): SHA-256 of its SubjectPublicKeyInfo.
INTEL_SGX_ROOT_CA_SPKI_SHA256 = bytes.fromhex(
    "a0af031289f5d5d4132f9186068a7fc13628633ba235777472e29b6b6c67a49e"
)

# Intel's chains are 3 certificates (leaf, CA, root) or 2 (TCB Signing, root);
# 4 leaves room for one more level while bounding signature work.
MAX_CHAIN_CERTS = 4
MAX_CHAIN_PEM_BYTES = 32 * 1024
# A PCK CRL lists revoked PCK certificates of one CA: the vector's has 44 entries
# in 2.6 KB. 1 MiB bounds a hostile CRL at tens of thousands of entries.
MAX_CRL_BYTES = 1024 * 1024

_FIELD_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension)


def spki_sha256(certificate: x509.Certificate) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo: the value roots are pinned by."""
    der = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).digest()


def _name(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def parse_pem_certificates(pem: bytes) -> list[x509.Certificate]:
    """Certificates of a concatenated PEM chain; ParseError only."""
    if len(pem) > MAX_CHAIN_PEM_BYTES:
        raise ParseError("certificate chain too large", code="too_large")
    if pem.count(b"-----BEGIN CERTIFICATE-----") > MAX_CHAIN_CERTS:
        raise ParseError(f"chain over {MAX_CHAIN_CERTS} certificates", code="too_large")
    try:
        certificates = x509.load_pem_x509_certificates(pem)
        for certificate in certificates:
            _ = (certificate.subject, certificate.issuer, certificate.extensions)
            _ = (certificate.public_key(), certificate.signature_hash_algorithm)
            _ = (certificate.not_valid_before_utc, certificate.not_valid_after_utc)
    except (*_FIELD_ERRORS, x509.InvalidVersion) as exc:
        raise ParseError(f"certificate chain does not parse: {exc}") from None
    return certificates


# The default trust: Intel's root only. A test root (a simulator's) is trusted only
# where a caller passes its pin explicitly, from an explicitly named test setting.
INTEL_ROOT_PINS: frozenset[bytes] = frozenset({INTEL_SGX_ROOT_CA_SPKI_SHA256})


def check_pinned_root(
    root: x509.Certificate, *, spki_pins: Collection[bytes] = INTEL_ROOT_PINS
) -> None:
    """Raise ValueError (a setup error) unless ``root`` is pinned by SPKI SHA-256."""
    if spki_sha256(root) not in spki_pins:
        raise ValueError(f"root {_name(root)} is not a pinned Intel SGX Root CA")


def _fail(prefix: str, code: str, detail: str) -> VerificationError:
    return VerificationError(Reason(f"{prefix}.{code}", detail), ())


def _check_link(child: x509.Certificate, issuer: x509.Certificate, prefix: str) -> None:
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise _fail(prefix, "chain_invalid", f"{_name(issuer)} key is not ECDSA P-256")
    if not isinstance(child.signature_hash_algorithm, hashes.SHA256):
        raise _fail(prefix, "chain_invalid", f"{_name(child)} is not signed with SHA-256")
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise _fail(
            prefix, "chain_invalid", f"{_name(issuer)} did not sign {_name(child)}"
        ) from None


def _check_ca(certificate: x509.Certificate, prefix: str) -> None:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise _fail(prefix, "chain_invalid", f"{_name(certificate)} is not a CA")


def verify_chain(
    certificates: Sequence[x509.Certificate],
    *,
    root: x509.Certificate,
    at: datetime,
    prefix: str,
    spki_pins: Collection[bytes] = INTEL_ROOT_PINS,
) -> tuple[x509.Certificate, ...]:
    """Verify ``certificates`` (leaf first, as sent) to the pinned ``root`` at ``at``.

    Checks, in order: ``at`` is timezone-aware and ``root`` is pinned (ValueError);
    a self-issued certificate is allowed only last (a copy of the root sent along,
    never trusted: the pinned one is used) — anywhere else it is
    ``<prefix>.chain_invalid``, so the first certificate sent is always the leaf of
    the verified path; then 1..3 remain, each issued by the next (``chain_invalid``);
    each link's ECDSA P-256 / SHA-256 signature (``chain_invalid``); the top one is
    signed by the pinned root's key (``chain_untrusted``); every certificate and the
    root are valid at ``at`` (``expired``, ``not_yet_valid``); issuers are CAs
    (``chain_invalid``).
    Returns the path leaf -> pinned root.
    """
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    check_pinned_root(root, spki_pins=spki_pins)
    path = list(certificates)
    if path and path[-1].subject == path[-1].issuer:
        path.pop()  # the root as sent: ignored, never an anchor
    # Dropping self-issued certificates from anywhere would let one be sent first
    # and stand as "the leaf" for a caller, unverified, while the rest verifies.
    if any(c.subject == c.issuer for c in path):
        raise _fail(prefix, "chain_invalid", "a self-issued certificate inside the chain")
    if not 1 <= len(path) < MAX_CHAIN_CERTS:
        raise _fail(prefix, "chain_invalid", f"{len(path)} non-root certificates in the chain")
    for child, issuer in itertools.pairwise(path):
        if child.issuer != issuer.subject:
            raise _fail(prefix, "chain_invalid", f"{_name(child)} not issued by the next one")
        _check_link(child, issuer, prefix)
    top = path[-1]
    if top.issuer != root.subject:
        raise _fail(prefix, "chain_untrusted", f"{_name(top)} is not issued by the pinned root")
    try:
        _check_link(top, root, prefix)
    except VerificationError:
        raise _fail(
            prefix, "chain_untrusted", f"{_name(top)}: the pinned root's key did not sign it"
        ) from None
    full = (*path, root)
    for certificate in full:
        if at < certificate.not_valid_before_utc:
            raise _fail(
                prefix,
                "not_yet_valid",
                f"{_name(certificate)} valid from {certificate.not_valid_before_utc:%Y-%m-%d}",
            )
        if at > certificate.not_valid_after_utc:
            raise _fail(
                prefix,
                "expired",
                f"{_name(certificate)} expired {certificate.not_valid_after_utc:%Y-%m-%d}",
            )
    for certificate in full[1:]:
        _check_ca(certificate, prefix)
    return full


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL in DER or PEM; ParseError only."""
    if len(data) > MAX_CRL_BYTES:
        raise ParseError("CRL too large", code="too_large")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
        _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, crl.extensions)
        _ = (crl.signature_hash_algorithm, len(crl))
    except (*_FIELD_ERRORS, x509.InvalidVersion) as exc:
        raise ParseError(f"CRL does not parse: {exc}") from None
    return crl


def check_crl(
    crl: x509.CertificateRevocationList,
    *,
    issuer: x509.Certificate,
    covered: Sequence[x509.Certificate],
    at: datetime,
    what: str,
) -> list[Reason]:
    """Every problem with ``crl`` as the revocation list of ``issuer`` at ``at``.

    Checks: the CRL names ``issuer`` and is signed by its key
    (``tdx.crl.issuer_mismatch``, ``tdx.crl.signature_invalid``); it is fresh:
    ``lastUpdate <= at <= nextUpdate`` (``tdx.crl.not_yet_valid``,
    ``tdx.crl.expired``); no certificate in ``covered`` (those ``issuer``
    issued) is listed (``tdx.crl.revoked``).
    """
    if crl.issuer != issuer.subject:
        return [
            Reason(
                "tdx.crl.issuer_mismatch",
                f"{what} CRL is issued by {crl.issuer.rfc4514_string()}, not {_name(issuer)}",
            )
        ]
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(key):
        return [Reason("tdx.crl.signature_invalid", f"{what} CRL is not signed by {_name(issuer)}")]
    reasons = []
    next_update = crl.next_update_utc
    if at < crl.last_update_utc:
        reasons.append(
            Reason("tdx.crl.not_yet_valid", f"{what} CRL issued {crl.last_update_utc:%Y-%m-%d}")
        )
    if next_update is None or at > next_update:
        shown = "never" if next_update is None else f"{next_update:%Y-%m-%d %H:%M}"
        reasons.append(Reason("tdx.crl.expired", f"{what} CRL next update {shown} is past"))
    for certificate in covered:
        if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
            reasons.append(
                Reason("tdx.crl.revoked", f"{_name(certificate)} is revoked by the {what} CRL")
            )
    return reasons
