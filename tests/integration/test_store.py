"""The store against real databases: SQLite always, PostgreSQL when configured.

Set WEIGHTGATE_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)
to run every test on PostgreSQL too; each test gets its own throwaway schema.
Releases, models, sites and the 0001 -> 0002 upgrade: test_store_releases.py.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.store_fixtures import (
    DIGEST,
    NONCE_MISMATCH,
    PCR_MISMATCH,
    T0,
    Backend,
    affirming,
    attest,
    contraindicated,
    enroll_kwargs,
    enrolled,
    is_utc,
)
from verifier.store import (
    ClockState,
    EnrollmentNotFound,
    EnrollmentState,
    HostAlreadyRegistered,
    HostNotFound,
    HostStatus,
    Store,
)
from verifier.store import store as store_module
from verifier.store.models import Base
from verifier.verdict import Tier, Verdict

# -- hosts ---------------------------------------------------------------------


def test_register_list_get(store: Store) -> None:
    before = datetime.now(UTC)
    b = store.register_host("host-b", "gpu-b")
    store.register_host("host-a", "gpu-a")

    assert [h.host_id for h in store.list_hosts()] == ["host-a", "host-b"]
    assert store.get_host("host-b") == b
    assert store.get_host("nope") is None
    assert b.status is HostStatus.REGISTERED
    assert b.group == "gpu-b"
    assert (b.ek_public, b.ak_public, b.enrolled_at, b.last_clock, b.last_reasons) == (
        None,
        None,
        None,
        None,
        (),
    )
    assert is_utc(b.registered_at) and b.registered_at >= before
    assert [e.kind for e in store.events("host-b")] == ["registered"]


def test_duplicate_registration(store: Store) -> None:
    first = store.register_host("h1", "gpu-a")
    with pytest.raises(HostAlreadyRegistered):
        store.register_host("h1", "gpu-other")
    assert store.get_host("h1") == first
    assert [e.kind for e in store.events("h1")] == ["registered"]


def test_bad_ids_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        store.register_host("", "gpu-a")
    with pytest.raises(ValueError):
        store.register_host("h" * 256, "gpu-a")
    assert store.list_hosts() == []


# -- enrollment ----------------------------------------------------------------


def test_enrollment_happy_path(store: Store) -> None:
    store.register_host("h1", "gpu-a")
    eid = store.create_enrollment(**enroll_kwargs("h1"))
    pending = store.get_enrollment(eid)
    assert pending is not None
    assert pending.state == EnrollmentState.PENDING.value == "pending"
    assert (pending.host_id, pending.secret_digest, pending.ak_public) == (
        "h1",
        DIGEST,
        b"ak-pub-h1",
    )
    assert pending.expires_at == T0 + timedelta(minutes=5) and is_utc(pending.expires_at)

    host = store.finish_enrollment(eid, succeeded=True, now=T0)

    assert host.status is HostStatus.ENROLLED
    assert host.enrolled_at == T0 and is_utc(host.enrolled_at)
    assert (host.ek_public, host.ek_certificate) == (b"ek-pub-h1", b"ek-cert")
    assert (host.ak_public, host.ak_name) == (b"ak-pub-h1", b"\x00\x0b" + DIGEST)
    assert store.get_host("h1") == host
    assert store.get_enrollment(eid).state == "succeeded"  # type: ignore[union-attr]
    assert [e.kind for e in store.events("h1")] == ["enrolled", "registered"]


@pytest.mark.parametrize("first_succeeds", [True, False])
def test_enrollment_single_attempt(store: Store, first_succeeds: bool) -> None:
    store.register_host("h1", "gpu-a")
    eid = store.create_enrollment(**enroll_kwargs("h1"))
    host = store.finish_enrollment(eid, succeeded=first_succeeds, now=T0)
    with pytest.raises(EnrollmentNotFound):
        store.finish_enrollment(eid, succeeded=True, now=T0)
    expected = HostStatus.ENROLLED if first_succeeds else HostStatus.REGISTERED
    assert host.status is expected
    assert store.get_host("h1") == host
    state = store.get_enrollment(eid).state  # type: ignore[union-attr]
    assert state == ("succeeded" if first_succeeds else "failed")
    kind = "enrolled" if first_succeeds else "enrollment_failed"
    assert [e.kind for e in store.events("h1")] == [kind, "registered"]


def test_enrollment_expiry(store: Store) -> None:
    store.register_host("h1", "gpu-a")
    eid = store.create_enrollment(**enroll_kwargs("h1", expires_at=T0))
    with pytest.raises(EnrollmentNotFound, match="expired"):
        store.finish_enrollment(eid, succeeded=True, now=T0)  # expires_at is exclusive
    assert store.get_enrollment(eid).state == "expired"  # type: ignore[union-attr]
    assert store.get_host("h1").status is HostStatus.REGISTERED  # type: ignore[union-attr]
    with pytest.raises(EnrollmentNotFound):
        store.finish_enrollment(eid, succeeded=True, now=T0 - timedelta(hours=1))


def test_enrollment_unknown_and_newer_supersedes(store: Store) -> None:
    with pytest.raises(HostNotFound):
        store.create_enrollment(**enroll_kwargs("ghost"))
    with pytest.raises(EnrollmentNotFound):
        store.finish_enrollment("0" * 32, succeeded=True, now=T0)
    assert store.get_enrollment("0" * 32) is None

    store.register_host("h1", "gpu-a")
    old = store.create_enrollment(**enroll_kwargs("h1"))
    new = store.create_enrollment(**enroll_kwargs("h1"))
    assert old != new
    with pytest.raises(EnrollmentNotFound):
        store.finish_enrollment(old, succeeded=True, now=T0)
    assert store.finish_enrollment(new, succeeded=True, now=T0).status is HostStatus.ENROLLED


def test_enrollment_refuses_bad_input(store: Store) -> None:
    store.register_host("h1", "gpu-a")
    with pytest.raises(ValueError):
        store.create_enrollment(**{**enroll_kwargs("h1"), "secret_digest": b"short"})
    with pytest.raises(ValueError):
        store.create_enrollment(**enroll_kwargs("h1", expires_at=datetime(2025, 1, 1)))


def test_concurrent_finish_has_one_winner(store: Store) -> None:
    store.register_host("h1", "gpu-a")
    eid = store.create_enrollment(**enroll_kwargs("h1"))
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def finish() -> None:
        barrier.wait()
        try:
            store.finish_enrollment(eid, succeeded=True, now=T0)
            outcomes.append("ok")
        except EnrollmentNotFound:
            outcomes.append("refused")

    threads = [threading.Thread(target=finish) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] + ["refused"] * 7
    assert [e.kind for e in store.events("h1")].count("enrolled") == 1


# -- attestation ---------------------------------------------------------------


def test_record_attestation_history_status_and_events(store: Store) -> None:
    enrolled(store)
    t1, t2, t3, t4 = (T0 + timedelta(minutes=m) for m in (1, 2, 3, 4))

    rec = store.record_attestation(
        host_id="h1",
        challenge_id="c1",
        verdict=affirming(),
        appraised_at=t1,
        clock=None,
        boot_event=None,
    )
    assert (rec.host_id, rec.challenge_id, rec.appraised_at) == ("h1", "c1", t1)
    assert store.get_host("h1").status is HostStatus.TRUSTED  # type: ignore[union-attr]
    attest(store, t2, contraindicated(NONCE_MISMATCH, PCR_MISMATCH))
    attest(store, t3, contraindicated(PCR_MISMATCH))  # no status change: no event
    attest(store, t4, affirming())

    history = store.history("h1")
    assert [r.appraised_at for r in history] == [t4, t3, t2, t1]
    assert history[-1] == rec
    assert history[2].verdict == contraindicated(NONCE_MISMATCH, PCR_MISMATCH)
    assert history[2].verdict.tier is Tier.CONTRAINDICATED
    assert all(is_utc(r.appraised_at) for r in history)
    assert [r.appraised_at for r in store.history("h1", limit=2)] == [t4, t3]

    host = store.get_host("h1")
    assert host is not None
    assert host.status is HostStatus.TRUSTED
    assert host.last_attestation_at == t4 and host.last_reasons == ()

    changes = [(e.at, e.detail) for e in store.events("h1") if e.kind == "status_changed"]
    assert changes == [
        (t4, "untrusted -> trusted"),
        (t2, f"trusted -> untrusted: {NONCE_MISMATCH}"),
        (t1, "enrolled -> trusted"),
    ]


def test_last_reasons_follow_latest_result(store: Store) -> None:
    enrolled(store)
    attest(store, T0, contraindicated(NONCE_MISMATCH, PCR_MISMATCH))
    host = store.get_host("h1")
    assert host is not None
    assert host.status is HostStatus.UNTRUSTED
    assert host.last_reasons == (NONCE_MISMATCH, PCR_MISMATCH)
    assert store.list_hosts()[0].last_reasons == (NONCE_MISMATCH, PCR_MISMATCH)
    # Tiers other than affirming never make a host trusted.
    attest(store, T0 + timedelta(seconds=1), Verdict(Tier.WARNING, (PCR_MISMATCH,)))
    assert store.get_host("h1").status is HostStatus.UNTRUSTED  # type: ignore[union-attr]


def test_boot_events(store: Store) -> None:
    enrolled(store)
    clock = ClockState(clock=5000, reset_count=3, restart_count=0)
    attest(store, T0, affirming(), clock=clock, boot_event="reboot")
    attest(store, T0 + timedelta(seconds=1), affirming(), boot_event="restart")
    attest(store, T0 + timedelta(seconds=2), affirming(), boot_event="none")  # no event
    kinds = [e.kind for e in store.events("h1")]
    assert kinds == ["restart", "status_changed", "reboot", "enrolled", "registered"]
    assert store.events("h1")[2].detail == "reset_count=3 restart_count=0"
    assert [e.kind for e in store.events("h1", limit=1)] == ["restart"]


def test_last_clock_only_updated_with_a_clock(store: Store) -> None:
    enrolled(store)
    top = ClockState(clock=2**64 - 1, reset_count=2**32 - 1, restart_count=7)
    attest(store, T0, affirming(), clock=top)
    assert store.get_host("h1").last_clock == top  # type: ignore[union-attr]

    # An unauthenticated quote (no clock) keeps the old baseline.
    attest(store, T0 + timedelta(seconds=1), contraindicated(NONCE_MISMATCH), clock=None)
    assert store.get_host("h1").last_clock == top  # type: ignore[union-attr]

    newer = ClockState(clock=1, reset_count=0, restart_count=0)
    attest(store, T0 + timedelta(seconds=2), affirming(), clock=newer)
    assert store.get_host("h1").last_clock == newer  # type: ignore[union-attr]

    # Re-enrollment (perhaps a new TPM) drops the baseline.
    eid = store.create_enrollment(**enroll_kwargs("h1"))
    assert store.finish_enrollment(eid, succeeded=True, now=T0).last_clock is None


def test_record_attestation_refusals_write_nothing(store: Store) -> None:
    with pytest.raises(HostNotFound):
        attest(store, T0, affirming())
    enrolled(store)
    before = (store.get_host("h1"), store.events("h1"))
    with pytest.raises(ValueError):
        attest(store, datetime(2025, 1, 1), affirming())  # naive on purpose
    with pytest.raises(ValueError):
        ClockState(clock=-1, reset_count=0, restart_count=0)
    assert (store.get_host("h1"), store.events("h1")) == before
    assert store.history("h1") == []


def test_failed_write_leaves_nothing_behind(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    enrolled(store)
    before = (store.get_host("h1"), store.events("h1"))

    def explode(*_args: object) -> None:
        raise RuntimeError("disk full")

    # Fails after the result row and the host update are already in the session.
    monkeypatch.setattr(store_module, "add_event", explode)
    with pytest.raises(RuntimeError):
        attest(store, T0, affirming(), clock=ClockState(1, 1, 1), boot_event="reboot")
    assert store.history("h1") == []
    assert (store.get_host("h1"), store.events("h1")) == before


def test_concurrent_attestations(store: Store) -> None:
    enrolled(store)
    n = 16

    def attest_one(i: int) -> None:
        verdict = affirming() if i % 2 else contraindicated(PCR_MISMATCH)
        attest(store, T0 + timedelta(seconds=i), verdict, clock=ClockState(i, 0, 0))

    threads = [threading.Thread(target=attest_one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.history("h1", limit=100)) == n


# -- reference values ----------------------------------------------------------


def test_reference_set_replace_and_refusals(store: Store) -> None:
    assert store.get_reference("gpu-a") is None
    first = store.set_reference(
        "gpu-a", {"sha256": {0: b"\x00" * 32, 7: b"\x07" * 32}, "sha1": {0: b"\x01" * 20}}, now=T0
    )
    assert store.get_reference("gpu-a") == first
    assert first.pcrs["sha256"][7] == b"\x07" * 32

    later = T0 + timedelta(days=1)
    second = store.set_reference("gpu-a", {"sha384": {4: b"\x04" * 48}}, now=later)
    got = store.get_reference("gpu-a")
    assert got == second
    assert got is not None
    assert got.pcrs == {"sha384": {4: b"\x04" * 48}}  # the old banks are gone
    assert got.updated_at == later and is_utc(got.updated_at)

    refused: list[dict[str, dict[int, bytes]]] = [
        {},
        {"sha256": {}},
        {"sha257": {0: b"\x00" * 32}},
        {"sha256": {24: b"\x00" * 32}},
        {"sha256": {0: b"\x00" * 20}},
    ]
    for bad in refused:
        with pytest.raises(ValueError):
            store.set_reference("gpu-a", bad, now=later + timedelta(days=1))
    assert store.get_reference("gpu-a") == second
    store.set_reference("gpu-b", {"sha256": {0: b"\x00" * 32}}, now=T0)
    assert store.get_reference("gpu-a") == second


# -- schema, restart, time -----------------------------------------------------


def test_restart_keeps_data_and_migrations_are_idempotent(backend: Backend) -> None:
    with backend.open() as first:
        enrolled(first)
        attest(first, T0, affirming(), clock=ClockState(9, 1, 0))
        host = first.get_host("h1")
    for _ in range(2):
        with backend.open() as again:
            assert again.get_host("h1") == host
            assert len(again.history("h1")) == 1
            engine = again._engine
            with engine.connect() as conn:
                versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
                assert [v[0] for v in versions] == ["0011"]
                assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_timestamps_are_utc_aware(store: Store) -> None:
    enrolled(store)
    plus_two = timezone(timedelta(hours=2))
    local = T0.astimezone(plus_two)
    attest(store, local, affirming())
    (rec,) = store.history("h1")
    assert rec.appraised_at == T0 and rec.appraised_at.tzinfo is UTC
    host = store.get_host("h1")
    assert host is not None
    for value in (host.registered_at, host.enrolled_at, host.last_attestation_at):
        assert is_utc(value)
    assert all(is_utc(e.at) for e in store.events("h1"))
    ref = store.set_reference("gpu-a", {"sha256": {0: DIGEST}}, now=local)
    assert ref.updated_at.tzinfo is UTC
    assert store.get_reference("gpu-a").updated_at.tzinfo is UTC  # type: ignore[union-attr]


def test_open_refuses_unusable_urls(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Store.open("sqlite://")
    with pytest.raises(ValueError):
        Store.open(f"sqlite:///{tmp_path}/x.db", schema="s")
    with pytest.raises(ValueError):
        Store.open("postgresql+psycopg://u@127.0.0.1:1/db", schema="bad;name")


def test_sqlite_pragmas(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path}/s.db") as s, s._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        with pytest.raises(sa.exc.IntegrityError):
            conn.exec_driver_sql(
                "INSERT INTO host_events (host_id, at, kind, detail)"
                " VALUES ('ghost', '2025-01-01 00:00:00', 'x', '')"
            )
