"""Proposed changes between the API and the store: validate, encode, show as a diff.

A ``ProposedChange`` message becomes a :class:`Change` (kind, a label naming
what it changes, and the JSON payload the store keeps, see
verifier.store.proposal_kinds) only after every field is checked, so an
approver is never asked to approve something that could not apply. The diff
they see is proposal_diff's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from verifier.attestation import DIGEST_SIZES
from verifier.group_document_kinds import (
    GROUP_DOCUMENT_KINDS,
    DocumentError,
    document_change,
    document_fields,
)
from verifier.keyrelease.controls import CONTROLS, unknown_controls
from verifier.server.convert import IDENTIFIER, pcr_banks
from verifier.server.proposal_diff import canonical_json
from verifier.store.proposal_kinds import (
    ANCHOR_PURPOSES,
    BREAK_GLASS,
    HOST_SITE,
    MAX_BREAK_GLASS_HOURS,
    MAX_REVIEW_DAYS,
    REFERENCE_VALUES,
    REVIEW,
    SITE,
    TRUST_ANCHOR,
    pcrs_from_json,
    pcrs_to_json,
)
from weightgate.v1 import operator_pb2

TIER = re.compile(r"[A-Za-z0-9._+:@/-]{1,128}")
TEXT_LIMIT = 4096
FINDINGS_LIMIT = 16384
MAX_LIST = 32


class ChangeError(ValueError):
    """The proposed change is malformed; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    target: str  # e.g. "reference values of group default"
    payload: dict[str, Any]
    ids: dict[str, str]  # what it names, for the audit record's target


def change_from_message(change: operator_pb2.ProposedChange, *, default_review_days: int) -> Change:
    which = change.WhichOneof("change")
    if which == "reference_values":
        return _reference_values(change.reference_values)
    if which == "site":
        return _site(change.site.site)
    if which == "host_site":
        return _host_site(change.host_site)
    if which == "review":
        return _review(change.review, default_review_days)
    if which == "trust_anchor":
        return _trust_anchor(change.trust_anchor)
    if which == "break_glass":
        return _break_glass(change.break_glass)
    if which is not None and which in GROUP_DOCUMENT_KINDS:
        return _group_document(which, *document_fields(change, which))
    raise ChangeError(
        "change: set one of reference_values, site, host_site, review, trust_anchor, "
        "break_glass, boot_reference, ima_policy, gpu_policy, snp_policy, tdx_policy"
    )


def change_message(kind: str, payload: Mapping[str, Any]) -> operator_pb2.ProposedChange:
    """The stored payload as the API's ProposedChange."""
    if kind == REFERENCE_VALUES:
        request = operator_pb2.SetReferenceValuesRequest(
            group=payload["group"], pcrs=pcr_banks(pcrs_from_json(payload["pcrs"]))
        )
        return operator_pb2.ProposedChange(reference_values=request)
    if kind == SITE:
        site = operator_pb2.Site(
            site_id=payload["site_id"],
            cleared_risk_tiers=payload["cleared_risk_tiers"],
            description=payload["description"],
        )
        return operator_pb2.ProposedChange(site=operator_pb2.SetSiteRequest(site=site))
    if kind == HOST_SITE:
        assign = operator_pb2.AssignHostToSiteRequest(
            host_id=payload["host_id"], site_id=payload["site_id"]
        )
        return operator_pb2.ProposedChange(host_site=assign)
    if kind == REVIEW:
        review = operator_pb2.RecordReviewRequest(
            manifest_digest=bytes.fromhex(payload["manifest_digest"]),
            site_id=payload["site_id"],
            summary=payload["summary"],
            valid_days=payload["valid_days"],
            risk_tier=payload["risk_tier"],
            categories_assessed=payload["categories_assessed"],
            required_controls=payload["required_controls"],
            findings=payload["findings"],
        )
        return operator_pb2.ProposedChange(review=review)
    if kind == TRUST_ANCHOR:
        anchor = operator_pb2.TrustAnchorChange(
            purpose=payload["purpose"],
            certificate_der=bytes.fromhex(payload["certificate_der"]),
            remove=payload["remove"],
        )
        return operator_pb2.ProposedChange(trust_anchor=anchor)
    if kind == BREAK_GLASS:
        grant = operator_pb2.BreakGlassRelease(
            host_id=payload["host_id"],
            manifest_digest=bytes.fromhex(payload["manifest_digest"]),
            hours=payload["hours"],
        )
        return operator_pb2.ProposedChange(break_glass=grant)
    if kind in GROUP_DOCUMENT_KINDS:
        key = GROUP_DOCUMENT_KINDS[kind].key
        return document_change(kind, payload["group"], canonical_json(payload[key]))
    raise ValueError(f"unknown proposal kind {kind!r}")


def _reference_values(request: operator_pb2.SetReferenceValuesRequest) -> Change:
    if not IDENTIFIER.fullmatch(request.group):
        raise ChangeError("reference_values.group: not a valid group name")
    pcrs: dict[str, dict[int, bytes]] = {}
    for bank in request.pcrs:
        size = DIGEST_SIZES.get(bank.hash_algorithm)
        if size is None or bank.hash_algorithm in pcrs:
            raise ChangeError(f"pcrs: unknown or repeated bank {bank.hash_algorithm!r}")
        for index, value in bank.values.items():
            if index > 23 or len(value) != size:
                raise ChangeError(
                    f"pcrs: {bank.hash_algorithm} PCR{index} needs index 0-23 "
                    f"and a {size}-byte value"
                )
        pcrs[bank.hash_algorithm] = dict(bank.values)
    if not pcrs or not all(pcrs.values()):
        # An empty reference would mean "accept anything": refused.
        raise ChangeError("pcrs: at least one PCR value in every bank given")
    return Change(
        REFERENCE_VALUES,
        f"reference values of group {request.group}",
        {"group": request.group, "pcrs": pcrs_to_json(pcrs)},
        {"group": request.group},
    )


def _site(site: operator_pb2.Site) -> Change:
    if not IDENTIFIER.fullmatch(site.site_id):
        raise ChangeError("site.site_id: not a valid id")
    if not all(TIER.fullmatch(t) for t in site.cleared_risk_tiers):
        raise ChangeError("site.cleared_risk_tiers: bad tier")
    if len(site.cleared_risk_tiers) > MAX_LIST:
        raise ChangeError(f"site.cleared_risk_tiers: at most {MAX_LIST}")
    if len(site.description) > TEXT_LIMIT:
        raise ChangeError("site.description: too long")
    payload = {
        "site_id": site.site_id,
        "cleared_risk_tiers": sorted(set(site.cleared_risk_tiers)),
        "description": site.description,
    }
    return Change(SITE, f"site {site.site_id}", payload, {"site_id": site.site_id})


def _host_site(request: operator_pb2.AssignHostToSiteRequest) -> Change:
    for name, value in (("host_id", request.host_id), ("site_id", request.site_id)):
        if not IDENTIFIER.fullmatch(value):
            raise ChangeError(f"host_site.{name}: not a valid id")
    ids = {"host_id": request.host_id, "site_id": request.site_id}
    return Change(HOST_SITE, f"site of host {request.host_id}", dict(ids), ids)


def _review(request: operator_pb2.RecordReviewRequest, default_days: int) -> Change:
    digest = bytes(request.manifest_digest)
    if len(digest) != 32:
        raise ChangeError("review.manifest_digest: expected a 32-byte SHA-256 digest")
    if not IDENTIFIER.fullmatch(request.site_id):
        raise ChangeError("review.site_id: not a valid id")
    if request.risk_tier and not TIER.fullmatch(request.risk_tier):
        raise ChangeError("review.risk_tier: bad tier")
    categories = sorted(set(request.categories_assessed))
    if not categories:
        raise ChangeError("review.categories_assessed: name at least one risk category assessed")
    if len(categories) > MAX_LIST or not all(TIER.fullmatch(c) for c in categories):
        raise ChangeError(f"review.categories_assessed: at most {MAX_LIST} simple names")
    unknown = unknown_controls(request.required_controls)
    if unknown:
        known = ", ".join(sorted(CONTROLS))
        raise ChangeError(f"review.required_controls: unknown {unknown}; known: {known}")
    if len(request.summary) > TEXT_LIMIT:
        raise ChangeError("review.summary: too long")
    if len(request.findings) > FINDINGS_LIMIT:
        raise ChangeError("review.findings: too long")
    days = request.valid_days or default_days
    if not 0 < days <= MAX_REVIEW_DAYS:
        raise ChangeError(f"review.valid_days: at most {MAX_REVIEW_DAYS}")
    payload = {
        "manifest_digest": digest.hex(),
        "site_id": request.site_id,
        "risk_tier": request.risk_tier,  # empty: the handler fills in the model's
        "categories_assessed": categories,
        "required_controls": sorted(set(request.required_controls)),
        "findings": request.findings,
        "summary": request.summary,
        "valid_days": days,
    }
    ids = {"manifest_digest": digest.hex(), "site_id": request.site_id}
    return Change(REVIEW, f"review of {digest.hex()[:16]} for site {request.site_id}", payload, ids)


def _trust_anchor(request: operator_pb2.TrustAnchorChange) -> Change:
    if request.purpose not in ANCHOR_PURPOSES:
        known = ", ".join(sorted(ANCHOR_PURPOSES))
        raise ChangeError(f"trust_anchor.purpose: unknown {request.purpose!r}; known: {known}")
    der = bytes(request.certificate_der)
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise ChangeError("trust_anchor.certificate_der: not a DER X.509 certificate") from None
    if not request.remove:
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.value.ca:
            raise ChangeError("trust_anchor.certificate_der: not a CA certificate")
    fingerprint = hashlib.sha256(der).hexdigest()
    action = "remove" if request.remove else "add"
    payload = {"purpose": request.purpose, "certificate_der": der.hex(), "remove": request.remove}
    target = f"{action} {request.purpose} anchor {certificate.subject.rfc4514_string()}"
    return Change(TRUST_ANCHOR, target[:512], payload, {"fingerprint": fingerprint})


def _group_document(kind: str, group: str, data: bytes) -> Change:
    spec = GROUP_DOCUMENT_KINDS[kind]
    if not IDENTIFIER.fullmatch(group):
        raise ChangeError(f"{kind}.group: not a valid group name")
    if len(data) > spec.limit:
        raise ChangeError(f"{kind}.{spec.json_field}: larger than {spec.limit} bytes")
    try:
        document = spec.check(data)
    except DocumentError as exc:
        raise ChangeError(f"{kind}.{spec.json_field}: {exc}") from None
    payload = {"group": group, spec.key: document}
    return Change(kind, spec.target(group), payload, {"group": group})


def _break_glass(request: operator_pb2.BreakGlassRelease) -> Change:
    if not IDENTIFIER.fullmatch(request.host_id):
        raise ChangeError("break_glass.host_id: not a valid id")
    digest = bytes(request.manifest_digest)
    if len(digest) != 32:
        raise ChangeError("break_glass.manifest_digest: expected a 32-byte SHA-256 digest")
    if not 0 < request.hours <= MAX_BREAK_GLASS_HOURS:
        raise ChangeError(f"break_glass.hours: 1 to {MAX_BREAK_GLASS_HOURS}")
    payload = {"host_id": request.host_id, "manifest_digest": digest.hex(), "hours": request.hours}
    ids = {"host_id": request.host_id, "manifest_digest": digest.hex()}
    target = f"break-glass for host {request.host_id}, model {digest.hex()[:16]}"
    return Change(BREAK_GLASS, target, payload, ids)
