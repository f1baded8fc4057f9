"""OCSP revocation for NVIDIA device and RIM signing chains, without the network.

Responses arrive with the evidence or from :mod:`.ocsp_cache`; nothing here
fetches. :func:`check_ocsp` authenticates one DER response (RFC 6960) and raises
on the first failure; the certificate status it proves (good, revoked,
unknown) comes back as data, since "revoked" is an authenticated finding, not a
broken response. :func:`verifier.evidence.nvidia.ocsp_chain.check_chain_ocsp` runs it for every
non-root certificate of a verified path and reports every problem. The check
is two halves: :func:`authenticate_response` (bytes, CertID, responder, signature)
and :func:`fresh_status` (time and policy), so that :mod:`.ocsp_verified` can
authenticate a response once and still judge its freshness at every use.

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
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

from verifier.evidence.nvidia.ocsp_responder import (
    MAX_RESPONDER_PATH,
    certificate_name,
    check_signature,
    responder,
)
from verifier.evidence.nvidia.ocsp_responder import fail as _fail
from verifier.verdict import Reason

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "MALFORMED",
    "MAX_RESPONDER_PATH",
    "MAX_RESPONSE_BYTES",
    "MISSING",
    "NOT_CHECKED",
    "REVOKED",
    "STALE_ACCEPTED",
    "UNKNOWN",
    "WARNING_CODES",
    "AuthenticatedResponse",
    "CertStatus",
    "OcspPolicy",
    "OcspStatus",
    "authenticate_response",
    "certificate_name",
    "check_inputs",
    "check_ocsp",
    "fresh_status",
]

# NVIDIA's responses carry one responder certificate and weigh about 2 KiB; the
# bound caps what an untrusted blob in the evidence can make us parse.
MAX_RESPONSE_BYTES = 64 * 1024
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


def _check_nonce(response: ocsp.OCSPResponse, nonce: bytes) -> None:
    try:
        echoed = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        raise _fail("nonce_mismatch", "response carries no nonce (RFC 6960 4.4.1)") from None
    if echoed != nonce:
        raise _fail("nonce_mismatch", "response nonce differs from the request's")


@dataclass(frozen=True, slots=True)
class AuthenticatedResponse:
    """What steps 1-6 of :func:`check_ocsp` proved about one response, before freshness.

    The same response bytes, certificate, issuer and responder roots give the
    same answer at any time in ``valid_from``..``valid_until`` (the validity of
    every responder certificate checked; None: no time entered the checks).
    Built only by :func:`authenticate_response`.
    """

    status: CertStatus
    serial: int
    this_update: datetime
    next_update: datetime | None
    revocation_time: datetime | None
    revocation_reason: x509.ReasonFlags | None
    valid_from: datetime | None
    valid_until: datetime | None

    def holds_at(self, at: datetime) -> bool:
        """Whether the time-dependent checks that passed would pass at ``at`` too."""
        return (self.valid_from is None or self.valid_from <= at) and (
            self.valid_until is None or at <= self.valid_until
        )


def check_inputs(certificate: x509.Certificate, issuer: x509.Certificate, at: datetime) -> None:
    """Caller mistakes, not evidence: ValueError (a naive ``at``, a mismatched issuer)."""
    if at.tzinfo is None:
        raise ValueError("`at` must be timezone-aware")
    if certificate.issuer != issuer.subject:
        raise ValueError(
            f"{certificate_name(issuer)} is not the issuer of {certificate_name(certificate)}"
        )


def authenticate_response(
    response_der: bytes,
    *,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    at: datetime,
    trusted_responder_roots: Sequence[x509.Certificate] = (),
    nonce: bytes | None = None,
) -> AuthenticatedResponse:
    """Steps 1-6 of :func:`check_ocsp` (everything but freshness), raising on the first failure."""
    check_inputs(certificate, issuer, at)
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
        signer, dated = responder(response, issuer, at, trusted_responder_roots)
        check_signature(response, signer)
        kind = {
            ocsp.OCSPCertStatus.GOOD: CertStatus.GOOD,
            ocsp.OCSPCertStatus.REVOKED: CertStatus.REVOKED,
        }.get(single.certificate_status, CertStatus.UNKNOWN)
        fields = (single.this_update_utc, single.next_update_utc)
        revoked = (single.revocation_time_utc, single.revocation_reason)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # A field pyca can only decode lazily (an odd algorithm, a bad extension, a
        # Name attribute whose value type its OID forbids: TypeError).
        raise _fail("malformed", f"response field does not decode: {exc}") from None
    if nonce is not None:
        _check_nonce(response, nonce)
    return AuthenticatedResponse(
        kind,
        certificate.serial_number,
        *fields,
        *revoked,
        max((c.not_valid_before_utc for c in dated), default=None),
        min((c.not_valid_after_utc for c in dated), default=None),
    )


def fresh_status(
    answer: AuthenticatedResponse,
    *,
    at: datetime,
    max_age: timedelta,
    stale_grace: timedelta = timedelta(0),
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> OcspStatus:
    """Step 7 of :func:`check_ocsp` on an authenticated response: freshness at ``at``."""
    this_update, next_update = answer.this_update, answer.next_update
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
    return OcspStatus(
        status=answer.status,
        serial=answer.serial,
        this_update=this_update,
        next_update=next_update,
        revocation_time=answer.revocation_time,
        revocation_reason=answer.revocation_reason,
        warnings=warnings,
    )


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
    answer = authenticate_response(
        response_der,
        certificate=certificate,
        issuer=issuer,
        at=at,
        trusted_responder_roots=trusted_responder_roots,
        nonce=nonce,
    )
    return fresh_status(
        answer, at=at, max_age=max_age, stale_grace=stale_grace, clock_skew=clock_skew
    )
