"""The changes that decide what is trusted, as functions of an open session.

Reference values, sites and their clearances, host-to-site assignment and
pre-deployment reviews change only through an approved proposal
(verifier.store.store_proposals), which applies one of these inside the same
transaction as the approval that reached the quorum and its audit record. The
store's direct methods (``set_reference``...) wrap them in a transaction of
their own for setup code and tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from verifier.store._core import (
    add_event,
    check_digest,
    check_id,
    dialect_of,
    lock_host,
    require_aware,
)
from verifier.store.errors import ModelVersionNotFound, SiteNotFound
from verifier.store.models import ReferenceSetRow, ReferenceValue
from verifier.store.models_releases import ModelVersion, Review, Site
from verifier.store.records import (
    HostRecord,
    ReferenceSet,
    ReviewRecord,
    SiteRecord,
    validated_pcrs,
)

# -- reference values ------------------------------------------------------------


def replace_reference(
    s: Session, group: str, pcrs: Mapping[str, Mapping[int, bytes]], *, now: datetime
) -> ReferenceSet:
    """Replace the group's whole reference set; an empty set is refused."""
    check_id("group", group)
    require_aware("now", now)
    values = validated_pcrs(pcrs)
    upsert = dialect_of(s).insert(ReferenceSetRow).values(group=group, updated_at=now)
    # The upsert also locks the set's row, serialising concurrent replacements.
    upsert = upsert.on_conflict_do_update(
        index_elements=[ReferenceSetRow.group],
        set_={"updated_at": upsert.excluded.updated_at},
    )
    s.execute(upsert)
    s.execute(delete(ReferenceValue).where(ReferenceValue.group == group))
    s.add_all(
        ReferenceValue(group=group, bank=bank, pcr=pcr, value=value)
        for bank, by_index in values.items()
        for pcr, value in by_index.items()
    )
    copied = {bank: dict(by_index) for bank, by_index in values.items()}
    return ReferenceSet(group, copied, now.astimezone(UTC))


def read_reference(s: Session, group: str) -> ReferenceSet | None:
    row = s.get(ReferenceSetRow, group)
    if row is None:
        return None
    pcrs: dict[str, dict[int, bytes]] = {}
    query = select(ReferenceValue).where(ReferenceValue.group == group)
    for v in s.scalars(query.order_by(ReferenceValue.bank, ReferenceValue.pcr)):
        pcrs.setdefault(v.bank, {})[v.pcr] = v.value
    return ReferenceSet(group, pcrs, row.updated_at)


# -- sites -------------------------------------------------------------------------


def upsert_site(
    s: Session,
    site_id: str,
    *,
    cleared_risk_tiers: Iterable[str],
    description: str,
    now: datetime,
) -> SiteRecord:
    """Create or replace a site; its clearances are replaced as a whole."""
    check_id("site_id", site_id)
    if isinstance(cleared_risk_tiers, str):
        raise TypeError("cleared_risk_tiers must be a collection of tiers, not one string")
    tiers = sorted(set(cleared_risk_tiers))
    for tier in tiers:
        check_id("risk tier", tier)
    require_aware("now", now)
    values = {"cleared_risk_tiers": tiers, "description": description, "updated_at": now}
    upsert = dialect_of(s).insert(Site).values(site_id=site_id, **values)
    upsert = upsert.on_conflict_do_update(
        index_elements=[Site.site_id],
        set_={name: upsert.excluded[name] for name in values},
    )
    s.execute(upsert)
    return SiteRecord(site_id, frozenset(tiers), description, now.astimezone(UTC))


def assign_site(s: Session, host_id: str, site_id: str, *, now: datetime) -> HostRecord:
    require_aware("now", now)
    host = lock_host(s, host_id)
    if s.get(Site, site_id) is None:
        raise SiteNotFound(site_id)
    old = host.site
    host.site = site_id
    detail = f"site {site_id}" if old is None else f"site {old} -> {site_id}"
    add_event(s, host_id, now, "site_assigned", detail)
    s.flush()
    return host.to_record()


# -- reviews -----------------------------------------------------------------------


def insert_review(
    s: Session,
    *,
    manifest_digest: bytes,
    site_id: str,
    reviewer: str,
    summary: str,
    now: datetime,
    expires_at: datetime,
    risk_tier: str | None = None,
    categories_assessed: Sequence[str] = (),
    required_controls: Sequence[str] = (),
    findings: str = "",
    approvers: Sequence[str] = (),
    proposal_id: str | None = None,
) -> ReviewRecord:
    """Record a review of a model version for a site.

    ``risk_tier`` is the tier the reviewers assessed; it must equal the tier the
    model's signed manifest declares (None: take the manifest's), so a review
    can never clear a model under a lower tier than it was registered with.
    """
    check_digest("manifest_digest", manifest_digest)
    check_id("reviewer", reviewer)
    require_aware("now", now)
    require_aware("expires_at", expires_at)
    if expires_at <= now:
        raise ValueError("a review must expire after it is recorded")
    model = s.get(ModelVersion, manifest_digest)
    if model is None:
        raise ModelVersionNotFound(manifest_digest.hex())
    if s.get(Site, site_id) is None:
        raise SiteNotFound(site_id)
    if risk_tier is not None and risk_tier != model.risk_tier:
        raise ValueError(
            f"review.tier_mismatch: assessed tier {risk_tier!r} differs from the "
            f"model's manifest tier {model.risk_tier!r}"
        )
    row = Review(
        review_id=uuid.uuid4().hex,
        manifest_digest=manifest_digest,
        site_id=site_id,
        risk_tier=model.risk_tier,
        reviewer=reviewer,
        summary=summary,
        recorded_at=now.astimezone(UTC),
        expires_at=expires_at.astimezone(UTC),
        categories_assessed=sorted(set(categories_assessed)),
        required_controls=sorted(set(required_controls)),
        findings=findings,
        approvers=sorted(set(approvers)),
        proposal_id=proposal_id,
    )
    s.add(row)
    s.flush()
    return row.to_record()


def effective_review_in(
    s: Session, manifest_digest: bytes, site_id: str, *, now: datetime
) -> ReviewRecord | None:
    """The latest review of the model version for the site in force at ``now``:
    recorded by then and not yet expired (``expires_at`` is exclusive)."""
    require_aware("now", now)
    query = (
        select(Review)
        .where(Review.manifest_digest == manifest_digest)
        .where(Review.site_id == site_id)
        .where(Review.recorded_at <= now)
        .where(Review.expires_at > now)
        .order_by(Review.recorded_at.desc(), Review.expires_at.desc())
        .limit(1)
    )
    row = s.scalar(query)
    return None if row is None else row.to_record()


__all__ = [
    "assign_site",
    "effective_review_in",
    "insert_review",
    "read_reference",
    "replace_reference",
    "upsert_site",
]
