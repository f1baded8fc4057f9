"""Who may sign an OCSP response (RFC 6960 4.2.2.2), and the signature itself.

Split from :mod:`.ocsp` so that the responder rules read on their own. Besides
the signer, :func:`responder` returns every certificate whose validity it
checked at ``at``: the answer is the same at any other time inside all of their
validity periods (nothing else it checks depends on the time), which is what
:mod:`.ocsp_verified` relies on to reuse it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from verifier.evidence.nvidia.cert_digests import key_id
from verifier.verdict import Reason, VerificationError

__all__ = ["MAX_RESPONDER_PATH", "certificate_name", "check_signature", "fail", "responder"]

# Responder certificates carried in one response we are willing to walk
# (RFC 6960 4.2.1 `certs`): a responder, at most a few intermediates.
MAX_RESPONDER_PATH = 4

_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_HASHES: tuple[type[hashes.HashAlgorithm], ...] = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_MIN_RSA_BITS = 2048


def fail(code: str, detail: str) -> VerificationError:
    return VerificationError(Reason(f"nvidia.ocsp.{code}", detail), ())


def certificate_name(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def _valid_at(certificate: x509.Certificate, at: datetime) -> bool:
    return certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc


def _signs_ocsp(certificate: x509.Certificate) -> bool:
    try:
        usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in usages


def _issued(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _chains_to(
    signer: x509.Certificate,
    carried: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    at: datetime,
) -> tuple[x509.Certificate, ...] | None:
    """The carried CAs by which ``signer`` reaches a configured root, each valid at ``at``."""
    current, walked = signer, list[x509.Certificate]()
    for _ in range(MAX_RESPONDER_PATH):
        if any(_issued(current, root) for root in roots):
            return tuple(walked)
        parents = [c for c in carried if c is not current and _issued(current, c)]
        if not parents:
            return None
        current = parents[0]
        walked.append(current)
        if not _valid_at(current, at):
            return None
        try:
            constraints = current.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            return None
        if not constraints.ca:
            return None
    return None


def responder(
    response: ocsp.OCSPResponse,
    issuer: x509.Certificate,
    at: datetime,
    trusted_roots: Sequence[x509.Certificate],
) -> tuple[x509.Certificate, tuple[x509.Certificate, ...]]:
    """The certificate whose key must have signed: named by ResponderID, then authorised.

    Also the certificates whose validity at ``at`` this decided on (none when the
    issuer signs: its validity is the chain's business).
    """
    carried = list(response.certificates)[:MAX_RESPONDER_PATH]
    wanted, by_name = response.responder_key_hash, response.responder_name
    named = [
        c
        for c in (issuer, *carried)
        if (wanted is not None and key_id(c) == wanted) or (by_name == c.subject)
    ]
    if not named:
        raise fail("responder_unknown", "ResponderID names neither the issuer nor a carried cert")
    signer = named[0]
    if key_id(signer) == key_id(issuer):
        return issuer, ()  # RFC 6960 4.2.2.2 item 2: the CA signs for its own certificates.
    if not _signs_ocsp(signer):
        # Without the EKU a certificate from the same CA (a TLS server, another
        # device) could vouch for its siblings (RFC 6960 4.2.2.2 item 3).
        raise fail("responder_unauthorized", f"{certificate_name(signer)} lacks id-kp-OCSPSigning")
    walked = () if _issued(signer, issuer) else _chains_to(signer, carried, trusted_roots, at)
    if walked is None:
        raise fail(
            "responder_unauthorized", f"{certificate_name(signer)} is not authorised by the issuer"
        )
    if not _valid_at(signer, at):
        raise fail("responder_expired", f"{certificate_name(signer)} is not valid at {at}")
    return signer, (signer, *walked)


def check_signature(response: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    key, algorithm = signer.public_key(), response.signature_hash_algorithm
    if not isinstance(algorithm, _HASHES):
        raise fail("algorithm_unsupported", "response is not signed with SHA-2")
    try:
        # Over the exact tbsResponseData bytes received (RFC 6960 4.2.1), never a re-encoding.
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _CURVES):
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and key.key_size >= _MIN_RSA_BITS:
            key.verify(
                response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm
            )
        else:
            raise fail(
                "algorithm_unsupported", f"{certificate_name(signer)} key is not EC or RSA-2048+"
            )
    except InvalidSignature:
        raise fail(
            "signature_invalid", f"response not signed by {certificate_name(signer)}"
        ) from None
