"""The store's model versions, sites, reviews, binding keys, quarantine and key releases,
on SQLite and (with WEIGHTGATE_TEST_POSTGRES_URL) PostgreSQL; and the 0001 -> 0002 upgrade."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable
from datetime import UTC, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.store_fixtures import (
    DIGEST,
    PCR_MISMATCH,
    T0,
    Backend,
    add_model,
    affirming,
    attest,
    contraindicated,
    enroll_kwargs,
    enrolled,
    file_id,
    is_utc,
    model_kwargs,
)
from verifier.store import (
    ClockState,
    HostNotFound,
    HostQuarantined,
    HostRecord,
    HostStatus,
    ModelVersionExists,
    ModelVersionNotFound,
    ReleaseNotFound,
    ReleaseRecord,
    ReleaseState,
    ReleaseStateError,
    ReviewRecord,
    SiteNotFound,
    Store,
    StoreError,
    migrations,
)
from verifier.store.models import Base
from verifier.verdict import Reason

LEASE = timedelta(minutes=10)
QD = b"\x01" * 32  # erase qualifying data
QD2 = b"\x02" * 32


def _kinds(store: Store, host_id: str = "h1") -> list[str]:
    return [e.kind for e in store.events(host_id, limit=100)]


def _released(store: Store, host_id: str = "h1", *, at: timedelta = timedelta(0)) -> ReleaseRecord:
    """A release of model frontier:1.0 to an enrolled host, made at T0 + ``at``."""
    if store.get_host(host_id) is None:
        enrolled(store, host_id)
    digest = model_kwargs()["manifest_digest"]
    if store.get_model_version(digest) is None:
        add_model(store)
    now = T0 + at
    return store.create_release(
        host_id=host_id, manifest_digest=digest, lease_expires_at=now + LEASE, now=now
    )


# -- model versions -------------------------------------------------------------


def test_model_versions(store: Store) -> None:
    b = add_model(store, "zeta", "2.0")
    a2 = add_model(store, "alpha", "2.0")
    a1 = add_model(store, "alpha", "1.0")
    kw = model_kwargs("zeta", "2.0")
    assert (b.manifest_digest, b.name, b.version, b.risk_tier) == (
        kw["manifest_digest"],
        "zeta",
        "2.0",
        "high",
    )
    assert (b.manifest, b.manifest_signature) == (kw["manifest"], kw["manifest_signature"])
    assert (b.file_count, b.plaintext_bytes, b.added_at) == (2, 2000, T0)
    assert is_utc(b.added_at)
    assert store.get_model_version(b.manifest_digest) == b
    assert store.get_model_version(DIGEST) is None
    assert store.list_model_versions() == [a1, a2, b]
    assert store.wrapped_data_keys(b.manifest_digest) == kw["wrapped_data_keys"]
    assert store.wrapped_data_keys(DIGEST) == {}


def test_model_version_duplicates(store: Store) -> None:
    first = add_model(store)
    with pytest.raises(ModelVersionExists):
        add_model(store)
    # Same name and version, different manifest: "name:version" must stay unambiguous.
    other = {**model_kwargs(), "manifest": b"{}", "manifest_digest": hashlib.sha256(b"{}").digest()}
    with pytest.raises(ModelVersionExists):
        store.add_model_version(**other)
    assert store.list_model_versions() == [first]


@pytest.mark.parametrize(
    "change",
    [
        {"manifest_digest": DIGEST},  # not the manifest's SHA-256
        {"manifest_digest": b"short"},
        {"manifest_signature": b""},
        {"name": ""},
        {"version": "v" * 256},
        {"risk_tier": ""},
        {"file_count": 0},
        {"file_count": 3},  # two keys for three files
        {"plaintext_bytes": -1},
        {"wrapped_data_keys": {file_id(0): b"k", file_id(0xAB).upper(): b"k"}},
        {"wrapped_data_keys": {file_id(0): b"k", "abcd": b"k"}},
        {"wrapped_data_keys": {file_id(0): b"k", file_id(1): b""}},
        {"now": T0.replace(tzinfo=None)},
    ],
)
def test_model_version_refusals(store: Store, change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        store.add_model_version(**{**model_kwargs(), **change})
    assert store.list_model_versions() == []


# -- sites and reviews ------------------------------------------------------------


def test_sites_upsert_and_list(store: Store) -> None:
    assert store.get_site("dc-1") is None
    first = store.set_site(
        "dc-1", cleared_risk_tiers=["high", "low", "high"], description="A", now=T0
    )
    assert first.cleared_risk_tiers == frozenset({"high", "low"})
    assert store.get_site("dc-1") == first
    later = T0 + timedelta(days=1)
    second = store.set_site("dc-1", cleared_risk_tiers=(), description="B", now=later)
    assert store.get_site("dc-1") == second
    assert (second.cleared_risk_tiers, second.description, second.updated_at) == (
        frozenset(),
        "B",
        later,
    )
    assert is_utc(second.updated_at)
    other = store.set_site("dc-0", cleared_risk_tiers={"low"}, description="", now=T0)
    assert store.list_sites() == [other, second]


def test_site_refusals(store: Store) -> None:
    with pytest.raises(TypeError):
        store.set_site("dc-1", cleared_risk_tiers="high", description="", now=T0)
    for bad_id, tiers in (("", ["high"]), ("dc-1", [""]), ("dc-1", ["t" * 256])):
        with pytest.raises(ValueError):
            store.set_site(bad_id, cleared_risk_tiers=tiers, description="", now=T0)
    with pytest.raises(ValueError):
        store.set_site("dc-1", cleared_risk_tiers=[], description="", now=T0.replace(tzinfo=None))
    assert store.list_sites() == []


def test_assign_host_to_site(store: Store) -> None:
    store.set_site("dc-1", cleared_risk_tiers=["high"], description="", now=T0)
    store.set_site("dc-2", cleared_risk_tiers=["high"], description="", now=T0)
    with pytest.raises(HostNotFound):
        store.assign_host_to_site("ghost", "dc-1", now=T0)
    store.register_host("h1", "gpu-a")
    with pytest.raises(SiteNotFound):
        store.assign_host_to_site("h1", "nowhere", now=T0)
    assert store.get_host("h1").site is None  # type: ignore[union-attr]

    host = store.assign_host_to_site("h1", "dc-1", now=T0)
    assert host.site == "dc-1"
    assert store.get_host("h1") == host
    assert store.list_hosts()[0].site == "dc-1"
    store.assign_host_to_site("h1", "dc-2", now=T0 + timedelta(seconds=1))
    events = [(e.kind, e.detail) for e in store.events("h1", limit=2)]
    assert events == [("site_assigned", "site dc-1 -> dc-2"), ("site_assigned", "site dc-1")]


def test_reviews(store: Store) -> None:
    model = add_model(store)
    digest = model.manifest_digest
    store.set_site("dc-1", cleared_risk_tiers=["high"], description="", now=T0)
    store.set_site("dc-2", cleared_risk_tiers=["high"], description="", now=T0)

    def review(site: str, at: timedelta, valid: timedelta, **kw: object) -> ReviewRecord:
        args: dict[str, object] = {
            "manifest_digest": digest,
            "site_id": site,
            "reviewer": "alice",
            "summary": "evals ok",
            "now": T0 + at,
            "expires_at": T0 + at + valid,
            **kw,
        }
        return store.record_review(**args)  # type: ignore[arg-type]

    assert store.effective_review(digest, "dc-1", now=T0) is None
    old = review("dc-1", timedelta(0), timedelta(days=30))
    new = review("dc-1", timedelta(days=1), timedelta(days=2))
    review("dc-2", timedelta(days=2), timedelta(days=60))
    assert len(new.review_id) == 32 and new.review_id != old.review_id
    assert new.risk_tier == "high" and new.reviewer == "alice"
    assert new.recorded_at == T0 + timedelta(days=1)

    assert store.effective_review(digest, "dc-1", now=T0) == old
    assert store.effective_review(digest, "dc-1", now=T0 + timedelta(days=2)) == new
    # expires_at is exclusive; then the older, longer review applies again.
    assert store.effective_review(digest, "dc-1", now=T0 + timedelta(days=3)) == old
    assert store.effective_review(digest, "dc-1", now=T0 + timedelta(days=30)) is None
    assert store.effective_review(DIGEST, "dc-1", now=T0) is None
    assert store.effective_review(digest, "dc-3", now=T0) is None

    with pytest.raises(ModelVersionNotFound):
        review("dc-1", timedelta(0), timedelta(days=1), manifest_digest=DIGEST)
    with pytest.raises(SiteNotFound):
        review("dc-3", timedelta(0), timedelta(days=1))
    for bad in ({"reviewer": ""}, {"manifest_digest": b"x"}):
        with pytest.raises(ValueError):
            review("dc-1", timedelta(0), timedelta(days=1), **bad)
    with pytest.raises(ValueError):
        review("dc-1", timedelta(0), timedelta(0))  # expires when recorded
    with pytest.raises(ValueError):
        store.effective_review(digest, "dc-1", now=T0.replace(tzinfo=None))


# -- binding keys -------------------------------------------------------------------


def test_binding_keys(store: Store) -> None:
    with pytest.raises(HostNotFound):
        store.set_binding_key(
            "h1", public=b"p", policy_digest=DIGEST, pcr_selection={"sha256": [0]}, now=T0
        )
    enrolled(store)
    assert store.get_binding_key("h1") is None
    first = store.set_binding_key(
        "h1",
        public=b"pub-1",
        policy_digest=DIGEST,
        pcr_selection={"sha256": [7, 0, 7], "sha1": (4,)},
        now=T0,
    )
    assert first.pcr_selection == {"sha1": (4,), "sha256": (0, 7)}
    assert store.get_binding_key("h1") == first
    second = store.set_binding_key(
        "h1",
        public=b"pub-2",
        policy_digest=b"\x09" * 32,
        pcr_selection={"sha384": [1]},
        now=T0 + timedelta(seconds=1),
    )
    assert store.get_binding_key("h1") == second
    assert (second.public, second.certified_at) == (b"pub-2", T0 + timedelta(seconds=1))
    assert _kinds(store)[:2] == ["binding_key_certified", "binding_key_certified"]

    bad: list[dict[str, object]] = [
        {"public": b""},
        {"policy_digest": b""},
        {"pcr_selection": {}},
        {"pcr_selection": {"sha256": []}},
        {"pcr_selection": {"md5": [0]}},
        {"pcr_selection": {"sha256": [24]}},
        {"now": T0.replace(tzinfo=None)},
    ]
    for change in bad:
        args: dict[str, object] = {
            "public": b"p",
            "policy_digest": DIGEST,
            "pcr_selection": {"sha256": [0]},
            "now": T0,
            **change,
        }
        with pytest.raises(ValueError):
            store.set_binding_key("h1", **args)  # type: ignore[arg-type]
    assert store.get_binding_key("h1") == second


# -- quarantine ------------------------------------------------------------------------


def test_quarantine_sticks_through_attestation_and_enrollment(store: Store) -> None:
    with pytest.raises(HostNotFound):
        store.quarantine_host("ghost", reason="x", now=T0)
    enrolled(store)
    attest(store, T0, affirming())
    with pytest.raises(ValueError):
        store.quarantine_host("h1", reason="", now=T0)

    host = store.quarantine_host("h1", reason="stolen rack", now=T0 + timedelta(seconds=1))
    quarantined = Reason("host.quarantined", "stolen rack")
    assert host.status is HostStatus.QUARANTINED
    assert host.last_reasons == (quarantined,)
    assert store.get_host("h1") == host
    assert store.events("h1", limit=1)[0].detail == "trusted -> quarantined: stolen rack"

    # Attestation results are stored but move nothing; the reason stays in front.
    attest(store, T0 + timedelta(seconds=2), affirming(), clock=ClockState(5, 1, 0))
    attest(store, T0 + timedelta(seconds=3), contraindicated(PCR_MISMATCH))
    host = store.get_host("h1")  # type: ignore[assignment]
    assert host.status is HostStatus.QUARANTINED
    assert host.last_reasons == (quarantined, PCR_MISMATCH)
    assert host.last_attestation_at == T0 + timedelta(seconds=3)
    assert host.last_clock == ClockState(5, 1, 0)
    assert len(store.history("h1")) == 3
    assert _kinds(store).count("status_changed") == 1  # the one before the quarantine

    # Re-enrolling (a new AK) does not lift it either.
    eid = store.create_enrollment(**enroll_kwargs("h1"))
    host = store.finish_enrollment(eid, succeeded=True, now=T0 + timedelta(seconds=4))
    assert host.status is HostStatus.QUARANTINED


def test_quarantined_host_gets_no_release_and_no_renewal(store: Store) -> None:
    release = _released(store)
    store.quarantine_host("h1", reason="audit", now=T0)
    with pytest.raises(HostQuarantined):
        _released(store)
    assert store.renew_releases("h1", lease_expires_at=T0 + 2 * LEASE, now=T0) == []
    assert store.live_releases("h1") == [release]  # the caller revokes it


# -- releases --------------------------------------------------------------------------


def test_create_release(store: Store) -> None:
    release = _released(store)
    assert release.state is ReleaseState.RELEASED
    assert len(release.release_id) == 32
    assert (release.host_id, release.model) == ("h1", "frontier:1.0")
    assert release.manifest_digest == model_kwargs()["manifest_digest"]
    assert (release.released_at, release.lease_expires_at) == (T0, T0 + LEASE)
    assert is_utc(release.released_at) and is_utc(release.lease_expires_at)
    assert (release.renewed_at, release.revoked_at, release.erased_at) == (None, None, None)
    assert (release.revocation_reason, release.erase_qualifying_data) == ("", None)
    assert store.get_release(release.release_id) == release
    assert store.get_release("0" * 32) is None
    event = store.events("h1", limit=1)[0]
    assert (event.kind, event.detail) == (
        "key_released",
        f"frontier:1.0 release {release.release_id}",
    )


def test_create_release_refusals(store: Store) -> None:
    digest = add_model(store).manifest_digest

    def create(**kw: object) -> ReleaseRecord:
        args: dict[str, object] = {
            "host_id": "h1",
            "manifest_digest": digest,
            "lease_expires_at": T0 + LEASE,
            "now": T0,
            **kw,
        }
        return store.create_release(**args)  # type: ignore[arg-type]

    with pytest.raises(HostNotFound):
        create()
    enrolled(store)
    with pytest.raises(ModelVersionNotFound):
        create(manifest_digest=DIGEST)
    for bad in (
        {"manifest_digest": b"short"},
        {"lease_expires_at": T0},
        {"now": T0.replace(tzinfo=None)},
        {"lease_expires_at": (T0 + LEASE).replace(tzinfo=None)},
    ):
        with pytest.raises(ValueError):
            create(**bad)
    assert store.list_releases() == []


def test_renew_releases(store: Store) -> None:
    a = _released(store)
    b = _released(store, at=timedelta(minutes=5))
    revoked = _released(store, at=timedelta(minutes=1))
    store.revoke_release(revoked.release_id, reason="r", erase_qualifying_data=QD, now=T0)
    other = _released(store, "h2")

    # At T0 + LEASE a's lease ran out (exclusive): only b is renewed.
    now = T0 + LEASE
    renewed = store.renew_releases("h1", lease_expires_at=now + LEASE, now=now)
    assert [r.release_id for r in renewed] == [b.release_id]
    assert (renewed[0].lease_expires_at, renewed[0].renewed_at) == (now + LEASE, now)
    assert store.get_release(b.release_id) == renewed[0]
    assert store.get_release(a.release_id) == a  # not revived
    assert store.get_release(other.release_id) == other

    earlier = T0 + timedelta(minutes=1)
    both = store.renew_releases("h2", lease_expires_at=earlier + LEASE, now=earlier)
    assert [r.release_id for r in both] == [other.release_id]
    with pytest.raises(ValueError):
        store.renew_releases("h1", lease_expires_at=now, now=now)
    with pytest.raises(HostNotFound):
        store.renew_releases("ghost", lease_expires_at=now + LEASE, now=now)


def test_revoke_then_erase(store: Store) -> None:
    release = _released(store)
    now = T0 + timedelta(minutes=1)
    revoked = store.revoke_release(
        release.release_id, reason="release.revoked.reboot", erase_qualifying_data=QD, now=now
    )
    assert revoked.state is ReleaseState.REVOKED
    assert (revoked.revoked_at, revoked.revocation_reason) == (now, "release.revoked.reboot")
    assert revoked.erase_qualifying_data == QD
    assert store.live_releases("h1") == []
    assert store.awaiting_erasure("h1") == [revoked]
    assert store.events("h1", limit=1)[0].detail.endswith(": release.revoked.reboot")

    # After a reconnect: a fresh challenge replaces the old one, nothing else moves.
    again = store.revoke_release(
        release.release_id, reason="other", erase_qualifying_data=QD2, now=now + LEASE
    )
    assert again == dataclasses.replace(revoked, erase_qualifying_data=QD2)
    assert _kinds(store).count("key_revoked") == 1

    erased = store.mark_erased(release.release_id, now=now + 2 * LEASE)
    assert erased.state is ReleaseState.ERASED and erased.erased_at == now + 2 * LEASE
    assert store.get_release(release.release_id) == erased
    assert store.awaiting_erasure("h1") == []
    assert _kinds(store)[0] == "weights_erased"
    # Erased is final: a revocation changes nothing, a second erasure is refused.
    assert (
        store.revoke_release(release.release_id, reason="x", erase_qualifying_data=QD, now=now)
        == erased
    )
    with pytest.raises(ReleaseStateError):
        store.mark_erased(release.release_id, now=now)
    assert issubclass(ReleaseStateError, StoreError)


def test_release_refusals(store: Store) -> None:
    release = _released(store)
    with pytest.raises(ReleaseStateError):
        store.mark_erased(release.release_id, now=T0)  # never asked to erase
    with pytest.raises(ReleaseNotFound):
        store.revoke_release("0" * 32, reason="r", erase_qualifying_data=QD, now=T0)
    with pytest.raises(ReleaseNotFound):
        store.mark_erased("0" * 32, now=T0)
    for reason, qd in (("", QD), ("r", b"")):
        with pytest.raises(ValueError):
            store.revoke_release(
                release.release_id, reason=reason, erase_qualifying_data=qd, now=T0
            )
    with pytest.raises(ValueError):
        store.expire_releases(now=T0.replace(tzinfo=None))
    assert store.get_release(release.release_id) == release


def test_expire_releases(store: Store) -> None:
    due = _released(store)
    later = _released(store, at=timedelta(seconds=1))
    other = _released(store, "h2")
    revoked = _released(store, at=timedelta(seconds=2))
    store.revoke_release(revoked.release_id, reason="r", erase_qualifying_data=QD, now=T0)

    now = T0 + LEASE  # due's and other's lease end exactly now: expired
    expired = store.expire_releases(now=now)
    assert sorted(r.release_id for r in expired) == sorted([due.release_id, other.release_id])
    for record in expired:
        assert record.state is ReleaseState.EXPIRED
        assert (record.revoked_at, record.revocation_reason) == (now, "lease_expired")
        assert record.erase_qualifying_data is None
        assert store.get_release(record.release_id) == record
    assert store.expire_releases(now=now) == []
    assert store.live_releases("h1") == [later]
    assert [r.release_id for r in store.awaiting_erasure("h1")] == [
        due.release_id,
        revoked.release_id,
    ]
    assert _kinds(store, "h2")[0] == "lease_expired"

    # An expired release is asked for its receipt like a revoked one, then erased.
    rechallenged = store.revoke_release(
        due.release_id, reason="x", erase_qualifying_data=QD, now=now
    )
    assert rechallenged.state is ReleaseState.EXPIRED
    assert rechallenged.revocation_reason == "lease_expired"
    assert rechallenged.erase_qualifying_data == QD
    assert store.mark_erased(due.release_id, now=now).state is ReleaseState.ERASED


def test_list_releases(store: Store) -> None:
    a = _released(store)
    b = _released(store, "h2", at=timedelta(seconds=1))
    add_model(store, "other", "1")
    digest = model_kwargs("other", "1")["manifest_digest"]
    c = store.create_release(
        host_id="h1",
        manifest_digest=digest,
        lease_expires_at=T0 + LEASE,
        now=T0 + timedelta(seconds=2),
    )
    assert c.model == "other:1"
    assert store.list_releases() == [c, b, a]
    assert store.list_releases(host_id="h1") == [c, a]
    assert store.list_releases(manifest_digest=digest) == [c]
    assert store.list_releases(host_id="h2", manifest_digest=digest) == []
    assert store.live_releases("h1") == [a, c]
    assert store.live_releases("ghost") == []


def test_release_state_is_checked_by_the_database(store: Store) -> None:
    release = _released(store)
    with store._engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(
            sa.text("UPDATE releases SET state = 'erased' WHERE release_id = :id"),
            {"id": release.release_id},
        )


# -- denials ------------------------------------------------------------------------------


def test_release_denials(store: Store) -> None:
    enrolled(store)
    add_model(store)
    known = model_kwargs()["manifest_digest"]
    reasons = (Reason("release.site_unassigned", "no site"), Reason("release.review_missing"))
    first = store.record_release_denial(
        host_id="h1", manifest_digest=known, reasons=reasons, now=T0
    )
    assert (first.host_id, first.manifest_digest, first.at, first.reasons) == (
        "h1",
        known,
        T0,
        reasons,
    )
    unknown = b"\xee" * 32  # never registered: kept all the same
    second = store.record_release_denial(
        host_id="h1",
        manifest_digest=unknown,
        reasons=[Reason("release.model_unknown")],
        now=T0 + timedelta(seconds=1),
    )
    assert store.release_denials("h1") == [second, first]
    assert store.release_denials("h1", limit=1) == [second]
    details = [e.detail for e in store.events("h1", limit=2)]
    assert details == [
        f"manifest {unknown.hex()}: release.model_unknown",
        "frontier:1.0: release.site_unassigned, release.review_missing",
    ]
    assert _kinds(store)[:2] == ["release_denied", "release_denied"]

    # A host the store does not know: the denial is kept, there is no event log to add to.
    ghost = store.record_release_denial(
        host_id="ghost", manifest_digest=known, reasons=reasons, now=T0
    )
    assert store.release_denials("ghost") == [ghost]
    assert store.events("ghost") == []

    for bad in (
        {"reasons": ()},
        {"manifest_digest": b""},
        {"host_id": ""},
        {"now": T0.replace(tzinfo=None)},
    ):
        args: dict[str, object] = {
            "host_id": "h1",
            "manifest_digest": known,
            "reasons": reasons,
            "now": T0,
            **bad,
        }
        with pytest.raises(ValueError):
            store.record_release_denial(**args)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.release_denials("h1", limit=0)
    assert len(store.release_denials("h1")) == 2


# -- races ----------------------------------------------------------------------------------


def _race(*calls: Callable[[], object]) -> list[object]:
    """Run the calls at once; each result is its return value or the exception it raised."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # reported to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("_round", range(5))
def test_renew_races_expiry(store: Store, _round: int) -> None:
    """Renewal (its lease still runs at its own now) against a sweeper that finds it
    overdue: exactly one wins, and the row says which."""
    release = _released(store)
    due = release.lease_expires_at
    renew_now = due - timedelta(seconds=1)
    renewed, expired = _race(
        lambda: store.renew_releases("h1", lease_expires_at=due + LEASE, now=renew_now),
        lambda: store.expire_releases(now=due),
    )
    assert isinstance(renewed, list) and isinstance(expired, list)
    final = store.get_release(release.release_id)
    assert final is not None
    if renewed:
        assert expired == [] and renewed == [final]
        assert (final.state, final.lease_expires_at) == (ReleaseState.RELEASED, due + LEASE)
    else:
        assert expired == [final]
        assert (final.state, final.revocation_reason) == (ReleaseState.EXPIRED, "lease_expired")
        assert final.renewed_at is None


@pytest.mark.parametrize("_round", range(5))
def test_revoke_races_expiry(store: Store, _round: int) -> None:
    release = _released(store)
    now = release.lease_expires_at
    revoked, expired = _race(
        lambda: store.revoke_release(
            release.release_id,
            reason="release.revoked.untrusted",
            erase_qualifying_data=QD,
            now=now,
        ),
        lambda: store.expire_releases(now=now),
    )
    assert isinstance(revoked, ReleaseRecord) and isinstance(expired, list)
    final = store.get_release(release.release_id)
    assert final == revoked  # the revocation's view is the last word either way
    assert final.erase_qualifying_data == QD
    if expired:
        assert (final.state, final.revocation_reason) == (ReleaseState.EXPIRED, "lease_expired")
    else:
        assert final.state is ReleaseState.REVOKED
    kinds = _kinds(store)
    assert kinds.count("key_revoked") + kinds.count("lease_expired") == 1


def test_concurrent_erasure_has_one_winner(store: Store) -> None:
    release = _released(store)
    store.revoke_release(release.release_id, reason="r", erase_qualifying_data=QD, now=T0)
    results = _race(*[lambda: store.mark_erased(release.release_id, now=T0)] * 6)
    assert sum(isinstance(r, ReleaseRecord) for r in results) == 1
    assert sum(isinstance(r, ReleaseStateError) for r in results) == 5
    assert _kinds(store).count("weights_erased") == 1


def test_concurrent_sweepers_and_quarantine(store: Store) -> None:
    """Two sweepers, a quarantine and a release on several hosts at once: no deadlock,
    each overdue release expired once."""
    hosts = [f"h{i}" for i in range(4)]
    for h in hosts:
        _released(store, h)
    now = T0 + LEASE
    results = _race(
        lambda: store.expire_releases(now=now),
        lambda: store.expire_releases(now=now),
        lambda: store.quarantine_host("h2", reason="x", now=now),
        lambda: _released(store, "h3", at=LEASE),
    )
    assert not any(isinstance(r, Exception) for r in results), results
    expired = [r.release_id for batch in results[:2] for r in batch]  # type: ignore[attr-defined]
    assert len(expired) == len(set(expired)) == 4
    assert all(_kinds(store, h).count("lease_expired") == 1 for h in hosts)


# -- schema -----------------------------------------------------------------------------------


def test_check_constraints_match_the_models(store: Store) -> None:
    """compare_metadata ignores CHECK constraints; compare their names here.

    0001 stored its checks as ck_<table>_ck_<table>_<name>; both spellings count."""

    def normal(table: str, name: str | None) -> str | None:
        doubled = f"ck_{table}_ck_{table}_"
        return f"ck_{table}_{name[len(doubled) :]}" if name and name.startswith(doubled) else name

    with store._engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in Base.metadata.sorted_tables:
            expected = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
            found = {
                normal(table.name, c["name"]) for c in inspector.get_check_constraints(table.name)
            }
            assert found == expected, table.name


def test_upgrade_from_0001_keeps_the_data(backend: Backend) -> None:
    engine = migrations._create_engine(backend.url, backend.schema)
    try:
        migrations.upgrade(engine, "0001")
        with engine.begin() as conn:
            _insert_0001_rows(conn)
    finally:
        engine.dispose()

    with backend.open() as store:
        host = store.get_host("h1")
        assert host == HostRecord(
            host_id="h1",
            group="gpu-a",
            status=HostStatus.TRUSTED,
            ek_public=b"ek",
            ek_certificate=None,
            ak_public=b"ak",
            ak_name=b"name",
            registered_at=T0,
            enrolled_at=T0,
            last_attestation_at=T0,
            last_clock=ClockState(2**64 - 1, 3, 1),
            last_reasons=(PCR_MISMATCH,),
        )
        assert host.site is None
        assert store.get_enrollment("e" * 32).state == "succeeded"  # type: ignore[union-attr]
        (result,) = store.history("h1")
        assert (result.result_id, result.verdict.reasons) == ("r" * 32, (PCR_MISMATCH,))
        assert [(e.kind, e.detail) for e in store.events("h1")] == [("enrolled", "e1")]
        assert store.get_reference("gpu-a").pcrs == {"sha256": {7: DIGEST}}  # type: ignore[union-attr]
        # The rebuilt hosts table takes the new status and site.
        store.set_site("dc-1", cleared_risk_tiers=["high"], description="", now=T0)
        store.assign_host_to_site("h1", "dc-1", now=T0)
        assert store.quarantine_host("h1", reason="x", now=T0).site == "dc-1"
        with store._engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            assert version == "0011"
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            if conn.dialect.name == "sqlite":
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []


def test_downgrade_to_0001_and_back(backend: Backend) -> None:
    with backend.open() as store:
        _released(store)
        store.quarantine_host("h1", reason="x", now=T0)
        engine = store._engine
        with engine.begin() as conn:  # releases reference hosts; 0001 drops them with their tables
            conn.execute(sa.text("DELETE FROM releases"))
            conn.execute(sa.text("DELETE FROM binding_keys"))
        migrations.downgrade(engine, "0001")
        with engine.connect() as conn:
            assert sa.inspect(conn).has_table("releases") is False
            status = conn.execute(sa.text("SELECT status FROM hosts")).scalar()
            assert status == "untrusted"
        migrations.upgrade(engine)
        assert store.get_host("h1").status is HostStatus.UNTRUSTED  # type: ignore[union-attr]


def _insert_0001_rows(conn: sa.Connection) -> None:
    # SQLite: the text form SQLAlchemy writes for a UTC datetime.
    at: object = T0.strftime("%Y-%m-%d %H:%M:%S.%f") if conn.dialect.name == "sqlite" else T0
    reasons = json.dumps([{"code": PCR_MISMATCH.code, "detail": PCR_MISMATCH.detail}])
    conn.execute(
        sa.text(
            'INSERT INTO hosts (host_id, "group", status, ek_public, ak_public, ak_name,'
            " registered_at, enrolled_at, last_attestation_at, last_clock, last_reset_count,"
            " last_restart_count, last_reasons) VALUES ('h1', 'gpu-a', 'trusted', :ek, :ak,"
            " :name, :at, :at, :at, -1, 3, 1, :reasons)"
        ),
        {"ek": b"ek", "ak": b"ak", "name": b"name", "at": at, "reasons": reasons},
    )
    conn.execute(
        sa.text(
            "INSERT INTO enrollments VALUES (:id, 'h1', :b, :b, :b, :b, :d, :at, :at, 'succeeded')"
        ),
        {"id": "e" * 32, "b": b"x", "d": DIGEST, "at": at},
    )
    conn.execute(
        sa.text(
            "INSERT INTO attestation_results VALUES (:id, 'h1', 'c1', :at, 'contraindicated',"
            " :reasons, :checks)"
        ),
        {"id": "r" * 32, "at": at, "reasons": reasons, "checks": '["tpm.pcr.policy"]'},
    )
    conn.execute(
        sa.text(
            "INSERT INTO host_events (host_id, at, kind, detail)"
            " VALUES ('h1', :at, 'enrolled', 'e1')"
        ),
        {"at": at},
    )
    conn.execute(sa.text("INSERT INTO reference_sets VALUES ('gpu-a', :at)"), {"at": at})
    conn.execute(
        sa.text(
            'INSERT INTO reference_values ("group", bank, pcr, value)'
            " VALUES ('gpu-a', 'sha256', 7, :v)"
        ),
        {"v": DIGEST},
    )


def test_timestamps_are_normalised_to_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    enrolled(store)
    add_model(store)
    local = T0.astimezone(plus_two)
    release = store.create_release(
        host_id="h1",
        manifest_digest=model_kwargs()["manifest_digest"],
        lease_expires_at=local + LEASE,
        now=local,
    )
    assert release.released_at.tzinfo is UTC
    assert store.get_release(release.release_id) == release
    site = store.set_site("dc-1", cleared_risk_tiers=[], description="", now=local)
    assert site.updated_at.tzinfo is UTC and store.get_site("dc-1") == site
