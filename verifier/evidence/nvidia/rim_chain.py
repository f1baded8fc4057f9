"""The signing chain of an NVIDIA RIM: from the KeyInfo leaf to a pinned RIM root.

The RIM carries its chain (L4 signer, L3, CA, usually the root too) in
``ds:KeyInfo/ds:X509Data``. Those certificates are untrusted input: they may only
serve as the leaf and as candidate intermediates. The path must end at one of
the pinned roots, compared as whole certificates (SHA-256 fingerprint), and the
copy of the root inside the RIM is never used as an anchor.

cryptography's ``x509.verification`` is built for Web PKI server certificates
(SAN, EKU serverAuth), which code-signing leaves like NVIDIA's do not have, so the
path is walked here, as :mod:`verifier.x509chain` does for EK certificates; that
module only accepts intermediates from the trust store, while a RIM ships its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from verifier.evidence.errors import ParseError
from verifier.evidence.nvidia.chain import decode_fields
from verifier.verdict import Reason, VerificationError

__all__ = [
    "MAX_KEYINFO_CERTIFICATES",
    "NVIDIA_RIM_ROOT_SHA256",
    "SigningPath",
    "verify_signing_chain",
]

# SHA-256 fingerprint of "CN=NVIDIA CoRIM signing Root CA, O=NVIDIA, C=US"
# (2023-03-16..2053-03-08), the root NVIDIA's verifier pins for RIMs. Callers that
# load the root from a trust directory check it against this value.
NVIDIA_RIM_ROOT_SHA256 = "12977b5115acb0381179279fffeb5a8c4d264971ebb32298023a465fa41df5d1"

# NVIDIA ships 4 certificates (L4, L3, CA, root); more than 8 means a hostile or
# broken RIM, and bounds the signature checks spent on one untrusted file.
MAX_KEYINFO_CERTIFICATES = 8


class SigningPath:
    """A verified path leaf → pinned root; built only inside this module."""

    __slots__ = ("certificates",)

    def __init__(self, certificates: tuple[x509.Certificate, ...]) -> None:
        self.certificates = certificates

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def not_after(self) -> datetime:
        """Until when every certificate of the path is valid."""
        return min(c.not_valid_after_utc for c in self.certificates)


def _fail(code: str, detail: str, done: Sequence[str]) -> VerificationError:
    return VerificationError(Reason(code, detail), done)


def _fingerprint(certificate: x509.Certificate) -> bytes:
    return certificate.fingerprint(hashes.SHA256())


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return constraints.value.ca


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    if child.issuer != issuer.subject or not _is_ca(issuer):
        return False
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _load(ders: Sequence[bytes], done: Sequence[str]) -> list[x509.Certificate]:
    if not ders:
        raise _fail("nvidia.rim.chain_untrusted", "no X509Certificate in KeyInfo", done)
    if len(ders) > MAX_KEYINFO_CERTIFICATES:
        raise _fail("nvidia.rim.malformed", f"{len(ders)} certificates in KeyInfo", done)
    try:
        certificates = [x509.load_der_x509_certificate(der) for der in ders]
        for certificate in certificates:
            decode_fields(certificate)  # pyca decodes names and extensions lazily
    # InvalidVersion (an X.509 version other than v1/v3) is not a ValueError.
    except (ValueError, x509.InvalidVersion, ParseError) as exc:
        raise _fail("nvidia.rim.malformed", f"bad KeyInfo certificate: {exc}", done) from None
    return certificates


def verify_signing_chain(
    keyinfo_ders: Sequence[bytes],
    *,
    pinned_roots: Sequence[x509.Certificate],
    at: datetime,
    done: Sequence[str] = (),
) -> SigningPath:
    """The path from the first KeyInfo certificate (the signer) to a pinned root.

    Checks, in order: the certificates parse; each link is signed by a CA whose
    subject is the child's issuer (pinned roots are tried before the RIM's own
    certificates); the path ends at a pinned root (``nvidia.rim.chain_untrusted``);
    every certificate on the path is valid at ``at`` (``nvidia.rim.expired``); the
    signer key is ECDSA P-384, the only kind NVIDIA signs RIMs with.
    """
    if at.tzinfo is None:
        raise ValueError("at must be timezone-aware")
    if not pinned_roots:
        raise ValueError("no pinned RIM root configured")
    certificates = _load(keyinfo_ders, done)
    anchors = {_fingerprint(root): root for root in pinned_roots}
    # Pinned roots first: a certificate in the RIM that merely copies a root's name
    # must never stand in for it.
    candidates = [*pinned_roots, *certificates[1:]]
    path = [certificates[0]]
    while _fingerprint(path[-1]) not in anchors:
        if len(path) > MAX_KEYINFO_CERTIFICATES:
            raise _fail("nvidia.rim.chain_untrusted", "signing chain too long", done)
        current = path[-1]
        issuer = next(
            (c for c in candidates if c not in path and _issued_by(current, c)),
            None,
        )
        if issuer is None:
            raise _fail(
                "nvidia.rim.chain_untrusted",
                f"no trusted issuer for {current.issuer.rfc4514_string()!r}",
                done,
            )
        path.append(issuer)
    # Validity is checked once the path is known, so that an untrusted chain is
    # reported as untrusted even when it has also expired.
    for certificate in path:
        if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
            raise _fail(
                "nvidia.rim.expired",
                f"{certificate.subject.rfc4514_string()!r} is not valid at {at.isoformat()} "
                f"({certificate.not_valid_before_utc.isoformat()}.."
                f"{certificate.not_valid_after_utc.isoformat()})",
                done,
            )
    key = path[0].public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise _fail("nvidia.rim.signature_invalid", "RIM signer key is not ECDSA P-384", done)
    return SigningPath(tuple(path))
