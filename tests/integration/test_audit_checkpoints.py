"""Signed audit checkpoints and audit search: the store on SQLite and PostgreSQL, the
Operator RPCs over real gRPC, the periodic signer, and `weightgate audit
checkpoint|verify|search|tail`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from google.protobuf.timestamp_pb2 import Timestamp

from tests.store_fixtures import T0
from tests.verifier_harness import InsecureCli, VerifierHarness, running_verifier
from verifier import audit_records_cli
from verifier.audit.chain import OK, recompute, verify_chain
from verifier.audit.checkpoint import (
    SignedCheckpoint,
    key_id,
    parse_statement,
    sign_checkpoint,
    verify_checkpoint,
)
from verifier.keystore import FileKeyStore
from verifier.store import Store
from verifier.store.audit_search import AuditSearch
from weightgate.v1 import operator_pb2

RPC_TIMEOUT = 10.0


def _append(store: Store, n: int, *, actor: str, action: str, target: dict[str, str]) -> None:
    store.append_audit(
        at=T0 + timedelta(seconds=n),
        actor=actor,
        action=action,
        target=target,
        outcome=OK,
        details={},
    )


def _rewrite(store: Store, seq: int, actor: str) -> None:
    """Edit one record, then recompute every later hash and the head: a consistent forgery."""
    records = store.audit_records(limit=1000)
    with store._engine.begin() as conn:
        previous = records[seq - 2].hash if seq > 1 else bytes(32)
        for record in records[seq - 1 :]:
            edited = actor if record.seq == seq else record.actor
            forged = replace(record, actor=edited, prev_hash=previous)
            previous = recompute(forged)
            conn.execute(
                sa.text(
                    "UPDATE audit_records SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s"
                ),
                {"a": forged.actor, "p": forged.prev_hash, "h": previous, "s": record.seq},
            )
        conn.execute(sa.text("UPDATE audit_head SET hash = :h"), {"h": previous})


def _seqs(store: Store, search: AuditSearch, **options: Any) -> list[int]:
    return [r.seq for r in store.audit_records(limit=100, search=search, **options)]


# -- the store -------------------------------------------------------------------------------


def test_search_filters_each_narrow(store: Store) -> None:
    rows = [
        ("alice", "RegisterHost", {"host_id": "h1"}),
        ("bob", "RegisterHost", {"host_id": "h2"}),
        ("alice", "QuarantineHost", {"host_id": "h2"}),
        ("alice", "ProposeChange", {"host_id": "h2", "site_id": "dc-1"}),
        ("carol", "ListHosts", {}),
    ]
    for n, (actor, action, target) in enumerate(rows, start=1):
        _append(store, n, actor=actor, action=action, target=target)
    assert _seqs(store, AuditSearch()) == [1, 2, 3, 4, 5]
    assert _seqs(store, AuditSearch(actor="alice")) == [1, 3, 4]
    assert _seqs(store, AuditSearch(actor="alic")) == []  # exact, not a prefix
    assert _seqs(store, AuditSearch(action="RegisterHost")) == [1, 2]
    assert _seqs(store, AuditSearch(target={"host_id": "h2"})) == [2, 3, 4]
    assert _seqs(store, AuditSearch(target={"host_id": "h2", "site_id": "dc-1"})) == [4]
    assert _seqs(store, AuditSearch(target={"site_id": "h2"})) == []  # the key matters too
    assert _seqs(store, AuditSearch(actor="alice", target={"host_id": "h2"})) == [3, 4]
    # [since, until): since inclusive, until exclusive.
    window = AuditSearch(since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=4))
    assert _seqs(store, window) == [2, 3]
    assert _seqs(store, AuditSearch(since=T0 + timedelta(seconds=5))) == [5]
    # Filters combine with paging: after a seq, or the newest ones.
    assert _seqs(store, AuditSearch(actor="alice"), after_seq=1) == [3, 4]
    newest = store.audit_records(limit=2, newest=True, search=AuditSearch(actor="alice"))
    assert [r.seq for r in newest] == [3, 4]


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"target": {"host id": "x"}}, "not a field name"),
        ({"target": {"a'); --": "x"}}, "not a field name"),
        ({"target": {f"k{i}": "v" for i in range(17)}}, "at most 16"),
        ({"since": T0, "until": T0}, "since must be before until"),
        ({"since": T0.replace(tzinfo=None)}, "timezone-aware"),
    ],
)
def test_bad_searches_are_refused(options: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        AuditSearch(**options)


def test_checkpoints_are_kept_newest_first(store: Store, tmp_path: Path) -> None:
    keys = FileKeyStore.create(tmp_path / "keys")
    assert store.latest_audit_checkpoint() is None
    made = []
    for n in range(1, 4):
        _append(store, n, actor="a", action="ListHosts", target={})
        size, head = store.audit_head()
        checkpoint = sign_checkpoint(
            tree_size=size,
            head_hash=head,
            signed_at=T0 + timedelta(seconds=n),
            sign=keys.sign,
            public_key=keys.signing_public_key(),
        )
        store.add_audit_checkpoint(checkpoint)
        made.append(checkpoint)
    assert store.audit_checkpoints() == made[::-1]
    assert store.audit_checkpoints(limit=1) == [made[-1]] == [store.latest_audit_checkpoint()]
    statement = verify_checkpoint(made[1], keys.signing_public_key()).statement
    assert (statement.tree_size, statement.signed_at) == (2, T0 + timedelta(seconds=2))
    with pytest.raises(ValueError, match="statement is 3 bytes"):
        store.add_audit_checkpoint(SignedCheckpoint(b"bad", b"sig"))
    assert len(store.audit_checkpoints()) == 3
    # Indexed columns come from the statement; they agree with it in the table.
    with store._engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT tree_size, key_id FROM audit_checkpoints")).all()
    assert sorted(r[0] for r in rows) == [1, 2, 3]
    assert {bytes(r[1]) for r in rows} == {key_id(keys.signing_public_key())}


# -- over gRPC -------------------------------------------------------------------------------


@pytest.fixture
def verifier(tmp_path: Path) -> Iterator[VerifierHarness]:
    with running_verifier(tmp_path / "state", ek_ca_certificates=()) as v:
        yield v


def _public_key(verifier: VerifierHarness) -> Any:
    return FileKeyStore.open(verifier.config.keystore).signing_public_key()


def _register(verifier: VerifierHarness, *hosts: str) -> None:
    for host in hosts:
        verifier.operator.RegisterHost(
            operator_pb2.RegisterHostRequest(host_id=host, group="g"), timeout=RPC_TIMEOUT
        )


def test_sign_and_list_checkpoints(verifier: VerifierHarness) -> None:
    _register(verifier, "h1", "h2")
    signed = verifier.operator.SignAuditCheckpoint(
        operator_pb2.SignAuditCheckpointRequest(), timeout=RPC_TIMEOUT
    )
    checkpoint = SignedCheckpoint(signed.statement, signed.signature)
    statement = verify_checkpoint(checkpoint, _public_key(verifier)).statement
    # Two registrations; the signing call's own record comes after its checkpoint.
    assert statement.tree_size == signed.tree_size == 2
    assert statement.head_hash == signed.head_hash == verifier.store.audit_records()[1].hash
    assert statement.key_id == signed.key_id == key_id(_public_key(verifier))
    assert signed.signed_at.ToDatetime(tzinfo=UTC) == statement.signed_at
    second = verifier.operator.SignAuditCheckpoint(
        operator_pb2.SignAuditCheckpointRequest(), timeout=RPC_TIMEOUT
    )
    assert second.tree_size == 3
    listed = verifier.operator.ListAuditCheckpoints(
        operator_pb2.ListAuditCheckpointsRequest(), timeout=RPC_TIMEOUT
    )
    assert [c.tree_size for c in listed.checkpoints] == [3, 2]
    one = verifier.operator.ListAuditCheckpoints(
        operator_pb2.ListAuditCheckpointsRequest(limit=1), timeout=RPC_TIMEOUT
    )
    assert [c.statement for c in one.checkpoints] == [second.statement]
    actions = [r.action for r in verifier.store.audit_records()]
    assert (
        actions[2:] == ["SignAuditCheckpoint", "SignAuditCheckpoint"] + ["ListAuditCheckpoints"] * 2
    )


def test_the_verifier_refuses_to_sign_over_a_rewritten_log(verifier: VerifierHarness) -> None:
    _register(verifier, "h1", "h2", "h3")
    verifier.operator.SignAuditCheckpoint(
        operator_pb2.SignAuditCheckpointRequest(), timeout=RPC_TIMEOUT
    )
    _rewrite(verifier.store, 2, "mallory")
    assert verify_chain(verifier.store.audit_records(), head=verifier.store.audit_head()) == 4
    with pytest.raises(grpc.RpcError) as refused:
        verifier.operator.SignAuditCheckpoint(
            operator_pb2.SignAuditCheckpointRequest(), timeout=RPC_TIMEOUT
        )
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "audit record 3: hash differs" in (refused.value.details() or "")
    assert len(verifier.store.audit_checkpoints()) == 1


def _timestamp(moment: Any) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def test_search_over_grpc(verifier: VerifierHarness) -> None:
    _register(verifier, "s1", "s2")
    list_records = verifier.operator.ListAuditRecords
    found = list_records(
        operator_pb2.ListAuditRecordsRequest(target={"host_id": "s2"}), timeout=RPC_TIMEOUT
    )
    assert [(r.seq, r.action) for r in found.records] == [(2, "RegisterHost")]
    assert found.head_seq == 2
    by_action = list_records(
        operator_pb2.ListAuditRecordsRequest(action="ListAuditRecords"), timeout=RPC_TIMEOUT
    )
    assert [r.seq for r in by_action.records] == [3]  # the first search's own record
    first = verifier.store.audit_records()[0]
    window = operator_pb2.ListAuditRecordsRequest(
        since=_timestamp(first.at), until=_timestamp(first.at + timedelta(microseconds=1))
    )
    assert [r.seq for r in list_records(window, timeout=RPC_TIMEOUT).records] == [1]
    nobody = operator_pb2.ListAuditRecordsRequest(actor="nobody")
    assert list(list_records(nobody, timeout=RPC_TIMEOUT).records) == []
    for bad, reason in [
        (operator_pb2.ListAuditRecordsRequest(target={"host id": "x"}), "target: 'host id'"),
        (
            operator_pb2.ListAuditRecordsRequest(
                since=_timestamp(first.at), until=_timestamp(first.at)
            ),
            "since must be before until",
        ),
    ]:
        with pytest.raises(grpc.RpcError) as refused:
            list_records(bad, timeout=RPC_TIMEOUT)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert reason in (refused.value.details() or "")


def test_periodic_checkpoints_follow_the_head(tmp_path: Path) -> None:
    with running_verifier(
        tmp_path, ek_ca_certificates=(), audit_checkpoint_interval_seconds=0.05
    ) as verifier:
        time.sleep(0.3)
        assert verifier.store.audit_checkpoints() == []  # the empty log is not signed
        _register(verifier, "p1")
        latest = _wait_for_checkpoint(verifier, tree_size=1)
        time.sleep(0.3)  # six intervals, the head unmoved: nothing new
        assert verifier.store.audit_checkpoints() == [latest]
        _register(verifier, "p2", "p3")
        _wait_for_checkpoint(verifier, tree_size=3)
        for checkpoint in verifier.store.audit_checkpoints():
            verify_checkpoint(checkpoint, _public_key(verifier))


def _wait_for_checkpoint(verifier: VerifierHarness, *, tree_size: int) -> SignedCheckpoint:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        latest: SignedCheckpoint | None = verifier.store.latest_audit_checkpoint()
        if latest is not None and parse_statement(latest.statement).tree_size == tree_size:
            return latest
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint of {tree_size} records within 10 s")


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def cli(
    verifier: VerifierHarness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> InsecureCli:
    monkeypatch.delenv("WEIGHTGATE_INSECURE", raising=False)
    monkeypatch.delenv("WEIGHTGATE_VERIFIER", raising=False)
    return InsecureCli(verifier, capsys)


def _pem(verifier: VerifierHarness, path: Path) -> Path:
    path.write_bytes(
        _public_key(verifier).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_cli_checkpoint_then_verify_catches_edits(
    verifier: VerifierHarness, cli: InsecureCli, tmp_path: Path
) -> None:
    _register(verifier, "c1", "c2", "c3")
    kept, pem = tmp_path / "cp.json", _pem(verifier, tmp_path / "verifier.pub")
    code, out, err = cli("audit", "checkpoint", "--out", str(kept))
    assert (code, err) == (0, "")
    assert out.startswith(f"wrote {kept}: audit checkpoint of 3 records, head ")
    document = json.loads(kept.read_text())
    assert document["format"] == "weightgate.audit.checkpoint.v1"
    assert document["tree_size"] == 3
    code, _, err = cli("audit", "checkpoint", "--out", str(kept))
    assert (code, err.strip()) == (
        2,
        f"weightgate: {kept} exists; not overwriting a kept checkpoint",
    )
    code, out, _ = cli("audit", "checkpoint")  # printed, not written
    assert (code, json.loads(out)["tree_size"]) == (0, 4)  # the refusal asked for nothing

    verify = ("audit", "verify", "--checkpoint", str(kept), "--public-key", str(pem))
    code, out, err = cli(*verify)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("audit chain intact: 6 records")  # 3 + 2 signed + 1 listing
    assert lines[1] == (
        "checkpoints: 3 consistent with the log (2 listed by the verifier, 1 from files), "
        f"signatures verified with the pinned key {key_id(_public_key(verifier)).hex()}"
    )
    code, out, _ = cli("audit", "verify", "--checkpoint", str(kept))
    assert code == 0
    assert "WARNING: checkpoint signatures were NOT checked against a pinned key" in out

    # History rewritten under the checkpoints: the chain is consistent again, they are not.
    _rewrite(verifier.store, 2, "mallory")
    code, out, err = cli(*verify)
    assert (code, out) == (1, "")
    assert "audit chain BROKEN: audit record 3: hash differs from the checkpoint" in err
    assert "a record from 1 to 3 was changed after it was signed" in err

    # A one-byte edit without recomputing: the chain check names the record first.
    with verifier.store._engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_records SET actor = 'mallorz' WHERE seq = 2"))
    code, out, err = cli(*verify)
    assert (code, out) == (1, "")
    assert "audit chain BROKEN: audit record 2: hash does not match" in err


def test_cli_verify_refuses_bad_checkpoints(
    verifier: VerifierHarness, cli: InsecureCli, tmp_path: Path
) -> None:
    _register(verifier, "v1")
    kept, pem = tmp_path / "cp.json", _pem(verifier, tmp_path / "verifier.pub")
    assert cli("audit", "checkpoint", "--out", str(kept))[0] == 0
    document = json.loads(kept.read_text())

    forged = tmp_path / "forged.json"
    signature = bytearray.fromhex(document["signature"])
    signature[10] ^= 1
    forged.write_text(json.dumps(document | {"signature": signature.hex()}))
    code, _, err = cli("audit", "verify", "--checkpoint", str(forged), "--public-key", str(pem))
    assert code == 1
    assert f"checkpoint file {forged}: signature does not verify under the pinned key" in err

    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(document | {"tree_size": 99}))
    code, _, err = cli("audit", "verify", "--checkpoint", str(edited))
    assert code == 2
    assert "disagree with its signed statement" in err

    other = tmp_path / "other.pub"
    other_keys = FileKeyStore.create(tmp_path / "other-keys")
    other.write_bytes(
        other_keys.signing_public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    code, _, err = cli("audit", "verify", "--public-key", str(other))
    assert code == 1
    assert "checkpoint listed by the verifier: signature does not verify" in err


def test_cli_verify_catches_truncation(
    verifier: VerifierHarness, cli: InsecureCli, tmp_path: Path
) -> None:
    _register(verifier, "t1", "t2", "t3", "t4")
    kept = tmp_path / "cp.json"
    assert cli("audit", "checkpoint", "--out", str(kept))[0] == 0
    # Cut the tail below the checkpoint and move the head back with it.
    records = verifier.store.audit_records()
    with verifier.store._engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_records WHERE seq > 2"))
        conn.execute(sa.text("DELETE FROM audit_checkpoints"))
        conn.execute(sa.text("UPDATE audit_head SET seq = 2, hash = :h"), {"h": records[1].hash})
    code, out, err = cli("audit", "verify", "--checkpoint", str(kept))
    assert (code, out) == (1, "")
    # verify's own checkpoint listing became the new record 3, so 4 is the first missing.
    assert "audit record 4: missing: the checkpoint signed at" in err
    assert "covers 4 records, the log ends at 3 (truncated)" in err


def test_cli_search(verifier: VerifierHarness, cli: InsecureCli) -> None:
    _register(verifier, "q1", "q2")
    code, out, _ = cli("audit", "search", "--target", "host_id=q2", "--json")
    assert code == 0
    assert [(r["seq"], r["target"]) for r in json.loads(out)] == [(2, {"host_id": "q2"})]
    actor = verifier.store.audit_records()[0].actor
    code, out, _ = cli("audit", "search", "--actor", actor, "--action", "RegisterHost")
    assert code == 0
    table = out.splitlines()
    assert table[0].split() == ["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME"]
    assert [line.split()[0] for line in table[1:]] == ["1", "2"]
    code, out, _ = cli("audit", "search", "--actor", "nobody", "--action", "RegisterHost")
    assert (code, out.strip()) == (0, "no matching audit records")
    code, out, _ = cli("audit", "search", "--since", "2999-01-01")
    assert (code, out.strip()) == (0, "no matching audit records")
    code, out, _ = cli(
        "audit", "search", "--action", "RegisterHost", "--until", "2000-01-01T00:00Z"
    )
    assert (code, out.strip()) == (0, "no matching audit records")
    for argv, code_expected, message in [
        (("--since", "yesterday"), 2, "--since: 'yesterday' is not an ISO 8601"),
        (("--target", "host_id"), 2, "expected KEY=VALUE"),
        (("--target", "host id=x"), 1, "INVALID_ARGUMENT: target: 'host id'"),
        (("--limit", "0"), 2, "--limit must be 1 to 1000"),
    ]:
        code, _, err = cli("audit", "search", *argv)
        assert code == code_expected, argv
        assert message in err


def test_cli_tail_and_follow(
    verifier: VerifierHarness, cli: InsecureCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register(verifier, "f1", "f2", "f3")
    code, out, _ = cli("audit", "tail", "--limit", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["SEQ", "AT"]
    assert [line.split()[0] for line in lines[1:]] == ["2", "3"]

    pauses: list[float] = []

    def pause(seconds: float) -> None:
        # Between polls, someone else acts; on the third pause, Ctrl-C.
        pauses.append(seconds)
        if len(pauses) == 1:
            _register(verifier, "f4")
        elif len(pauses) == 2:
            _register(verifier, "f5")
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(audit_records_cli, "pause", pause)
    code, out, err = cli("audit", "tail", "--limit", "1", "--follow", "--interval", "0.5")
    assert (code, err) == (0, "")
    assert pauses == [0.5, 0.5, 0.5]
    rows = [line.split() for line in out.splitlines()[1:]]
    # The newest record, the tail's own first read, then the two registrations;
    # its polls are in the log but not printed.
    assert [(r[0], r[3]) for r in rows] == [
        ("4", "ListAuditRecords"),
        ("5", "ListAuditRecords"),
        ("6", "RegisterHost"),
        ("8", "RegisterHost"),
    ]
    assert rows[2][4] == "host_id=f4"
    polls = verifier.store.audit_records(search=AuditSearch(action="ListAuditRecords"))
    assert len(polls) == 4  # tail --limit 2, and the follower's first read and two polls
