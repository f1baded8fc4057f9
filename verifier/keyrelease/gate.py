"""The release gate: may this host receive this model version's keys now?

Deny by default and say every reason: an operator debugging a denied release
needs the whole list (untrusted *and* not cleared *and* no review), not the
first failure. The gate raises; it never returns a bool.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from verifier.evidence.tpm.certify import AuthenticatedBindingKey
from verifier.keyrelease.controls import unsatisfied_controls
from verifier.store import (
    AttestationRecord,
    BreakGlassRecord,
    HostRecord,
    HostStatus,
    ModelVersionRecord,
    ReviewRecord,
    SiteRecord,
)
from verifier.verdict import Reason


class ReleaseDeniedError(Exception):
    def __init__(self, reasons: tuple[Reason, ...]) -> None:
        super().__init__("; ".join(str(r) for r in reasons))
        self.reasons = reasons


@dataclass(frozen=True, slots=True)
class ReleaseFacts:
    """What the gate decides on, gathered from the store and the live stream."""

    host: HostRecord
    model: ModelVersionRecord | None
    latest: AttestationRecord | None
    site: SiteRecord | None
    review: ReviewRecord | None
    binding_key: AuthenticatedBindingKey | None  # certified on this very stream
    now: datetime
    # An approved break-glass grant for this host and model, in force now: it
    # waives the site clearance and the review (and so the review's controls).
    break_glass: BreakGlassRecord | None = None


def check_release(facts: ReleaseFacts, *, freshness: timedelta) -> None:
    """Raise ReleaseDeniedError with every reason unless all of these hold:
    the model version is registered; the host is not quarantined; its latest
    verdict affirms and is younger than `freshness`; it holds a binding key
    certified on its current stream; it is assigned to a known site cleared for
    the model's risk tier; an unexpired pre-deployment review approves this model
    version for that site, and the host's latest verdict shows every control
    that review requires. An approved break-glass grant in force replaces the
    site and review conditions, never the others."""
    reasons: list[Reason] = []
    host, model = facts.host, facts.model
    if model is None:
        reasons.append(Reason("release.model_unknown", "no such model version is registered"))
    if host.status is HostStatus.QUARANTINED:
        reasons.append(Reason("release.host_quarantined", "an operator quarantined this host"))
    if facts.latest is None:
        reasons.append(Reason("release.no_verdict", "the host has not been attested yet"))
    elif not facts.latest.verdict.affirms:
        codes = ", ".join(facts.latest.verdict.reason_codes()) or facts.latest.verdict.tier.value
        reasons.append(Reason("release.host_untrusted", f"latest verdict: {codes}"))
    elif facts.now - facts.latest.appraised_at > freshness:
        age = int((facts.now - facts.latest.appraised_at).total_seconds())
        reasons.append(Reason("release.verdict_stale", f"latest affirming verdict is {age}s old"))
    if facts.binding_key is None:
        reasons.append(
            Reason("release.binding_key_missing", "no binding key certified on this stream yet")
        )
    reasons += policy_reasons(facts)
    if reasons:
        raise ReleaseDeniedError(tuple(reasons))


def policy_reasons(facts: ReleaseFacts) -> list[Reason]:
    """Why the deployment policy no longer (or does not) allow this release: site,
    clearance, review and its controls, unless a break-glass grant is in force.

    A live release is held to these at every renewal, so a site losing its
    clearance, a review expiring or a stricter review taking effect revokes it at
    the next round. (Break-glass never waives what check_release checks first:
    the model, quarantine, a fresh affirming verdict, the binding key.)
    """
    if facts.break_glass is not None:
        return []
    reasons: list[Reason] = []
    host, model = facts.host, facts.model
    if host.site is None:
        reasons.append(Reason("release.site_unassigned", "the host is not assigned to a site"))
    elif facts.site is None:
        reasons.append(Reason("release.site_unknown", f"site {host.site!r} does not exist"))
    elif model is not None and model.risk_tier not in facts.site.cleared_risk_tiers:
        reasons.append(
            Reason(
                "release.site_not_cleared",
                f"site {facts.site.site_id!r} is not cleared for risk tier {model.risk_tier!r}",
            )
        )
    if model is not None and host.site is not None and facts.review is None:
        reasons.append(
            Reason(
                "release.review_missing",
                f"no effective pre-deployment review of {model.name}:{model.version} "
                f"for site {host.site!r}",
            )
        )
    review, latest = facts.review, facts.latest
    if review is not None:
        checks = latest.verdict.checks_run if latest is not None else frozenset()
        for control in unsatisfied_controls(review.required_controls, checks):
            reasons.append(
                Reason(
                    "release.control_unsatisfied",
                    f"the review requires {control!r}; the latest verdict does not show it",
                )
            )
    return reasons


def release_context(host_id: str, release_id: str, manifest_digest: bytes) -> bytes:
    """AAD binding wrapped data keys to one release of one model to one host.

    The agent computes the same bytes (attestation.proto, KeyRelease)."""
    return b"\x00".join(
        (b"weightgate/v1/release", host_id.encode(), release_id.encode(), manifest_digest)
    )
