"""Conversions between domain records and API messages."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from verifier.store import (
    AttestationRecord,
    HostEvent,
    HostRecord,
    HostStatus,
    ModelVersionRecord,
    ReferenceSet,
    ReleaseRecord,
    ReleaseState,
    ReviewRecord,
    SiteRecord,
)
from verifier.verdict import Tier, Verdict
from weightgate.v1 import common_pb2, operator_pb2

# Host and group ids end up in logs, file names and certificates: keep them tame.
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

TIERS: Mapping[Tier, common_pb2.Tier.ValueType] = {
    Tier.NONE: common_pb2.TIER_NONE,
    Tier.AFFIRMING: common_pb2.TIER_AFFIRMING,
    Tier.WARNING: common_pb2.TIER_WARNING,
    Tier.CONTRAINDICATED: common_pb2.TIER_CONTRAINDICATED,
}
STATUSES: Mapping[HostStatus, operator_pb2.HostStatus.ValueType] = {
    HostStatus.REGISTERED: operator_pb2.HOST_STATUS_REGISTERED,
    HostStatus.ENROLLED: operator_pb2.HOST_STATUS_ENROLLED,
    HostStatus.TRUSTED: operator_pb2.HOST_STATUS_TRUSTED,
    HostStatus.UNTRUSTED: operator_pb2.HOST_STATUS_UNTRUSTED,
    HostStatus.QUARANTINED: operator_pb2.HOST_STATUS_QUARANTINED,
}


def timestamp(at: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(at)
    return stamp


def verdict_message(
    verdict: Verdict, *, host_id: str, appraised_at: datetime, result_id: str
) -> common_pb2.Verdict:
    return common_pb2.Verdict(
        tier=TIERS[verdict.tier],
        reasons=[common_pb2.Reason(code=r.code, detail=r.detail) for r in verdict.reasons],
        checks_run=sorted(verdict.checks_run),
        appraised_at=timestamp(appraised_at),
        host_id=host_id,
        result_id=result_id,
    )


def record_message(record: AttestationRecord) -> common_pb2.Verdict:
    return verdict_message(
        record.verdict,
        host_id=record.host_id,
        appraised_at=record.appraised_at,
        result_id=record.result_id,
    )


def host_summary(host: HostRecord) -> operator_pb2.HostSummary:
    summary = operator_pb2.HostSummary(
        host_id=host.host_id,
        group=host.group,
        status=STATUSES[host.status],
        reasons=[common_pb2.Reason(code=r.code, detail=r.detail) for r in host.last_reasons],
        site=host.site or "",
    )
    if host.last_attestation_at is not None:
        summary.last_attestation.CopyFrom(timestamp(host.last_attestation_at))
    return summary


def event_message(event: HostEvent) -> operator_pb2.HostEvent:
    return operator_pb2.HostEvent(at=timestamp(event.at), kind=event.kind, detail=event.detail)


def pcr_banks(pcrs: Mapping[str, Mapping[int, bytes]]) -> list[common_pb2.PcrBank]:
    return [
        common_pb2.PcrBank(hash_algorithm=bank, values=dict(values))
        for bank, values in sorted(pcrs.items())
    ]


def reference_message(reference: ReferenceSet) -> operator_pb2.ReferenceValues:
    return operator_pb2.ReferenceValues(
        group=reference.group,
        pcrs=pcr_banks(reference.pcrs),
        updated_at=timestamp(reference.updated_at),
    )


def model_message(model: ModelVersionRecord) -> operator_pb2.ModelVersion:
    return operator_pb2.ModelVersion(
        name=model.name,
        version=model.version,
        risk_tier=model.risk_tier,
        manifest_digest=model.manifest_digest,
        file_count=model.file_count,
        plaintext_bytes=model.plaintext_bytes,
        added_at=timestamp(model.added_at),
    )


def site_message(site: SiteRecord) -> operator_pb2.Site:
    return operator_pb2.Site(
        site_id=site.site_id,
        cleared_risk_tiers=sorted(site.cleared_risk_tiers),
        description=site.description,
    )


def review_message(review: ReviewRecord) -> operator_pb2.Review:
    return operator_pb2.Review(
        review_id=review.review_id,
        manifest_digest=review.manifest_digest,
        site_id=review.site_id,
        risk_tier=review.risk_tier,
        reviewer=review.reviewer,
        summary=review.summary,
        recorded_at=timestamp(review.recorded_at),
        expires_at=timestamp(review.expires_at),
        categories_assessed=list(review.categories_assessed),
        required_controls=list(review.required_controls),
        findings=review.findings,
        approvers=list(review.approvers),
        proposal_id=review.proposal_id or "",
    )


RELEASE_STATES: Mapping[ReleaseState, operator_pb2.ReleaseState.ValueType] = {
    ReleaseState.RELEASED: operator_pb2.RELEASE_STATE_RELEASED,
    ReleaseState.REVOKED: operator_pb2.RELEASE_STATE_REVOKED,
    ReleaseState.ERASED: operator_pb2.RELEASE_STATE_ERASED,
    ReleaseState.EXPIRED: operator_pb2.RELEASE_STATE_EXPIRED,
}


def release_message(release: ReleaseRecord) -> operator_pb2.Release:
    message = operator_pb2.Release(
        release_id=release.release_id,
        host_id=release.host_id,
        manifest_digest=release.manifest_digest,
        model=release.model,
        state=RELEASE_STATES[release.state],
        released_at=timestamp(release.released_at),
        lease_expires_at=timestamp(release.lease_expires_at),
        revocation_reason=release.revocation_reason,
    )
    for field, value in (
        ("renewed_at", release.renewed_at),
        ("revoked_at", release.revoked_at),
        ("erased_at", release.erased_at),
    ):
        if value is not None:
            getattr(message, field).CopyFrom(timestamp(value))
    return message
