"""OCSP revocation for NVIDIA device and RIM signing chains, without the network.

Responses arrive with the evidence or from :mod:`.ocsp_cache`; nothing here
fetches. :func:`check_ocsp` authenticates one DER response (RFC 6960) and raises
on the first failure; the certificate status it proves (good, revoked,
unknown) comes back as data, since "revoked" is an authenticated finding, not a
broken response. :func:`verifier.evidence.nvidia.ocsp_chain.check_chain_ocsp` runs it for every
non-root certificate of a verified path and reports every problem.

Who may sign (RFC 6960 4.2.2.2): the issuer itself; a responder certificate the
issuer issued with id-kp-OCSPSigning (a "delegated responder"); or a responder
certificate with that EKU which chains to a root the operator configured as a
responder authority (``trusted_responder_roots``, the "local configuration" of
4.2.2.2 item 1: the case of a vendor service whose responder hangs under the
vendor root rather than under each issuing CA).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from verifier.verdict import Reason, VerificationError

# NVIDIA's responses carry one responder certificate and weigh about 2 KiB; the
# bound caps what an untrusted blob in the evidence can make us parse.
MAX_RESPONSE_BYTES = 64 * 1024
# Responder certificates carried in one response we are willing to walk
# (RFC 6960 4.2.1 `certs`): a responder, at most a few intermediates.
MAX_RESPONDER_PATH = 4
# Clocks of the responder and of the verifier may differ a little; applied to
# thisUpdate only, so a response is never honoured past its nextUpdate by it.
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)

MALFORMED = "nvidia.ocsp.malformed"
MISSING = "nvidia.ocsp.missing"
NOT_CHECKED = "nvidia.ocsp.not_checked"
STALE_ACCEPTED = "nvidia.ocsp.stale_accepted"
REVOKED = "nvidia.ocsp.revoked"
UNKNOWN = "nvidia.ocsp.unknown"
# Reasons that lower a verdict to "warning" instead of failing it; every other
# code from this module is a failure.
WARNING_CODES = frozenset({NOT_CHECKED, STALE_ACCEPTED})

_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_HASHES: tuple[type[hashes.HashAlgorithm], ...] = (hashes.SHA256, hashes.SHA384, hashes.SHA512)
_MIN_RSA_BITS = 2048


class CertStatus(enum.Enum):
    GOOD = "good"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class OcspStatus:
    """What an authenticated, fresh-enough response says about one certificate."""

    status: CertStatus
    serial: int
    this_update: datetime
    next_update: datetime | None
    revocation_time: datetime | None
    revocation_reason: x509.ReasonFlags | None
    warnings: tuple[Reason, ...]

    def problems(self) -> tuple[Reason, ...]:
        """Failure reasons: revoked (with time and reason) and unknown; good has none."""
        if self.status is CertStatus.REVOKED:
            why = self.revocation_reason.name if self.revocation_reason else "unspecified"
            return (
                Reason(REVOKED, f"serial {self.serial:x} revoked {self.revocation_time}: {why}"),
            )
        if self.status is CertStatus.UNKNOWN:
            # RFC 6960 2.2: "unknown" means the responder knows nothing of it; not good.
            return (Reason(UNKNOWN, f"responder does not know serial {self.serial:x}"),)
        return ()


@dataclass(frozen=True, slots=True)
class OcspPolicy:
    """How chains are checked; validated once, then passed explicitly."""

    max_age: timedelta
    required: bool = True
    stale_grace: timedelta = timedelta(0)
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW
    trusted_responder_roots: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_age", "stale_grace", "clock_skew"):
            if getattr(self, name) < timedelta(0):
                raise ValueError(f"OCSP policy {name} must not be negative")
        if self.max_age == timedelta(0):
            raise ValueError("OCSP policy max_age must be positive")


def _fail(code: str, detail: str) -> VerificationError:
    return VerificationError(Reason(f"nvidia.ocsp.{code}", detail), ())


def certificate_name(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def _key_id(certificate: x509.Certificate) -> bytes:
    # RFC 6960 4.2.1 ResponderID byKey: SHA-1 of the subjectPublicKey BIT STRING,
    # which is what RFC 5280's key identifier method 1 computes.
    return x509.SubjectKeyIdentifier.from_public_key(certificate.public_key()).digest


def _cert_id(
    certificate: x509.Certificate, issuer: x509.Certificate, algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bytes]:
    # pyca computes CertID (RFC 6960 4.1.1: hash of the issuer name DER and of the
    # issuer key BIT STRING) when it builds a request, with whatever hash we ask.
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, algorithm).build()
    return request.issuer_name_hash, request.issuer_key_hash


def _answer(
    response: ocsp.OCSPResponse, certificate: x509.Certificate, issuer: x509.Certificate
) -> ocsp.OCSPSingleResponse:
    """The SingleResponse whose CertID is exactly ``certificate`` under ``issuer``."""
    serial_seen = False
    for single in response.responses:
        if single.serial_number != certificate.serial_number:
            continue
        serial_seen = True
        try:
            algorithm = single.hash_algorithm
            expected = _cert_id(certificate, issuer, algorithm)
        except (UnsupportedAlgorithm, ValueError):
            continue
        if (single.issuer_name_hash, single.issuer_key_hash) == expected:
            return single
    if serial_seen:
        raise _fail(
            "wrong_issuer", f"answers for serial {certificate.serial_number:x} of another CA"
        )
    raise _fail("wrong_certificate", f"no answer for serial {certificate.serial_number:x}")


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
) -> bool:
    """``signer`` reaches a configured root through carried CAs valid at ``at``."""
    current = signer
    for _ in range(MAX_RESPONDER_PATH):
        if any(_issued(current, root) for root in roots):
            return True
        parents = [c for c in carried if c is not current and _issued(current, c)]
        if not parents:
            return False
        current = parents[0]
        if not _valid_at(current, at):
            return False
        try:
            constraints = current.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            return False
        if not constraints.ca:
            return False
    return False


def _signer(
    response: ocsp.OCSPResponse,
    issuer: x509.Certificate,
    at: datetime,
    trusted_roots: Sequence[x509.Certificate],
) -> x509.Certificate:
    """The certificate whose key must have signed: named by ResponderID, then authorised."""
    carried = list(response.certificates)[:MAX_RESPONDER_PATH]
    key_id, by_name = response.responder_key_hash, response.responder_name
    named = [
        c
        for c in (issuer, *carried)
        if (key_id is not None and _key_id(c) == key_id) or (by_name == c.subject)
    ]
    if not named:
        raise _fail("responder_unknown", "ResponderID names neither the issuer nor a carried cert")
    signer = named[0]
    if _key_id(signer) == _key_id(issuer):
        return issuer  # RFC 6960 4.2.2.2 item 2: the CA signs for its own certificates.
    if not _signs_ocsp(signer):
        # Without the EKU a certificate from the same CA (a TLS server, another
        # device) could vouch for its siblings (RFC 6960 4.2.2.2 item 3).
        raise _fail("responder_unauthorized", f"{certificate_name(signer)} lacks id-kp-OCSPSigning")
    if not (_issued(signer, issuer) or _chains_to(signer, carried, trusted_roots, at)):
        raise _fail(
            "responder_unauthorized", f"{certificate_name(signer)} is not authorised by the issuer"
        )
    if not _valid_at(signer, at):
        raise _fail("responder_expired", f"{certificate_name(signer)} is not valid at {at}")
    return signer


def _check_signature(response: ocsp.OCSPResponse, signer: x509.Certificate) -> None:
    key, algorithm = signer.public_key(), response.signature_hash_algorithm
    if not isinstance(algorithm, _HASHES):
        raise _fail("algorithm_unsupported", "response is not signed with SHA-2")
    try:
        # Over the exact tbsResponseData bytes received (RFC 6960 4.2.1), never a re-encoding.
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _CURVES):
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, rsa.RSAPublicKey) and key.key_size >= _MIN_RSA_BITS:
            key.verify(
                response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm
            )
        else:
            raise _fail(
                "algorithm_unsupported", f"{certificate_name(signer)} key is not EC or RSA-2048+"
            )
    except InvalidSignature:
        raise _fail(
            "signature_invalid", f"response not signed by {certificate_name(signer)}"
        ) from None


def _check_nonce(response: ocsp.OCSPResponse, nonce: bytes) -> None:
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        raise _fail("nonce_mismatch", "response carries no nonce (RFC 6960 4.4.1)") from None
    if echoed != nonce:
        raise _fail("nonce_mismatch", "response nonce differs from the request's")


def check_ocsp(
    response_der: bytes,
    *,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    at: datetime,
    max_age: timedelta,
    trusted_responder_roots: Sequence[x509.Certificate] = (),
    nonce: bytes | None = None,
    stale_grace: timedelta = timedelta(0),
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> OcspStatus:
    """Authenticate one OCSP response for ``certificate`` issued by ``issuer``.

    ``issuer`` must already be authenticated (the chain verified). Checks, in
    order; the first failure raises VerificationError with ``nvidia.ocsp.<code>``:

    1. at most MAX_RESPONSE_BYTES, parses as an OCSPResponse (``malformed``);
    2. responseStatus is successful (``unsuccessful``, RFC 6960 2.3);
    3. a SingleResponse's CertID is this certificate: serial, issuer name hash and
       issuer key hash, recomputed with the response's own hash algorithm
       (``wrong_issuer``, ``wrong_certificate``; RFC 6960 4.1.1);
    4. the ResponderID names the issuer or a carried certificate
       (``responder_unknown``), which is the issuer, or holds id-kp-OCSPSigning
       and is issued by the issuer or chains to ``trusted_responder_roots``
       (``responder_unauthorized``), and is valid at ``at`` (``responder_expired``);
       RFC 6960 4.2.2.2;
    5. the signature over tbsResponseData (``signature_invalid``,
       ``algorithm_unsupported``);
    6. when ``nonce`` is given, the response echoes it (``nonce_mismatch``);
    7. freshness (RFC 6960 4.2.2.1): thisUpdate <= at + clock_skew
       (``not_yet_valid``); at <= nextUpdate, or without nextUpdate thisUpdate
       no older than ``max_age`` (``expired``); up to ``stale_grace`` past that
       is accepted with a ``stale_accepted`` warning in the result.

    The status (good / revoked / unknown) is returned; see OcspStatus.problems.
    """
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    if certificate.issuer != issuer.subject:
        raise ValueError(
            f"{certificate_name(issuer)} is not the issuer of {certificate_name(certificate)}"
        )
    if len(response_der) > MAX_RESPONSE_BYTES:
        raise _fail("malformed", f"response over {MAX_RESPONSE_BYTES} bytes")
    try:
        response = ocsp.load_der_ocsp_response(response_der)
    except ValueError as exc:
        raise _fail("malformed", f"response does not parse: {exc}") from None
    if response.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise _fail("unsuccessful", f"responder answered {response.response_status.name}")
    try:
        single = _answer(response, certificate, issuer)
        signer = _signer(response, issuer, at, trusted_responder_roots)
        _check_signature(response, signer)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # A field pyca can only decode lazily (an odd algorithm, a bad extension, a
        # Name attribute whose value type its OID forbids: TypeError).
        raise _fail("malformed", f"response field does not decode: {exc}") from None
    if nonce is not None:
        _check_nonce(response, nonce)

    this_update, next_update = single.this_update_utc, single.next_update_utc
    if this_update > at + clock_skew:
        raise _fail("not_yet_valid", f"thisUpdate {this_update} is after {at}")
    if next_update is not None and next_update < this_update:
        raise _fail("malformed", "nextUpdate precedes thisUpdate")
    # Without nextUpdate the responder promises nothing (RFC 6960 4.2.2.1), so
    # the policy's own maximum age bounds how long we believe it.
    good_until = next_update if next_update is not None else this_update + max_age
    warnings: tuple[Reason, ...] = ()
    if at > good_until:
        late = at - good_until
        if late > stale_grace:
            raise _fail("expired", f"response stale since {good_until} ({late} > grace)")
        warnings = (Reason(STALE_ACCEPTED, f"response stale since {good_until}, within grace"),)

    kind = {
        ocsp.OCSPCertStatus.GOOD: CertStatus.GOOD,
        ocsp.OCSPCertStatus.REVOKED: CertStatus.REVOKED,
    }.get(single.certificate_status, CertStatus.UNKNOWN)
    return OcspStatus(
        status=kind,
        serial=certificate.serial_number,
        this_update=this_update,
        next_update=next_update,
        revocation_time=single.revocation_time_utc,
        revocation_reason=single.revocation_reason,
        warnings=warnings,
    )
