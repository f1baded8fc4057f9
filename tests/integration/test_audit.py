"""The operators' audit log: the hash chain, the store on SQLite and PostgreSQL, every
Operator RPC recorded over real gRPC (plaintext and mutual TLS), and `weightgate audit`."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from tests.store_fixtures import T0
from tests.tls_material import CertificateAuthority
from tests.verifier_harness import InsecureCli, VerifierHarness, running_verifier
from verifier.audit.chain import (
    GENESIS,
    OK,
    AuditChainBroken,
    encode,
    record_hash,
    verify_chain,
)
from verifier.audit.recorder import AUDIT_UNAVAILABLE
from verifier.config import TlsConfig
from verifier.store import Store
from weightgate.v1 import operator_pb2, operator_pb2_grpc

RPC_TIMEOUT = 10.0
OPERATOR = operator_pb2.DESCRIPTOR.services_by_name["Operator"]


def _append(store: Store, n: int, *, actor: str = "alice") -> None:
    store.append_audit(
        at=T0 + timedelta(microseconds=n),
        actor=actor,
        action="RegisterHost",
        target={"host_id": f"h{n}"},
        outcome=OK,
        details={"group": "g", "note": "ünïcode"},
    )


def _update(store: Store, statement: str, **params: object) -> None:
    with store._engine.begin() as conn:
        conn.execute(sa.text(statement), params)


# -- the chain itself ------------------------------------------------------------------


def test_encoding_is_pinned() -> None:
    """The v1 encoding, byte for byte: changing it silently would orphan every stored chain."""
    fields: dict[str, Any] = {
        "seq": 1,
        "at": datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "actor": "operator",
        "action": "RegisterHost",
        "target": {"host_id": "h1"},
        "outcome": "ok",
        "details": {"group": "g"},
        "prev_hash": GENESIS,
    }
    encoded = encode(**fields)
    assert encoded.startswith(b"weightgate.audit.v1\x00" + (1).to_bytes(8, "big"))
    assert b'\x00\x00\x00\x10{"host_id":"h1"}' in encoded
    assert encoded.endswith(b'\x00\x00\x00\x0d{"group":"g"}' + GENESIS)
    assert record_hash(**fields).hex() == PINNED_HASH
    # Key order does not matter; an offset-aware time in another zone is the same instant.
    plus_one = fields | {
        "target": {"host_id": "h1"},
        "at": fields["at"].astimezone(timezone(timedelta(hours=1))),
    }
    assert record_hash(**plus_one).hex() == PINNED_HASH
    # Length prefixes: moving a character between fields changes the hash.
    assert record_hash(**fields | {"actor": "operatorR", "action": "egisterHost"}) != bytes.fromhex(
        PINNED_HASH
    )
    with pytest.raises(ValueError, match="timezone-aware"):
        encode(**fields | {"at": datetime(2025, 3, 1)})


PINNED_HASH = "b4e49a94791f803f06917c74e5096d7acf35a0dc700a518ec431265ce3b7ada4"


# -- the store -----------------------------------------------------------------------


def test_append_and_read(store: Store) -> None:
    assert store.audit_head() == (0, GENESIS)
    assert store.audit_records() == []
    for n in range(1, 6):
        _append(store, n)
    records = store.audit_records()
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == GENESIS
    assert records[0].details == {"group": "g", "note": "ünïcode"}
    assert records[0].at == T0 + timedelta(microseconds=1)
    assert store.audit_head() == (5, records[-1].hash)
    assert verify_chain(records, head=store.audit_head()) == 5
    assert [r.seq for r in store.audit_records(after_seq=2, limit=2)] == [3, 4]
    assert [r.seq for r in store.audit_records(limit=2, newest=True)] == [4, 5]
    # A run that starts later verifies from its predecessor.
    assert verify_chain(records[2:], start=(2, records[1].hash)) == 3
    with pytest.raises(ValueError, match="limit"):
        store.audit_records(limit=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.append_audit(
            at=datetime(2025, 1, 1),
            actor="a",
            action="x",
            target={},
            outcome=OK,
            details={},
        )


@pytest.mark.parametrize(
    ("column", "value"),
    [("actor", "mallory"), ("outcome", "PERMISSION_DENIED"), ("details", '{"group": "other"}')],
)
def test_tampering_names_the_record(store: Store, column: str, value: str) -> None:
    for n in range(1, 6):
        _append(store, n)
    _update(store, f"UPDATE audit_records SET {column} = :v WHERE seq = 3", v=value)
    with pytest.raises(AuditChainBroken) as broken:
        verify_chain(store.audit_records(), head=store.audit_head())
    assert broken.value.seq == 3


def test_deleted_and_truncated_records_are_caught(store: Store) -> None:
    for n in range(1, 6):
        _append(store, n)
    head = store.audit_head()
    _update(store, "DELETE FROM audit_records WHERE seq = 5")
    with pytest.raises(AuditChainBroken, match="record 5: missing"):
        verify_chain(store.audit_records(), head=head)
    _update(store, "DELETE FROM audit_records WHERE seq = 2")
    with pytest.raises(AuditChainBroken, match="record 2: missing"):
        verify_chain(store.audit_records(), head=head)


def test_concurrent_appends_make_a_gap_free_chain(store: Store) -> None:
    threads, per_thread = 8, 15
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for n in range(per_thread):
                _append(store, n, actor=f"thread-{i}")
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    records = store.audit_records(limit=1000)
    assert [r.seq for r in records] == list(range(1, threads * per_thread + 1))
    assert verify_chain(records, head=store.audit_head()) == threads * per_thread


# -- over gRPC -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VerifierHarness]:
    with running_verifier(tmp_path_factory.mktemp("audit-verifier"), ek_ca_certificates=()) as v:
        yield v


def _records(verifier: VerifierHarness) -> list[Any]:
    return verifier.store.audit_records(limit=1000, newest=True)  # type: ignore[no-any-return]


def test_every_operator_rpc_is_recorded_once(verifier: VerifierHarness) -> None:
    """Walks the service descriptor: an RPC added without @audited fails here."""
    assert len(OPERATOR.methods) >= 14
    for method in OPERATOR.methods:
        before = verifier.store.audit_head()[0]
        request = operator_pb2.__dict__[method.input_type.name]()
        code = grpc.StatusCode.OK
        if method.server_streaming:
            # A watch stays open; its one record is written as it opens.
            stream = getattr(verifier.operator, method.name)(request, timeout=RPC_TIMEOUT)
            deadline = time.monotonic() + RPC_TIMEOUT
            while verifier.store.audit_head()[0] == before and time.monotonic() < deadline:
                time.sleep(0.01)
            stream.cancel()
        else:
            try:
                getattr(verifier.operator, method.name)(request, timeout=RPC_TIMEOUT)
            except grpc.RpcError as exc:
                code = exc.code()
        new = verifier.store.audit_records(after_seq=before)
        assert [r.action for r in new] == [method.name], method.name
        (record,) = new
        assert record.outcome == (OK if code is grpc.StatusCode.OK else code.name), method.name
        assert record.actor.startswith("insecure:ipv4:127.0.0.1:"), record.actor
    assert verify_chain(verifier.store.audit_records(limit=1000), head=verifier.store.audit_head())


def test_a_refused_request_writes_only_its_audit_record(verifier: VerifierHarness) -> None:
    hosts = verifier.store.list_hosts()
    before = verifier.store.audit_head()[0]
    with pytest.raises(grpc.RpcError) as refused:
        verifier.operator.RegisterHost(
            operator_pb2.RegisterHostRequest(host_id="bad id!", group="g"), timeout=RPC_TIMEOUT
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    (record,) = verifier.store.audit_records(after_seq=before)
    assert (record.action, record.outcome) == ("RegisterHost", "INVALID_ARGUMENT")
    assert record.target == {"host_id": "bad id!"}
    assert record.details["group"] == "g"
    assert record.details["reason"].startswith("host_id: expected letters")
    assert verifier.store.list_hosts() == hosts


def test_success_targets_and_no_secrets(verifier: VerifierHarness) -> None:
    before = verifier.store.audit_head()[0]
    verifier.operator.RegisterHost(
        operator_pb2.RegisterHostRequest(host_id="audited-1", group="g"), timeout=RPC_TIMEOUT
    )
    site_change = operator_pb2.SetSiteRequest(
        site=operator_pb2.Site(site_id="dc-a", cleared_risk_tiers=["high", "low"])
    )
    verifier.operator.ProposeChange(
        operator_pb2.ProposeChangeRequest(
            change=operator_pb2.ProposedChange(site=site_change), justification="new dc"
        ),
        timeout=RPC_TIMEOUT,
    )
    with pytest.raises(grpc.RpcError):
        verifier.operator.AddModelVersion(
            operator_pb2.AddModelVersionRequest(
                manifest=b"m", manifest_signature=b"s", wrapped_data_keys={"00": b"SECRET"}
            ),
            timeout=RPC_TIMEOUT,
        )
    register, site, model = verifier.store.audit_records(after_seq=before)
    assert (register.target, register.outcome) == ({"host_id": "audited-1"}, OK)
    assert (site.action, site.target) == ("ProposeChange", {"site_id": "dc-a"})
    # The plaintext harness needs no approvals, so the proposal applied at once,
    # in the transaction that wrote this record.
    assert site.details["kind"] == "site"
    assert site.details["justification"] == "new dc"
    assert site.details["result"] == "applied"
    assert model.target == {"manifest_sha256": hashlib.sha256(b"m").hexdigest()}
    assert "SECRET" not in json.dumps([dict(model.target), dict(model.details)])
    assert model.outcome == "INVALID_ARGUMENT"


def test_cli_list_and_verify_then_tamper(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEIGHTGATE_INSECURE", raising=False)
    monkeypatch.delenv("WEIGHTGATE_VERIFIER", raising=False)
    with running_verifier(tmp_path, ek_ca_certificates=()) as verifier:
        cli = InsecureCli(verifier, capsys)
        for host in ("c1", "c2", "c3"):
            verifier.operator.RegisterHost(
                operator_pb2.RegisterHostRequest(host_id=host, group="g"), timeout=RPC_TIMEOUT
            )
        code, out, _ = cli("audit", "list", "--json", "--limit", "2")
        assert code == 0
        listed = json.loads(out)
        assert [(r["seq"], r["action"], r["target"]) for r in listed] == [
            (2, "RegisterHost", {"host_id": "c2"}),
            (3, "RegisterHost", {"host_id": "c3"}),
        ]
        code, out, _ = cli("audit", "list")
        assert code == 0
        assert out.splitlines()[0].split() == ["SEQ", "AT", "ACTOR", "ACTION", "TARGET", "OUTCOME"]
        assert "host_id=c1" in out
        code, out, err = cli("audit", "verify")
        assert (code, err) == (0, "")
        # 3 + list + list + the checkpoint listing that verify makes first
        assert out.startswith("audit chain intact: 6 records, head 6 ")

        with verifier.store._engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit_records SET actor = 'mallory' WHERE seq = 2"))
        code, out, err = cli("audit", "verify")
        assert code == 1
        assert out == ""
        assert "audit chain BROKEN: audit record 2: hash does not match" in err

        code, _, err = cli("audit", "list", "--limit", "0")
        assert (code, err.strip()) == (2, "weightgate: --limit must be 1 to 1000")


def test_actor_is_the_client_certificate_cn_under_mtls(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path / "pki", "audit test CA")
    server = ca.issue_server("verifier")
    operator = ca.issue_client("alice.operator", roles=("viewer",))
    tls = TlsConfig(
        certificate=server.certificate, private_key=server.private_key, client_ca=ca.certificate
    )
    with running_verifier(
        tmp_path / "state", ek_ca_certificates=(), insecure=False, tls=tls
    ) as verifier:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca.certificate.read_bytes(),
            private_key=operator.private_key.read_bytes(),
            certificate_chain=operator.certificate.read_bytes(),
        )
        with grpc.secure_channel(verifier.address, credentials) as channel:
            stub = operator_pb2_grpc.OperatorStub(channel)
            stub.ListHosts(operator_pb2.ListHostsRequest(), timeout=RPC_TIMEOUT)
        (record,) = verifier.store.audit_records()
        assert (record.actor, record.action, record.outcome) == ("alice.operator", "ListHosts", OK)


def test_no_outcome_without_its_record(
    verifier: VerifierHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the record cannot be written the client gets INTERNAL, not the answer."""

    def unavailable(**_: object) -> None:
        raise sa.exc.OperationalError("INSERT", {}, Exception("database down"))

    monkeypatch.setattr(verifier.store, "append_audit", unavailable)
    for call in (
        lambda: verifier.operator.ListHosts(operator_pb2.ListHostsRequest(), timeout=RPC_TIMEOUT),
        lambda: verifier.operator.RegisterHost(
            operator_pb2.RegisterHostRequest(host_id="bad id!", group="g"), timeout=RPC_TIMEOUT
        ),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() is grpc.StatusCode.INTERNAL
        assert refused.value.details() == AUDIT_UNAVAILABLE
