"""WatchHosts and `weightgate hosts watch|show` against a real verifier on loopback.

Changes are made for real (registration, enrollment and attestation with a
swtpm, quarantine through the API) and must arrive on the watch with the status
they replaced; refusals and openings must be in the audit log.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.collectors.tpm import Tpm
from tests.integration.test_attestation_flow import REFERENCE, Stream, enroll, evidence_for
from tests.store_fixtures import add_model, model_kwargs
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier import pki
from verifier.cli import main
from verifier.config import TlsConfig, config_for_demo
from verifier.identity import Role
from weightgate.v1 import common_pb2, operator_pb2, operator_pb2_grpc

GROUP = "watch-lab"
NODE = "watch-node"  # enrolled with the module's swtpm
WAIT = 15.0
Change = operator_pb2.HostChange
STATUS = operator_pb2.HostStatus


@pytest.fixture(scope="module")
def tpm_process(swtpm_factory_module: Any) -> Any:
    return swtpm_factory_module()


@pytest.fixture(scope="module")
def tpm(tpm_process: Any) -> Tpm:
    return Tpm(tpm_process.tcti)


@pytest.fixture(scope="module")
def verifier(
    tmp_path_factory: pytest.TempPathFactory, tpm_process: Any
) -> Iterator[VerifierHarness]:
    state = tmp_path_factory.mktemp("watch-verifier")
    with running_verifier(state, ek_ca_certificates=tpm_process.ek_ca_certificates) as harness:
        yield harness


@pytest.fixture(autouse=True)
def _no_connection_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEIGHTGATE_INSECURE", raising=False)
    monkeypatch.delenv("WEIGHTGATE_VERIFIER", raising=False)


class Watcher:
    """A WatchHosts stream read by a background thread, so a test can wait with a timeout."""

    def __init__(
        self,
        stub: operator_pb2_grpc.OperatorStub,
        host_ids: Sequence[str] = (),
        *,
        include_current: bool = True,
    ) -> None:
        request = operator_pb2.WatchHostsRequest(
            host_ids=list(host_ids), include_current=include_current
        )
        self._call = stub.WatchHosts(request)
        self._inbox: queue.Queue[Change | grpc.RpcError | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for change in self._call:
                self._inbox.put(change)
        except grpc.RpcError as exc:
            self._inbox.put(exc)
            return
        self._inbox.put(None)

    def next(self, timeout: float = WAIT) -> Change:
        item = self._inbox.get(timeout=timeout)
        assert isinstance(item, Change), f"the watch ended: {item}"
        return item

    def nothing_within(self, seconds: float) -> bool:
        try:
            self._inbox.get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def ended(self, timeout: float = WAIT) -> grpc.RpcError:
        """The error that ended the stream (changes before it are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            item = self._inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(item, grpc.RpcError):
                return item
            assert item is not None, "the stream ended with OK"

    def close(self) -> None:
        self._call.cancel()


def wait_until(condition: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def no_watchers(verifier: VerifierHarness) -> None:
    """Wait until the watches of earlier tests are gone (a cancel ends them soon, not at once)."""
    wait_until(lambda: verifier.host_watch.watcher_count == 0, "earlier watches to end")


def register(verifier: VerifierHarness, host_id: str) -> None:
    verifier.operator.RegisterHost(operator_pb2.RegisterHostRequest(host_id=host_id, group=GROUP))


def quarantine(verifier: VerifierHarness, host_id: str, reason: str) -> None:
    verifier.operator.QuarantineHost(
        operator_pb2.QuarantineHostRequest(host_id=host_id, reason=reason)
    )


def audit_head(verifier: VerifierHarness) -> int:
    head_seq, _ = verifier.store.audit_head()
    return int(head_seq)


def audited_since(verifier: VerifierHarness, seq: int) -> list[Any]:
    return list(verifier.store.audit_records(after_seq=seq, limit=1000))


@pytest.fixture(scope="module")
def node(verifier: VerifierHarness, tpm: Tpm) -> tuple[bytes, list[Change]]:
    """NODE registered and enrolled while a watcher of every host looked on:
    its AK name, and the changes the watcher saw."""
    values = tpm.read_pcrs(REFERENCE)
    verifier.store.set_reference(GROUP, values, now=datetime.now(UTC))
    hosts = verifier.operator.ListHosts(operator_pb2.ListHostsRequest()).hosts
    watcher = Watcher(verifier.operator)
    for _ in hosts:
        assert watcher.next().cause == "snapshot"  # after these, the watch is open
    register(verifier, NODE)
    ak_name = enroll(verifier, tpm, NODE)
    seen = [watcher.next(), watcher.next()]
    watcher.close()
    return ak_name, seen


@pytest.fixture
def stream(verifier: VerifierHarness, node: tuple[bytes, list[Change]]) -> Iterator[Stream]:
    opened = Stream(verifier, NODE, node[0])
    yield opened
    opened.close()


def test_registration_and_enrollment_are_published(node: tuple[bytes, list[Change]]) -> None:
    registered, enrolled = node[1]
    assert (registered.host.host_id, registered.cause) == (NODE, "registered")
    assert registered.previous_status == operator_pb2.HOST_STATUS_UNSPECIFIED
    assert registered.host.status == operator_pb2.HOST_STATUS_REGISTERED
    assert (enrolled.host.host_id, enrolled.cause) == (NODE, "enrolled")
    assert enrolled.previous_status == operator_pb2.HOST_STATUS_REGISTERED
    assert enrolled.host.status == operator_pb2.HOST_STATUS_ENROLLED


def test_snapshot_then_each_attestation_that_flips_trust(
    verifier: VerifierHarness, tpm: Tpm, stream: Stream
) -> None:
    watcher = Watcher(verifier.operator, [NODE])
    try:
        snapshot = watcher.next()
        assert (snapshot.host.host_id, snapshot.cause) == (NODE, "snapshot")
        assert snapshot.previous_status == operator_pb2.HOST_STATUS_UNSPECIFIED
        before = snapshot.host.status
        assert stream.answer(evidence_for(tpm, stream.next_challenge())).tier == (
            common_pb2.TIER_AFFIRMING
        )
        if before != operator_pb2.HOST_STATUS_TRUSTED:
            trusted = watcher.next()
            assert (trusted.previous_status, trusted.host.status) == (
                before,
                operator_pb2.HOST_STATUS_TRUSTED,
            )
        # Trusted again: no change, nothing published.
        assert stream.answer(evidence_for(tpm, stream.next_challenge())).tier == (
            common_pb2.TIER_AFFIRMING
        )
        wrong_nonce = evidence_for(
            tpm, stream.next_challenge(), qualifying_data=secrets.token_bytes(32)
        )
        verdict = stream.answer(wrong_nonce)
        assert verdict.tier == common_pb2.TIER_CONTRAINDICATED
        flipped = watcher.next()
        assert flipped.cause == "attestation"
        assert flipped.previous_status == operator_pb2.HOST_STATUS_TRUSTED
        assert flipped.host.status == operator_pb2.HOST_STATUS_UNTRUSTED
        assert [r.code for r in flipped.host.reasons] == ["tpm.quote.nonce_mismatch"]
        assert flipped.at == verdict.appraised_at
        stream.answer(evidence_for(tpm, stream.next_challenge()))
        back = watcher.next()
        assert (back.previous_status, back.host.status) == (
            operator_pb2.HOST_STATUS_UNTRUSTED,
            operator_pb2.HOST_STATUS_TRUSTED,
        )
    finally:
        watcher.close()


def test_quarantine_is_a_change_from_the_previous_status(verifier: VerifierHarness) -> None:
    register(verifier, "watch-q")
    watcher = Watcher(verifier.operator, ["watch-q"])
    try:
        assert watcher.next().host.status == operator_pb2.HOST_STATUS_REGISTERED  # snapshot
        quarantine(verifier, "watch-q", "incident 4711")
        change = watcher.next()
        assert (change.host.host_id, change.cause) == ("watch-q", "quarantine")
        assert change.previous_status == operator_pb2.HOST_STATUS_REGISTERED
        assert change.host.status == operator_pb2.HOST_STATUS_QUARANTINED
        assert [(r.code, r.detail) for r in change.host.reasons] == [
            ("host.quarantined", "incident 4711")
        ]
        # Quarantined again: the status does not move, so nothing is published.
        quarantine(verifier, "watch-q", "still")
        assert watcher.nothing_within(0.5)
    finally:
        watcher.close()


def test_a_watch_of_some_hosts_sees_only_those(verifier: VerifierHarness) -> None:
    register(verifier, "watch-a")
    register(verifier, "watch-b")
    watcher = Watcher(verifier.operator, ["watch-a"])
    try:
        assert watcher.next().host.host_id == "watch-a"  # the snapshot holds only watch-a
        quarantine(verifier, "watch-b", "not watched")
        quarantine(verifier, "watch-a", "watched")
        change = watcher.next()
        assert (change.host.host_id, change.cause) == ("watch-a", "quarantine")
    finally:
        watcher.close()


def test_opening_a_watch_is_audited_once(verifier: VerifierHarness) -> None:
    register(verifier, "watch-audited")
    seq = audit_head(verifier)
    watcher = Watcher(verifier.operator, ["watch-audited"])
    try:
        watcher.next()  # the snapshot: the watch is open
        quarantine(verifier, "watch-audited", "audit test")
        watcher.next()
    finally:
        watcher.close()
    records = [r for r in audited_since(verifier, seq) if r.action == "WatchHosts"]
    assert [(r.outcome, dict(r.target), dict(r.details)) for r in records] == [
        ("ok", {"host_ids": "watch-audited"}, {"include_current": "true"})
    ]


@pytest.mark.parametrize(
    ("host_ids", "code", "reason"),
    [
        (["no-such-host"], grpc.StatusCode.NOT_FOUND, "host_ids: no host 'no-such-host'"),
        (["bad id!"], grpc.StatusCode.INVALID_ARGUMENT, "host_ids: 'bad id!' is not a host id"),
        ([f"h{i}" for i in range(1001)], grpc.StatusCode.INVALID_ARGUMENT,
         "host_ids: at most 1000"),
    ],
)  # fmt: skip
def test_bad_host_ids_are_refused_audited_and_leave_no_watcher(
    verifier: VerifierHarness, host_ids: list[str], code: grpc.StatusCode, reason: str
) -> None:
    no_watchers(verifier)
    seq = audit_head(verifier)
    refused = Watcher(verifier.operator, host_ids).ended()
    assert refused.code() == code
    assert (refused.details() or "").startswith(reason)
    records = audited_since(verifier, seq)
    assert [(r.action, r.outcome) for r in records] == [("WatchHosts", code.name)]
    assert records[0].details["reason"] == refused.details()
    assert verifier.host_watch.watcher_count == 0


def test_cancelling_a_watch_unsubscribes_it(verifier: VerifierHarness) -> None:
    register(verifier, "watch-cancel")
    no_watchers(verifier)
    watcher = Watcher(verifier.operator, ["watch-cancel"])
    watcher.next()
    assert verifier.host_watch.watcher_count == 1
    watcher.close()
    wait_until(lambda: verifier.host_watch.watcher_count == 0, "the watcher to go")


def test_a_watch_that_falls_behind_ends_with_resource_exhausted(
    verifier: VerifierHarness,
) -> None:
    register(verifier, "watch-flood")
    watcher = Watcher(verifier.operator, ["watch-flood"])
    try:
        watcher.next()  # subscribed
        record = verifier.store.get_host("watch-flood")
        hub = verifier.host_watch

        def flood() -> None:
            # All in one turn of the loop: the stream cannot drain any of them.
            for _ in range(300):
                hub.publish(record, previous=None, cause="flood", at=datetime.now(UTC))

        verifier.in_loop(flood)
        ended = watcher.ended()
        assert ended.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "fell behind" in (ended.details() or "")
    finally:
        watcher.close()


def test_hosts_watch_json_prints_a_line_per_change_and_ctrl_c_exits_0(
    verifier: VerifierHarness,
) -> None:
    register(verifier, "watch-cli")
    no_watchers(verifier)
    cli = CliWatch(verifier.address, "watch-cli", "--no-current", "--json")
    try:
        wait_until(lambda: verifier.host_watch.watcher_count == 1, "the CLI's watch")
        quarantine(verifier, "watch-cli", "cli test")
        line = json.loads(cli.line())
        assert line["host"] == "watch-cli"
        assert (line["previous_status"], line["status"]) == ("registered", "quarantined")
        assert line["cause"] == "quarantine"
        assert line["reasons"] == [{"code": "host.quarantined", "detail": "cli test"}]
        cli.process.send_signal(signal.SIGINT)
        assert cli.process.wait(timeout=WAIT) == 0
    finally:
        cli.kill()


def test_hosts_show_prints_site_releases_reasons_and_history(
    verifier: VerifierHarness,
    tpm: Tpm,
    stream: Stream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = verifier.store
    now = datetime.now(UTC)
    store.set_site("watch-dc", cleared_risk_tiers=["high"], description="", now=now)
    store.assign_host_to_site(NODE, "watch-dc", now=now)
    digest = model_kwargs()["manifest_digest"]
    if store.get_model_version(digest) is None:
        add_model(store)
    stream.answer(
        evidence_for(tpm, stream.next_challenge(), qualifying_data=secrets.token_bytes(32))
    )
    # Released after the failing verdict, so that nothing revokes it before we look.
    store.create_release(
        host_id=NODE, manifest_digest=digest, lease_expires_at=now + timedelta(hours=1), now=now
    )
    argv = ["hosts", "show", NODE, "--verifier", verifier.address, "--insecure"]
    assert main([*argv, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["site"] == "watch-dc"
    assert [(r["model"], r["state"]) for r in document["releases"]] == [
        ("frontier:1.0", "released")
    ]
    assert [r["code"] for r in document["reasons"]] == ["tpm.quote.nonce_mismatch"]
    assert document["history"][0]["tier"] == "contraindicated"
    assert any(e["kind"] == "site_assigned" for e in document["events"])
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "site:    watch-dc" in text
    assert "frontier:1.0" in text
    assert "tpm.quote.nonce_mismatch" in text
    assert "status:  untrusted" in text
    stream.answer(evidence_for(tpm, stream.next_challenge()))  # trusted again


class CliWatch:
    """`weightgate hosts watch ARGS` in a subprocess; its stdout lines read with a timeout."""

    def __init__(self, address: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEIGHTGATE_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "verifier.cli", "hosts", "watch", *args,
             "--verifier", address, "--insecure"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def line(self, timeout: float = WAIT) -> str:
        return self._lines.get(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=WAIT)


def test_stopping_the_verifier_ends_watches_and_the_cli_says_the_watch_is_lost(
    tmp_path: Path,
) -> None:
    harness = VerifierHarness(config_for_demo(tmp_path, ek_ca_certificates=()))
    stopped = False
    try:
        register(harness, "watch-stop")
        cli = CliWatch(harness.address, "watch-stop")
        assert "watch-stop  - -> registered  snapshot" in cli.line()
        with grpc.insecure_channel(harness.address) as channel:
            watcher = Watcher(operator_pb2_grpc.OperatorStub(channel), ["watch-stop"])
            watcher.next()
            started = time.monotonic()
            harness.stop()
            stopped = True
            # Ended by the verifier at once, not cancelled after its 5 s grace period.
            assert time.monotonic() - started < 4.0
            ended = watcher.ended()
            assert ended.code() == grpc.StatusCode.UNAVAILABLE
            assert "stopping" in (ended.details() or "")
        assert cli.process.wait(timeout=WAIT) == 1
        assert cli.process.stderr is not None
        assert "lost the watch (UNAVAILABLE" in cli.process.stderr.read()
    finally:
        if not stopped:
            harness.stop()


# -- mutual TLS: who may watch ---------------------------------------------------------


@pytest.fixture(scope="module")
def tls_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VerifierHarness, Any]]:
    directory = tmp_path_factory.mktemp("watch-pki") / "ca"
    pki.init_ca(directory)
    clients = {
        "viewer": pki.issue_operator(directory, "vic.viewer", [Role.VIEWER]),
        "agent": pki.issue_agent(directory, "watch-agent-host"),
    }
    server = pki.issue_server(directory, "verifier", ["127.0.0.1"])
    tls = TlsConfig(
        certificate=server.certificate,
        private_key=server.private_key,
        client_ca=directory / pki.CA_CERTIFICATE,
    )
    ca = (directory / pki.CA_CERTIFICATE).read_bytes()
    with running_verifier(
        tmp_path_factory.mktemp("watch-tls"), ek_ca_certificates=(), insecure=False, tls=tls
    ) as harness:
        channels = {
            who: grpc.secure_channel(
                harness.address,
                grpc.ssl_channel_credentials(
                    root_certificates=ca,
                    private_key=files.private_key.read_bytes(),
                    certificate_chain=files.certificate.read_bytes(),
                ),
            )
            for who, files in clients.items()
        }
        yield harness, channels
        for channel in channels.values():
            channel.close()


def test_an_agent_may_not_watch_and_the_refusal_is_audited(
    tls_setup: tuple[VerifierHarness, Any],
) -> None:
    harness, channels = tls_setup
    seq = audit_head(harness)
    refused = Watcher(operator_pb2_grpc.OperatorStub(channels["agent"])).ended()
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (refused.details() or "").startswith("authz.denied: ")
    records = audited_since(harness, seq)
    assert [(r.actor, r.action, r.outcome) for r in records] == [
        ("watch-agent-host", "WatchHosts", "PERMISSION_DENIED")
    ]
    assert harness.host_watch.watcher_count == 0


def test_a_viewer_may_watch_and_the_opening_names_them(
    tls_setup: tuple[VerifierHarness, Any],
) -> None:
    harness, channels = tls_setup
    harness.store.register_host("watch-seen", "g")
    seq = audit_head(harness)
    watcher = Watcher(operator_pb2_grpc.OperatorStub(channels["viewer"]), ["watch-seen"])
    try:
        assert watcher.next().host.host_id == "watch-seen"
    finally:
        watcher.close()
    records = audited_since(harness, seq)
    assert [(r.actor, r.action, r.outcome) for r in records] == [("vic.viewer", "WatchHosts", "ok")]
