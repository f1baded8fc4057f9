"""OCSP over a whole verified chain: every non-root certificate needs a good, fresh answer."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from cryptography import x509

from verifier.evidence.nvidia.cert_digests import der_sha256
from verifier.evidence.nvidia.ocsp import MISSING, NOT_CHECKED, OcspPolicy, certificate_name
from verifier.evidence.nvidia.ocsp_verified import check_ocsp_reusing
from verifier.verdict import Reason, VerificationError


class ResponseSource(Protocol):
    """Where responses not shipped with the evidence come from (an OcspCache)."""

    def get(self, certificate: x509.Certificate, issuer: x509.Certificate) -> bytes | None: ...


def chain_key(certificate: x509.Certificate) -> bytes:
    """SHA-256 fingerprint: the unambiguous key of ``responses`` (serials repeat across CAs)."""
    return der_sha256(certificate)


def check_chain_ocsp(
    certificates: Sequence[x509.Certificate],
    responses: Mapping[int | bytes, bytes],
    policy: OcspPolicy,
    *,
    at: datetime,
    cache: ResponseSource | None = None,
) -> list[Reason]:
    """Every problem with revocation of a verified path, leaf → pinned root.

    Each certificate but the root (trusted by configuration, RFC 6960 has no
    answer for a self-signed anchor) needs a good response for it, looked up in
    ``responses`` by :func:`chain_key` then by serial, then in ``cache``. Missing:
    ``nvidia.ocsp.missing`` when the policy requires OCSP, else the warning
    ``nvidia.ocsp.not_checked``. Codes in WARNING_CODES are warnings; an empty
    list means every certificate is good and fresh.
    """
    if len(certificates) < 2:
        raise ValueError("a verified path has at least a certificate and its root")
    reasons: list[Reason] = []
    for certificate, issuer in itertools.pairwise(certificates):
        where = f"{certificate_name(certificate)} (serial {certificate.serial_number:x})"
        der = (
            responses.get(chain_key(certificate), responses.get(certificate.serial_number))
            if responses
            else None
        )
        if der is None and cache is not None:
            der = cache.get(certificate, issuer)
        if der is None:
            code = MISSING if policy.required else NOT_CHECKED
            reasons.append(Reason(code, f"no OCSP response for {where}"))
            continue
        try:
            # Each response is authenticated once (ocsp_verified); freshness and
            # status are judged here at ``at`` every time.
            status = check_ocsp_reusing(
                der, certificate=certificate, issuer=issuer, at=at, policy=policy
            )
        except VerificationError as exc:
            reasons.append(Reason(exc.reason.code, f"{where}: {exc.reason.detail}"))
            continue
        reasons.extend(Reason(r.code, f"{where}: {r.detail}") for r in status.warnings)
        reasons.extend(Reason(r.code, f"{where}: {r.detail}") for r in status.problems())
    return reasons
