"""Revoking client certificates, over real gRPC and mutual TLS with real CRL files.

`weightgate pki revoke` records a revocation and re-signs the CA's CRL; the
verifier reads the CRL named by ``[verifier.tls] client_crl`` on every call
(re-reading it when it changes), refuses revoked certificates, and refuses
every call while the CRL is unusable: fail closed.
"""

from __future__ import annotations

import datetime
import json
import os
import queue
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from tests.mtls import client_channels
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier import pki
from verifier.cli import main
from verifier.config import TlsConfig
from verifier.identity import Role
from verifier.pki_crl import CRL_FILE, revoke, write_crl
from weightgate.v1 import (
    attestation_pb2,
    attestation_pb2_grpc,
    enrollment_pb2,
    enrollment_pb2_grpc,
    operator_pb2,
    operator_pb2_grpc,
)

RPC_TIMEOUT = 10.0
STREAM_HOST, ENROLLING_HOST = "revocation-host-s", "revocation-host-e"
AK_NAME = b"\x00\x0b" + bytes(range(32))


@dataclass(frozen=True)
class Setup:
    directory: Path  # the CA's directory, where `pki revoke` writes ca.crl
    published: Path  # the verifier's client_crl: a copy, as on a real deployment
    clients: dict[str, pki.IssuedFiles]

    def publish(self, data: bytes | None = None) -> None:
        """Put the CA's current CRL (or ``data``) where the verifier reads it, atomically."""
        staged = self.published.with_suffix(".new")
        staged.write_bytes((self.directory / CRL_FILE).read_bytes() if data is None else data)
        os.replace(staged, self.published)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    base = tmp_path_factory.mktemp("revocation")
    directory = base / "ca"
    pki.init_ca(directory)
    clients = {
        "olga": pki.issue_operator(directory, "olga.operator", [Role.OPERATOR]),
        "lee": pki.issue_operator(directory, "lee.leaver", [Role.VIEWER]),
        "wes": pki.issue_operator(directory, "wes.watcher", [Role.VIEWER]),
        "enrolling_agent": pki.issue_agent(directory, ENROLLING_HOST),
        "streaming_agent": pki.issue_agent(directory, STREAM_HOST),
        "server": pki.issue_server(directory, "verifier", ["127.0.0.1"]),
    }
    write_crl(directory)
    done = Setup(directory, base / "published.crl", clients)
    done.publish()
    return done


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory, setup: Setup) -> Iterator[VerifierHarness]:
    tls = TlsConfig(
        certificate=setup.clients["server"].certificate,
        private_key=setup.clients["server"].private_key,
        client_ca=setup.directory / pki.CA_CERTIFICATE,
        client_crl=setup.published,
    )
    with running_verifier(
        tmp_path_factory.mktemp("revocation-verifier"),
        ek_ca_certificates=(),
        insecure=False,
        tls=tls,
    ) as harness:
        yield harness


@pytest.fixture(scope="module")
def channels(verifier: VerifierHarness, setup: Setup) -> Iterator[dict[str, grpc.Channel]]:
    clients = {who: files for who, files in setup.clients.items() if who != "server"}
    with client_channels(verifier.address, setup.directory, clients) as opened:
        yield opened


@pytest.fixture
def good_crl(setup: Setup) -> Iterator[None]:
    """Whatever a test publishes, the next one starts from the CA's own, current CRL."""
    yield
    write_crl(setup.directory)
    setup.publish()


def _list_hosts(channel: grpc.Channel) -> Any:
    stub = operator_pb2_grpc.OperatorStub(channel)
    return stub.ListHosts(operator_pb2.ListHostsRequest(), timeout=RPC_TIMEOUT)


def _refusal(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def _serial(files: pki.IssuedFiles) -> int:
    return x509.load_pem_x509_certificate(files.certificate.read_bytes()).serial_number


def test_pki_revoke_writes_a_crl_that_openssl_reads_and_the_ca_signed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "pki"
    assert main(["pki", "init", "--dir", str(directory)]) == 0
    assert main(["pki", "issue", "operator", "carol", "--role", "viewer", "--dir",
                 str(directory)]) == 0  # fmt: skip
    carol = x509.load_pem_x509_certificate((directory / "operator-carol.crt").read_bytes())
    argv = ["pki", "revoke", "--dir", str(directory), "--serial", f"{carol.serial_number:X}"]
    assert main([*argv, "--reason", "key-compromise", "--crl-days", "3"]) == 0
    assert f"revoked 'carol' serial {carol.serial_number:x}" in capsys.readouterr().out

    crl_path = directory / CRL_FILE
    text = subprocess.run(
        [_openssl(), "crl", "-in", str(crl_path), "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    listed = re.findall(r"Serial Number: ([0-9A-F]+)", text)
    assert [int(serial, 16) for serial in listed] == [carol.serial_number]
    assert "Key Compromise" in text
    verified = subprocess.run(
        [_openssl(), "crl", "-in", str(crl_path), "-noout", "-CAfile",
         str(directory / pki.CA_CERTIFICATE)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert "verify OK" in verified.stdout + verified.stderr
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    ca = x509.load_pem_x509_certificate((directory / pki.CA_CERTIFICATE).read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.next_update_utc is not None and crl.last_update_utc is not None
    assert crl.next_update_utc - crl.last_update_utc == datetime.timedelta(days=3)
    first = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number

    # `pki crl` re-signs it with the next number; the revocation stays.
    assert main(["pki", "crl", "--dir", str(directory)]) == 0
    again = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert again.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == first + 1
    assert again.get_revoked_certificate_by_serial_number(carol.serial_number) is not None
    for record in (*(directory / "issued").iterdir(), *(directory / "revoked").iterdir()):
        assert record.stat().st_mode & 0o777 == 0o600, record
    for records in (directory / "issued", directory / "revoked"):
        assert records.stat().st_mode & 0o777 == 0o700, records

    # Nothing unknown is revoked: a mistyped serial, another CA's certificate.
    other = tmp_path / "other"
    pki.init_ca(other)
    stranger = pki.issue_operator(other, "stranger", [Role.VIEWER])
    capsys.readouterr()
    for extra, message in (
        (["--serial", "abc123"], "not a certificate this CA issued"),
        (["--cert", str(stranger.certificate)], "not issued by the CA in"),
        (["--cert", str(directory / pki.CA_CERTIFICATE)], "that is the CA itself"),
    ):
        revoke_argv = ["pki", "revoke", "--dir", str(directory), "--reason", "superseded"]
        assert main([*revoke_argv, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert len(list((directory / "revoked").iterdir())) == 1


def test_pki_list_shows_issued_and_revoked_certificates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "pki"
    pki.init_ca(directory)
    dana = pki.issue_operator(directory, "dana", [Role.OPERATOR, Role.APPROVER])
    pki.issue_agent(directory, "gpu-node-3")
    revoke(directory, certificate=dana.certificate, reason="affiliation-changed", note="left")
    capsys.readouterr()
    assert main(["pki", "list", "--dir", str(directory)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "ROLES/HOST", "SERIAL", "NOT", "AFTER", "REVOKED"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"dana", "gpu-node-3"}
    assert rows["dana"][1:4] == ["operator", "approver,operator", f"{_serial(dana):x}"]
    assert rows["dana"][-1] == "affiliation-changed"
    assert rows["gpu-node-3"][1:3] == ["agent", "gpu-node-3"]
    assert rows["gpu-node-3"][-1] == "no"
    # The record outlives the certificate file, which is handed out and deleted here.
    dana.certificate.unlink()
    assert main(["pki", "list", "--dir", str(directory), "--json"]) == 0
    listed = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert listed["dana"]["revoked"]["reason"] == "affiliation-changed"
    assert listed["dana"]["revoked"]["note"] == "left"
    assert listed["gpu-node-3"]["revoked"] is None


def test_a_revoked_operator_is_refused_at_once_without_a_restart_and_it_is_audited(
    verifier: VerifierHarness, setup: Setup, channels: dict[str, grpc.Channel], good_crl: None
) -> None:
    _list_hosts(channels["lee"])  # admitted, on a connection that stays open
    revoke(
        setup.directory, certificate=setup.clients["lee"].certificate, reason="affiliation-changed"
    )
    setup.publish()
    before = verifier.store.audit_head()[0]
    refused = _refusal(lambda: _list_hosts(channels["lee"]))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details() == (
        f"authz.revoked: 'lee.leaver' (serial {_serial(setup.clients['lee']):x}) "
        "was revoked: affiliation-changed"
    )
    records = verifier.store.audit_records(after_seq=before)
    assert [(r.actor, r.action, r.outcome) for r in records] == [
        ("lee.leaver", "ListHosts", "PERMISSION_DENIED")
    ]
    assert records[0].details["reason"] == refused.details()
    # Everyone else keeps working.
    _list_hosts(channels["olga"])


def test_a_revoked_agent_is_refused_enrollment(
    verifier: VerifierHarness, setup: Setup, channels: dict[str, grpc.Channel], good_crl: None
) -> None:
    stub = enrollment_pb2_grpc.EnrollmentStub(channels["enrolling_agent"])
    request = enrollment_pb2.BeginEnrollmentRequest(
        host_id=ENROLLING_HOST, ek_public=b"ek", ak_public=b"ak"
    )
    # Before: past authorization (its bogus keys are refused for what they are).
    assert (
        not _refusal(lambda: stub.BeginEnrollment(request, timeout=RPC_TIMEOUT))
        .details()
        .startswith("authz.")
    )
    agent = setup.clients["enrolling_agent"]
    revoke(setup.directory, certificate=agent.certificate, reason="key-compromise")
    setup.publish()
    refused = _refusal(lambda: stub.BeginEnrollment(request, timeout=RPC_TIMEOUT))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details() == (
        f"authz.revoked: '{ENROLLING_HOST}' (serial {_serial(agent):x}) was revoked: key-compromise"
    )
    last = verifier.store.audit_records(limit=1, newest=True)[-1]
    assert (last.actor, last.action, last.outcome) == (
        ENROLLING_HOST,
        "BeginEnrollment",
        "PERMISSION_DENIED",
    )
    assert last.details["reason"] == refused.details()


def test_an_agent_revoked_mid_stream_is_cut_off_at_its_next_round(
    verifier: VerifierHarness, setup: Setup, channels: dict[str, grpc.Channel], good_crl: None
) -> None:
    _enrolled_host(verifier, STREAM_HOST)
    sent: queue.Queue[attestation_pb2.AgentMessage | None] = queue.Queue()

    def messages() -> Iterator[attestation_pb2.AgentMessage]:
        while (message := sent.get(timeout=RPC_TIMEOUT)) is not None:
            yield message

    stub = attestation_pb2_grpc.AttestationStub(channels["streaming_agent"])
    responses = stub.Attest(messages(), timeout=RPC_TIMEOUT)
    try:
        sent.put(
            attestation_pb2.AgentMessage(
                hello=attestation_pb2.Hello(host_id=STREAM_HOST, ak_name=AK_NAME)
            )
        )
        assert next(responses).WhichOneof("body") == "challenge"
        agent = setup.clients["streaming_agent"]
        revoke(setup.directory, certificate=agent.certificate, reason="cessation-of-operation")
        setup.publish()
        # The round in progress finishes (a bogus answer gets its verdict); the next does not start.
        sent.put(
            attestation_pb2.AgentMessage(
                evidence=attestation_pb2.Evidence(challenge_id="not-the-challenge")
            )
        )
        assert next(responses).WhichOneof("body") == "verdict"
        refused = _refusal(lambda: next(responses))
    finally:
        sent.put(None)
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith(f"authz.revoked: '{STREAM_HOST}' (serial ")
    last = verifier.store.audit_records(limit=1, newest=True)[-1]
    assert (last.actor, last.action, last.outcome) == (STREAM_HOST, "Attest", "PERMISSION_DENIED")
    assert last.details["reason"] == refused.details()


def test_a_watcher_revoked_mid_stream_is_sent_no_further_change(
    verifier: VerifierHarness, setup: Setup, channels: dict[str, grpc.Channel], good_crl: None
) -> None:
    verifier.store.register_host("watched-host", "revocation-group")
    stub = operator_pb2_grpc.OperatorStub(channels["wes"])
    changes = stub.WatchHosts(
        operator_pb2.WatchHostsRequest(host_ids=["watched-host"], include_current=True),
        timeout=RPC_TIMEOUT,
    )
    try:
        assert next(changes).cause == "snapshot"  # subscribed
        revoke(setup.directory, certificate=setup.clients["wes"].certificate, reason="superseded")
        setup.publish()
        operator_pb2_grpc.OperatorStub(channels["olga"]).QuarantineHost(
            operator_pb2.QuarantineHostRequest(host_id="watched-host", reason="test"),
            timeout=RPC_TIMEOUT,
        )
        refused = _refusal(lambda: next(changes))
    finally:
        changes.cancel()
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith("authz.revoked: 'wes.watcher' (serial ")
    # The change is published before the quarantine's own record is appended.
    records = verifier.store.audit_records(limit=2, newest=True)
    assert sorted((r.actor, r.action, r.outcome) for r in records) == [
        ("olga.operator", "QuarantineHost", "ok"),
        ("wes.watcher", "WatchHosts", "PERMISSION_DENIED"),
    ]
    (watch,) = [r for r in records if r.action == "WatchHosts"]
    assert watch.details["reason"] == refused.details()


@pytest.mark.parametrize("problem", ["another CA", "stale", "garbage", "missing"])
def test_an_unusable_crl_refuses_every_call_until_it_is_fixed(
    tmp_path: Path,
    verifier: VerifierHarness,
    setup: Setup,
    channels: dict[str, grpc.Channel],
    good_crl: None,
    problem: str,
) -> None:
    expected = {
        "another CA": "authz.crl_invalid: the client CRL .* not signed by the client CA; refusing",
        "stale": r"authz.crl_stale: the client CRL .* expired at .*`weightgate pki crl`.*refusing",
        "garbage": "authz.crl_invalid: the client CRL .* not a usable CRL",
        "missing": "authz.crl_unreadable: the client CRL .* cannot read it",
    }[problem]
    if problem == "another CA":
        # Same CA name as ours, other key: only the signature tells them apart.
        other = tmp_path / "other"
        pki.init_ca(other)
        write_crl(other)
        setup.publish((other / CRL_FILE).read_bytes())
    elif problem == "stale":
        yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
        write_crl(setup.directory, days=1, now=yesterday)
        setup.publish()
    elif problem == "garbage":
        setup.publish(b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    else:
        setup.published.unlink()
    before = verifier.store.audit_head()[0]
    refused = _refusal(lambda: _list_hosts(channels["olga"]))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert re.match(expected, refused.details()), refused.details()
    agent_refused = _refusal(
        lambda: enrollment_pb2_grpc.EnrollmentStub(channels["enrolling_agent"]).BeginEnrollment(
            enrollment_pb2.BeginEnrollmentRequest(host_id=ENROLLING_HOST), timeout=RPC_TIMEOUT
        )
    )
    assert re.match(expected, agent_refused.details()), agent_refused.details()
    outcomes = [(r.action, r.outcome) for r in verifier.store.audit_records(after_seq=before)]
    assert outcomes == [
        ("ListHosts", "PERMISSION_DENIED"),
        ("BeginEnrollment", "PERMISSION_DENIED"),
    ]
    # Fixed by re-signing and publishing: no restart.
    write_crl(setup.directory)
    setup.publish()
    _list_hosts(channels["olga"])


def _enrolled_host(verifier: VerifierHarness, host_id: str) -> None:
    """A registered host whose enrollment (AK name AK_NAME) succeeded, straight in the store."""
    store = verifier.store
    store.register_host(host_id, "revocation-group")
    now = datetime.datetime.now(datetime.UTC)
    enrollment_id = store.create_enrollment(
        host_id=host_id,
        ek_public=b"ek",
        ek_certificate=b"",
        ak_public=b"ak",
        ak_name=AK_NAME,
        secret_digest=bytes(32),
        expires_at=now + datetime.timedelta(minutes=5),
    )
    store.finish_enrollment(enrollment_id, succeeded=True, now=now)


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        pytest.skip("the openssl command is not installed")
    return found
