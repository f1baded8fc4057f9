"""What each kind of proposal changes: read the state it would replace, apply it.

A payload is JSON (the store keeps it verbatim): the server builds it from a
validated request, and the functions here check it again before writing,
because a stored payload is only as good as the code that wrote it.

Kinds and payloads::

    reference_values  {"group": g, "pcrs": {bank: {"<pcr>": "<hex digest>"}}}
    site              {"site_id": s, "cleared_risk_tiers": [t...], "description": d}
    host_site         {"host_id": h, "site_id": s}
    review            {"manifest_digest": "<hex>", "site_id": s, "risk_tier": t,
                       "categories_assessed": [...], "required_controls": [...],
                       "findings": f, "summary": m, "valid_days": n}
    trust_anchor      {"purpose": p, "certificate_der": "<hex>", "remove": bool}
    break_glass       {"host_id": h, "manifest_digest": "<hex>", "hours": n}
    boot_reference, ima_policy, gpu_policy, snp_policy, tdx_policy
                      {"group": g, <key>: {the document}}: verifier.store.document_kinds

Reference values (PCRs and boot), per-group policies (IMA, GPU, SEV-SNP and TDX),
sites, host sites and trust anchors replace state: if it changed between
proposal and quorum, the approvers approved a diff that no longer describes
what would happen, and the proposal goes stale instead of applying. Reviews and
break-glass grants add records beside earlier ones, so they have no such base.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from sqlalchemy.orm import Session

from verifier.store._core import add_event, check_id
from verifier.store.changes import (
    assign_site,
    effective_review_in,
    insert_review,
    read_reference,
    replace_reference,
    upsert_site,
)
from verifier.store.document_kinds import (
    BOOT_REFERENCE,
    DOCUMENT_KINDS,
    GPU_POLICY,
    IMA_POLICY,
    SNP_POLICY,
    TDX_POLICY,
    document_state,
    replace_document,
)
from verifier.store.errors import HostNotFound, ModelVersionNotFound, StoreError
from verifier.store.models import Host
from verifier.store.models_releases import ModelVersion, Site
from verifier.store.models_trust import BreakGlassGrantRow, TrustAnchorRow

REFERENCE_VALUES = "reference_values"
SITE = "site"
HOST_SITE = "host_site"
REVIEW = "review"
TRUST_ANCHOR = "trust_anchor"
BREAK_GLASS = "break_glass"
KINDS = (
    REFERENCE_VALUES, SITE, HOST_SITE, REVIEW, TRUST_ANCHOR, BREAK_GLASS, BOOT_REFERENCE,
    IMA_POLICY, GPU_POLICY, SNP_POLICY, TDX_POLICY,
)  # fmt: skip
REPLACES_STATE = frozenset({REFERENCE_VALUES, SITE, HOST_SITE, TRUST_ANCHOR, *DOCUMENT_KINDS})
MAX_REVIEW_DAYS = 3660
MAX_BREAK_GLASS_HOURS = 72
ANCHOR_PURPOSES = frozenset({"tpm_ek"})  # what enrollment consults; more come with GPU/CVM

State = dict[str, Any] | None


class PayloadError(StoreError, ValueError):
    """A stored or proposed payload does not have its kind's shape."""


def state_digest(state: State) -> bytes:
    """SHA-256 of the canonical JSON of a state (sorted keys, no whitespace)."""
    text = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).digest()


def target_state(s: Session, kind: str, payload: Mapping[str, Any], *, now: datetime) -> State:
    """The state the change would replace (None: nothing yet), read in ``s``.

    Raises HostNotFound / ModelVersionNotFound when the change names a host or
    model that does not exist, so a typo fails at proposal time. A site may be
    proposed in the same breath as what uses it, so a missing site fails only
    when the change applies (the approval is then refused and not counted).
    """
    if kind == REFERENCE_VALUES:
        reference = read_reference(s, _text(payload, "group"))
        if reference is None:
            return None
        return {"group": reference.group, "pcrs": pcrs_to_json(reference.pcrs)}
    if kind == SITE:
        site = s.get(Site, _text(payload, "site_id"))
        if site is None:
            return None
        return {
            "site_id": site.site_id,
            "cleared_risk_tiers": sorted(site.cleared_risk_tiers),
            "description": site.description,
        }
    if kind == HOST_SITE:
        host = s.get(Host, _text(payload, "host_id"))
        if host is None:
            raise HostNotFound(_text(payload, "host_id"))
        # The site may still be a pending proposal itself: it must exist when this applies.
        _text(payload, "site_id")
        return {"host_id": host.host_id, "site_id": host.site}
    if kind == REVIEW:
        digest = _digest(payload)
        model = s.get(ModelVersion, digest)
        if model is None:
            raise ModelVersionNotFound(digest.hex())
        if payload.get("risk_tier") != model.risk_tier:
            # Checked again when it applies; here so that nobody approves it first.
            raise PayloadError(
                f"review.tier_mismatch: assessed tier {payload.get('risk_tier')!r} differs "
                f"from the model's manifest tier {model.risk_tier!r}"
            )
        review = effective_review_in(s, digest, _text(payload, "site_id"), now=now)
        if review is None:
            return None
        return {
            "review_id": review.review_id,
            "required_controls": list(review.required_controls),
            "approvers": list(review.approvers),
            "expires_at": review.expires_at.isoformat(),
        }
    if kind == TRUST_ANCHOR:
        purpose, der = _purpose(payload), _der(payload)
        fingerprint = hashlib.sha256(der).digest()
        present = s.get(TrustAnchorRow, (purpose, fingerprint)) is not None
        remove = payload.get("remove") is True
        if present != remove:
            raise PayloadError(
                f"trust_anchor: {fingerprint.hex()} is {'already' if present else 'not'} "
                f"a {purpose} anchor"
            )
        return {"purpose": purpose, "fingerprint": fingerprint.hex(), "present": present}
    if kind in DOCUMENT_KINDS:
        return document_state(s, kind, _text(payload, "group"))
    if kind == BREAK_GLASS:
        host_id = _text(payload, "host_id")
        if s.get(Host, host_id) is None:
            raise HostNotFound(host_id)
        digest = _digest(payload)
        if s.get(ModelVersion, digest) is None:
            raise ModelVersionNotFound(digest.hex())
        return None
    raise PayloadError(f"unknown proposal kind {kind!r}")


def apply_change(
    s: Session,
    kind: str,
    payload: Mapping[str, Any],
    *,
    proposal_id: str,
    proposer: str,
    approvers: Sequence[str],
    now: datetime,
) -> str:
    """Make the change in ``s``; return a one-line description of what took effect."""
    if kind == REFERENCE_VALUES:
        reference = replace_reference(
            s, _text(payload, "group"), pcrs_from_json(payload.get("pcrs")), now=now
        )
        count = sum(len(v) for v in reference.pcrs.values())
        return f"reference values of group {reference.group} replaced ({count} PCRs)"
    if kind == SITE:
        site = upsert_site(
            s,
            _text(payload, "site_id"),
            cleared_risk_tiers=_texts(payload, "cleared_risk_tiers"),
            description=_text(payload, "description", empty=True),
            now=now,
        )
        tiers = ", ".join(sorted(site.cleared_risk_tiers)) or "none"
        return f"site {site.site_id} set; cleared tiers: {tiers}"
    if kind == HOST_SITE:
        host = assign_site(s, _text(payload, "host_id"), _text(payload, "site_id"), now=now)
        return f"host {host.host_id} assigned to site {host.site}"
    if kind == REVIEW:
        days = payload.get("valid_days")
        if not isinstance(days, int) or isinstance(days, bool) or not 0 < days <= MAX_REVIEW_DAYS:
            raise PayloadError(f"valid_days must be 1 to {MAX_REVIEW_DAYS}")
        review = insert_review(
            s,
            manifest_digest=_digest(payload),
            site_id=_text(payload, "site_id"),
            reviewer=proposer,
            summary=_text(payload, "summary", empty=True),
            now=now,
            expires_at=now + timedelta(days=days),
            risk_tier=_text(payload, "risk_tier"),
            categories_assessed=_texts(payload, "categories_assessed"),
            required_controls=_texts(payload, "required_controls"),
            findings=_text(payload, "findings", empty=True),
            approvers=approvers,
            proposal_id=proposal_id,
        )
        return f"review {review.review_id} in force until {review.expires_at.isoformat()}"
    if kind == TRUST_ANCHOR:
        return _apply_trust_anchor(s, payload, proposal_id=proposal_id, now=now)
    if kind in DOCUMENT_KINDS:
        key = DOCUMENT_KINDS[kind].key
        group, document = _text(payload, "group"), payload.get(key)
        check_id("group", group)
        if not isinstance(document, dict) or not document:
            raise PayloadError(f"{key} must be a non-empty JSON object")
        return replace_document(s, kind, group, document, proposal_id=proposal_id, now=now)
    if kind == BREAK_GLASS:
        hours = payload.get("hours")
        if not isinstance(hours, int) or isinstance(hours, bool):
            raise PayloadError("hours must be a whole number")
        if not 0 < hours <= MAX_BREAK_GLASS_HOURS:
            raise PayloadError(f"hours must be 1 to {MAX_BREAK_GLASS_HOURS}")
        grant = BreakGlassGrantRow(
            grant_id=uuid.uuid4().hex,
            host_id=_text(payload, "host_id"),
            manifest_digest=_digest(payload),
            granted_at=now.astimezone(UTC),
            expires_at=(now + timedelta(hours=hours)).astimezone(UTC),
            proposal_id=proposal_id,
            approvers=sorted(set(approvers)),
        )
        s.add(grant)
        add_event(s, grant.host_id, now, "break_glass", f"grant {grant.grant_id} for {hours} h")
        s.flush()
        return f"break-glass grant {grant.grant_id} until {grant.expires_at.isoformat()}"
    raise PayloadError(f"unknown proposal kind {kind!r}")


def _apply_trust_anchor(
    s: Session, payload: Mapping[str, Any], *, proposal_id: str, now: datetime
) -> str:
    purpose, der = _purpose(payload), _der(payload)
    fingerprint = hashlib.sha256(der).digest()
    existing = s.get(TrustAnchorRow, (purpose, fingerprint))
    if payload.get("remove") is True:
        if existing is None:
            raise PayloadError(f"trust_anchor: {fingerprint.hex()} is not a {purpose} anchor")
        s.delete(existing)
        return f"{purpose} anchor {fingerprint.hex()} removed"
    if existing is not None:
        raise PayloadError(f"trust_anchor: {fingerprint.hex()} is already a {purpose} anchor")
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise PayloadError("trust_anchor: certificate_der is not a DER certificate") from None
    subject = certificate.subject.rfc4514_string()
    s.add(
        TrustAnchorRow(
            purpose=purpose,
            fingerprint=fingerprint,
            certificate_der=der,
            subject=subject,
            not_after=certificate.not_valid_after_utc,
            added_at=now.astimezone(UTC),
            proposal_id=proposal_id,
        )
    )
    return f"{purpose} anchor {fingerprint.hex()} ({subject}) added"


def _purpose(payload: Mapping[str, Any]) -> str:
    purpose = _text(payload, "purpose")
    if purpose not in ANCHOR_PURPOSES:
        raise PayloadError(f"trust_anchor: unknown purpose {purpose!r}")
    return purpose


def _der(payload: Mapping[str, Any]) -> bytes:
    try:
        der = bytes.fromhex(_text(payload, "certificate_der"))
    except ValueError:
        raise PayloadError("certificate_der must be hex") from None
    return der


def pcrs_to_json(pcrs: Mapping[str, Mapping[int, bytes]]) -> dict[str, dict[str, str]]:
    return {
        bank: {str(pcr): value.hex() for pcr, value in sorted(by_index.items())}
        for bank, by_index in sorted(pcrs.items())
    }


def pcrs_from_json(raw: Any) -> dict[str, dict[int, bytes]]:
    if not isinstance(raw, dict):
        raise PayloadError("pcrs must map banks to {pcr: hex digest}")
    out: dict[str, dict[int, bytes]] = {}
    for bank, by_index in raw.items():
        if not isinstance(by_index, dict):
            raise PayloadError(f"pcrs[{bank!r}] must map PCR indices to hex digests")
        try:
            out[bank] = {int(pcr): bytes.fromhex(value) for pcr, value in by_index.items()}
        except (TypeError, ValueError):
            raise PayloadError(f"pcrs[{bank!r}]: indices must be numbers, values hex") from None
    return out


def _text(payload: Mapping[str, Any], key: str, *, empty: bool = False) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or (not value and not empty):
        raise PayloadError(f"{key} must be {'a' if empty else 'a non-empty'} string")
    return value


def _texts(payload: Mapping[str, Any], key: str) -> list[str]:
    value = payload.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PayloadError(f"{key} must be a list of non-empty strings")
    return list(value)


def _digest(payload: Mapping[str, Any]) -> bytes:
    try:
        digest = bytes.fromhex(_text(payload, "manifest_digest"))
    except ValueError:
        raise PayloadError("manifest_digest must be hex") from None
    if len(digest) != 32:
        raise PayloadError("manifest_digest must be a SHA-256 digest")
    return digest
