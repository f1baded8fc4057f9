"""OCSP responses authenticated once, their freshness and status judged at every use.

Authenticating a response (parse, CertID, responder authorisation, the P-384
signature) is most of what a round of GPU verification spends on OCSP, and the
responses for the CAs every GPU shares come up for every GPU of every round. It
is a function of the exact response bytes, the certificate and its issuer, the
configured responder roots, and the time only through the validity of the
responder certificates it checked. So an :class:`AuthenticatedResponse` is
reused under the SHA-256 of the response bytes, of the certificate's and the
issuer's DER, and of each responder root's DER, at any time inside that
validity; anything else, or a time outside it, authenticates again. Failures are
never remembered. Freshness (thisUpdate, nextUpdate, max_age, grace, clock
skew) and the certificate status are evaluated on every use, since they depend
on the time and the policy, which are not part of the key.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from cryptography import x509

from verifier.evidence.lru import BoundedLru
from verifier.evidence.nvidia.cert_digests import der_sha256
from verifier.evidence.nvidia.ocsp import (
    MAX_RESPONSE_BYTES,
    AuthenticatedResponse,
    OcspPolicy,
    OcspStatus,
    authenticate_response,
    check_inputs,
    check_ocsp,
    fresh_status,
)

__all__ = ["check_ocsp_reusing", "clear_verified_ocsp"]

# Authenticated responses remembered, least recently used out. A host round
# checks 38 (4 per GPU chain, 3 per RIM chain), of which the per-device ones
# (leaf, BROM) are new per GPU: 4096 holds a few hundred GPUs' worth at a few
# hundred bytes an entry; a miss only costs authenticating again.
_MAX_ENTRIES = 4096
_Key = tuple[bytes, bytes, bytes, tuple[bytes, ...]]
_CACHE: BoundedLru[_Key, AuthenticatedResponse] = BoundedLru(_MAX_ENTRIES)


def _authenticated(
    response_der: bytes,
    *,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    at: datetime,
    policy: OcspPolicy,
) -> AuthenticatedResponse:
    key = (
        hashlib.sha256(response_der).digest(),
        der_sha256(certificate),
        der_sha256(issuer),
        tuple(sorted(der_sha256(root) for root in policy.trusted_responder_roots)),
    )
    held = _CACHE.get(key)
    if held is not None and held.holds_at(at):
        return held
    answer = authenticate_response(
        response_der,
        certificate=certificate,
        issuer=issuer,
        at=at,
        trusted_responder_roots=policy.trusted_responder_roots,
    )
    _CACHE.put(key, answer)
    return answer


def check_ocsp_reusing(
    response_der: bytes,
    *,
    certificate: x509.Certificate,
    issuer: x509.Certificate,
    at: datetime,
    policy: OcspPolicy,
) -> OcspStatus:
    """:func:`check_ocsp` with ``policy``, authenticating each response only once.

    Same checks, same order, same reasons: steps 1-6 from an earlier success for
    the identical inputs when it holds at ``at``, step 7 (freshness) always.
    """
    if len(response_der) > MAX_RESPONSE_BYTES:
        # Not hashed, not kept: check_ocsp refuses it for its size.
        return check_ocsp(
            response_der,
            certificate=certificate,
            issuer=issuer,
            at=at,
            max_age=policy.max_age,
            trusted_responder_roots=policy.trusted_responder_roots,
            stale_grace=policy.stale_grace,
            clock_skew=policy.clock_skew,
        )
    check_inputs(certificate, issuer, at)
    answer = _authenticated(
        response_der, certificate=certificate, issuer=issuer, at=at, policy=policy
    )
    return fresh_status(
        answer,
        at=at,
        max_age=policy.max_age,
        stale_grace=policy.stale_grace,
        clock_skew=policy.clock_skew,
    )


def clear_verified_ocsp() -> None:
    """Forget every authenticated response (benchmarks measuring cold rounds; tests)."""
    _CACHE.clear()
