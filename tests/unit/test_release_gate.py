"""The release gate's decision on assembled facts: controls and break-glass.

The end-to-end path (real TPM, real stream) is in
tests/integration/test_key_release_gate.py; here each condition is varied alone.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from verifier.keyrelease.gate import ReleaseDeniedError, ReleaseFacts, check_release
from verifier.store import (
    AttestationRecord,
    BreakGlassRecord,
    HostRecord,
    HostStatus,
    ModelVersionRecord,
    ReviewRecord,
    SiteRecord,
)
from verifier.verdict import Reason, Verdict

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
DIGEST = bytes(range(32))
FRESH = timedelta(seconds=60)
BINDING_KEY: Any = object()  # the gate only asks whether one was certified on the stream


def _facts(**changes: Any) -> ReleaseFacts:
    host = HostRecord(
        host_id="h1", group="g", status=HostStatus.TRUSTED, ek_public=None, ek_certificate=None,
        ak_public=None, ak_name=None, registered_at=NOW, enrolled_at=NOW,
        last_attestation_at=NOW, last_clock=None, last_reasons=(), site="dc-1",
    )  # fmt: skip
    model = ModelVersionRecord(DIGEST, "m", "1", "high", b"", b"", 1, 1, NOW)
    latest = AttestationRecord(
        "r1", "h1", "c1", NOW - timedelta(seconds=5), Verdict.affirming({"tpm.quote.signature"})
    )
    site = SiteRecord("dc-1", frozenset({"high"}), "", NOW)
    review = ReviewRecord("rv", DIGEST, "dc-1", "high", "olga", "", NOW, NOW + timedelta(days=9))
    facts = ReleaseFacts(
        host=host, model=model, latest=latest, site=site, review=review,
        binding_key=BINDING_KEY, now=NOW,
    )  # fmt: skip
    return replace(facts, **changes)


def _codes(facts: ReleaseFacts) -> list[str]:
    with pytest.raises(ReleaseDeniedError) as denied:
        check_release(facts, freshness=FRESH)
    return sorted(r.code for r in denied.value.reasons)


def _grant() -> BreakGlassRecord:
    return BreakGlassRecord("g1", "h1", DIGEST, NOW, NOW + timedelta(hours=4), "p1", ("a", "b"))


def test_all_conditions_met_releases() -> None:
    check_release(_facts(), freshness=FRESH)


def test_a_required_control_the_verdict_does_not_show_is_named() -> None:
    facts = _facts()
    assert facts.review is not None
    demanding = replace(facts.review, required_controls=("confidential_vm", "gpu_attestation"))
    assert _codes(replace(facts, review=demanding)) == [
        "release.control_unsatisfied",
        "release.control_unsatisfied",
    ]


def test_a_control_is_satisfied_by_its_check() -> None:
    facts = _facts()
    assert facts.review is not None and facts.latest is not None
    review = replace(facts.review, required_controls=("confidential_vm",))
    verdict = Verdict.affirming({"tpm.quote.signature", "snp.attested"})
    check_release(
        replace(facts, review=review, latest=replace(facts.latest, verdict=verdict)),
        freshness=FRESH,
    )


def test_break_glass_waives_site_and_review_only() -> None:
    without = _facts(site=None, review=None)
    assert _codes(without) == ["release.review_missing", "release.site_unknown"]
    check_release(replace(without, break_glass=_grant()), freshness=FRESH)

    untrusted = AttestationRecord(
        "r2", "h1", "c2", NOW, Verdict.contraindicated([Reason("tpm.pcr.mismatch")], ())
    )
    assert _codes(replace(without, break_glass=_grant(), latest=untrusted)) == [
        "release.host_untrusted"
    ]
    quarantined = replace(without.host, status=HostStatus.QUARANTINED)
    assert "release.host_quarantined" in _codes(
        replace(without, break_glass=_grant(), host=quarantined)
    )
    assert _codes(replace(without, break_glass=_grant(), binding_key=None)) == [
        "release.binding_key_missing"
    ]
