"""Deny-by-default authorization over real gRPC and real mutual TLS.

Certificates come from the `weightgate pki` module (the evaluation CA): roles
and an agent's host ride in SAN URIs. Every RPC is in the authz table; people
cannot call agent methods, agents cannot call operator methods, an agent acts
only as its own host, and a refused operator call is audited and changes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.mtls import client_channels
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier import pki
from verifier.audit.chain import OK
from verifier.authz import ALLOWED_ROLES, method_name
from verifier.cli import main
from verifier.config import TlsConfig
from verifier.identity import Identity, Role, identity_from_pem
from weightgate.v1 import (
    attestation_pb2,
    attestation_pb2_grpc,
    enrollment_pb2,
    enrollment_pb2_grpc,
    operator_pb2,
    operator_pb2_grpc,
    weights_pb2,
    weights_pb2_grpc,
)

RPC_TIMEOUT = 10.0
HOST_A, HOST_B = "authz-host-a", "authz-host-b"
SERVICE_MODULES = (attestation_pb2, enrollment_pb2, operator_pb2, weights_pb2)


@dataclass(frozen=True)
class Pki:
    directory: Path
    server: pki.IssuedFiles
    clients: dict[str, pki.IssuedFiles]


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("authz-pki") / "ca"
    pki.init_ca(directory)
    clients = {
        "viewer": pki.issue_operator(directory, "vic.viewer", [Role.VIEWER]),
        "operator": pki.issue_operator(directory, "olga.operator", [Role.OPERATOR]),
        "auditor": pki.issue_operator(directory, "aud.auditor", [Role.AUDITOR]),
        "approver": pki.issue_operator(directory, "amy.approver", [Role.APPROVER]),
        "security-admin": pki.issue_operator(directory, "sam.admin", [Role.SECURITY_ADMIN]),
        "agent_a": pki.issue_agent(directory, HOST_A),
    }
    return Pki(directory, pki.issue_server(directory, "verifier", ["127.0.0.1"]), clients)


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory, material: Pki) -> Iterator[VerifierHarness]:
    tls = TlsConfig(
        certificate=material.server.certificate,
        private_key=material.server.private_key,
        client_ca=material.directory / pki.CA_CERTIFICATE,
    )
    with running_verifier(
        tmp_path_factory.mktemp("authz-verifier"), ek_ca_certificates=(), insecure=False, tls=tls
    ) as harness:
        yield harness


@pytest.fixture(scope="module")
def channels(verifier: VerifierHarness, material: Pki) -> Iterator[dict[str, grpc.Channel]]:
    with client_channels(verifier.address, material.directory, material.clients) as opened:
        yield opened


def _refusal(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value


def test_every_rpc_of_every_service_is_in_the_authz_table() -> None:
    methods = [
        method_name(service.full_name, method.name)
        for module in SERVICE_MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]
    assert len(methods) >= 18  # 14 operator RPCs and 4 agent ones when this was written
    unmapped = [m for m in methods if m not in ALLOWED_ROLES]
    assert not unmapped, f"RPCs missing from verifier.authz.ALLOWED_ROLES: {unmapped}"
    assert not set(ALLOWED_ROLES) - set(methods), "the table names RPCs that do not exist"
    for method, roles in ALLOWED_ROLES.items():
        agent_method = not method.startswith("/weightgate.v1.Operator/")
        assert roles, method
        assert (roles == {Role.AGENT}) if agent_method else (Role.AGENT not in roles), method


_ROLE_OF_CHANNEL = {
    "viewer": Role.VIEWER,
    "operator": Role.OPERATOR,
    "auditor": Role.AUDITOR,
    "approver": Role.APPROVER,
    "security-admin": Role.SECURITY_ADMIN,
    "agent_a": Role.AGENT,
}
_WALK_TIMEOUT = 2.0  # an admitted WatchHosts waits for changes: the deadline ends it


def _call_empty(channel: grpc.Channel, module: Any, service: Any, method: Any) -> str:
    """Call ``method`` with an empty request; the status details ("" when OK)."""
    grpc_module = __import__(f"{module.__name__}_grpc", fromlist=["_"])
    stub = getattr(grpc_module, f"{service.name}Stub")(channel)
    request = getattr(module, method.input_type.name)()
    call = getattr(stub, method.name)
    try:
        if method.client_streaming:
            list(call(iter([request]), timeout=_WALK_TIMEOUT))
        elif method.server_streaming:
            list(call(request, timeout=_WALK_TIMEOUT))
        else:
            call(request, timeout=_WALK_TIMEOUT)
    except grpc.RpcError as exc:
        return exc.details() or exc.code().name
    return ""


def test_every_role_is_refused_every_rpc_outside_its_row(
    channels: dict[str, grpc.Channel],
) -> None:
    """Walks every method of every service for every role: the table is the truth."""
    wrong: list[str] = []
    for who, role in _ROLE_OF_CHANNEL.items():
        for module in SERVICE_MODULES:
            for service in module.DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    full = method_name(service.full_name, method.name)
                    details = _call_empty(channels[who], module, service, method)
                    denied = details.startswith("authz.denied")
                    if denied == (role in ALLOWED_ROLES[full]):
                        wrong.append(f"{who} {full}: {details or 'OK'}")
    assert not wrong, "\n".join(wrong)


def test_viewer_cannot_register_a_host_and_the_refusal_is_audited(
    verifier: VerifierHarness, channels: dict[str, grpc.Channel]
) -> None:
    stub = operator_pb2_grpc.OperatorStub(channels["viewer"])
    before = verifier.store.audit_head()[0]
    refused = _refusal(
        lambda: stub.RegisterHost(
            operator_pb2.RegisterHostRequest(host_id="viewer-made", group="g"),
            timeout=RPC_TIMEOUT,
        )
    )
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith("authz.denied: 'vic.viewer' (viewer) may not call ")
    assert "/weightgate.v1.Operator/RegisterHost" in refused.details()
    assert verifier.store.get_host("viewer-made") is None
    records = verifier.store.audit_records(after_seq=before)
    assert [(r.actor, r.action, r.outcome) for r in records] == [
        ("vic.viewer", "RegisterHost", "PERMISSION_DENIED")
    ]
    assert records[0].details["reason"] == refused.details()
    # Reading is what a viewer may do.
    stub.ListHosts(operator_pb2.ListHostsRequest(), timeout=RPC_TIMEOUT)


def test_operator_can_register_a_host(
    verifier: VerifierHarness, channels: dict[str, grpc.Channel]
) -> None:
    stub = operator_pb2_grpc.OperatorStub(channels["operator"])
    stub.RegisterHost(
        operator_pb2.RegisterHostRequest(host_id="operator-made", group="g"), timeout=RPC_TIMEOUT
    )
    assert verifier.store.get_host("operator-made") is not None
    last = verifier.store.audit_records(limit=1, newest=True)[-1]
    assert (last.actor, last.action, last.outcome) == ("olga.operator", "RegisterHost", OK)


def test_only_auditors_read_the_audit_log(channels: dict[str, grpc.Channel]) -> None:
    request = operator_pb2.ListAuditRecordsRequest(limit=5, newest=True)
    records = operator_pb2_grpc.OperatorStub(channels["auditor"]).ListAuditRecords(
        request, timeout=RPC_TIMEOUT
    )
    assert records is not None
    for who in ("viewer", "operator"):
        stub = operator_pb2_grpc.OperatorStub(channels[who])
        refused = _refusal(lambda s=stub: s.ListAuditRecords(request, timeout=RPC_TIMEOUT))
        assert refused.code() is grpc.StatusCode.PERMISSION_DENIED, who


def test_agent_cannot_list_hosts(
    verifier: VerifierHarness, channels: dict[str, grpc.Channel]
) -> None:
    stub = operator_pb2_grpc.OperatorStub(channels["agent_a"])
    refused = _refusal(lambda: stub.ListHosts(operator_pb2.ListHostsRequest(), timeout=RPC_TIMEOUT))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith("authz.denied:")
    last = verifier.store.audit_records(limit=1, newest=True)[-1]
    assert (last.actor, last.action, last.outcome) == (HOST_A, "ListHosts", "PERMISSION_DENIED")


def _attest(channel: grpc.Channel, host_id: str) -> grpc.RpcError:
    stub = attestation_pb2_grpc.AttestationStub(channel)
    # Keep the request stream open until the verifier answers, as an agent would.
    done = threading.Event()

    def messages() -> Iterator[attestation_pb2.AgentMessage]:
        yield attestation_pb2.AgentMessage(
            hello=attestation_pb2.Hello(host_id=host_id, ak_name=b"\x00\x0b" + bytes(32))
        )
        done.wait(RPC_TIMEOUT)

    try:
        return _refusal(lambda: list(stub.Attest(messages(), timeout=RPC_TIMEOUT)))
    finally:
        done.set()


def test_operator_cannot_open_an_attestation_stream(
    verifier: VerifierHarness, channels: dict[str, grpc.Channel]
) -> None:
    refused = _attest(channels["operator"], HOST_A)
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith("authz.denied: 'olga.operator' (operator)")
    last = verifier.store.audit_records(limit=1, newest=True)[-1]
    assert (last.actor, last.action, last.outcome) == (
        "olga.operator",
        "Attest",
        "PERMISSION_DENIED",
    )
    assert last.details["reason"] == refused.details()


def test_agent_cannot_say_hello_as_another_host(
    verifier: VerifierHarness, channels: dict[str, grpc.Channel]
) -> None:
    refused = _attest(channels["agent_a"], HOST_B)
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith("authz.host_mismatch:")
    last = verifier.store.audit_records(limit=1, newest=True)[-1]
    assert (last.actor, last.action, last.outcome) == (HOST_A, "Attest", "PERMISSION_DENIED")
    # As itself it gets past authorization (and is told it is not registered).
    assert _attest(channels["agent_a"], HOST_A).code() is grpc.StatusCode.NOT_FOUND


def _begin(channel: grpc.Channel, host_id: str) -> grpc.RpcError:
    stub = enrollment_pb2_grpc.EnrollmentStub(channel)
    request = enrollment_pb2.BeginEnrollmentRequest(
        host_id=host_id, ek_public=b"ek", ak_public=b"ak"
    )
    return _refusal(lambda: stub.BeginEnrollment(request, timeout=RPC_TIMEOUT))


def test_agent_cannot_enroll_as_another_host(channels: dict[str, grpc.Channel]) -> None:
    refused = _begin(channels["agent_a"], HOST_B)
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith(f"authz.host_mismatch: '{HOST_A}' (agent host={HOST_A})")
    # As itself its (bogus) keys are looked at: refused for what they are, not by authz.
    assert not _begin(channels["agent_a"], HOST_A).details().startswith("authz.")
    # People never enroll.
    assert _begin(channels["operator"], HOST_A).code() is grpc.StatusCode.PERMISSION_DENIED


def test_agent_cannot_complete_another_hosts_enrollment(
    verifier: VerifierHarness, channels: dict[str, grpc.Channel]
) -> None:
    """A wrong secret fails an enrollment for good: host A's agent must not spoil B's."""
    verifier.store.register_host(HOST_B, "g")
    enrollment_id = verifier.store.create_enrollment(
        host_id=HOST_B,
        ek_public=b"ek",
        ek_certificate=b"",
        ak_public=b"ak",
        ak_name=b"name",
        secret_digest=bytes(32),
        expires_at=datetime.now(UTC) + timedelta(minutes=5),
    )
    stub = enrollment_pb2_grpc.EnrollmentStub(channels["agent_a"])
    request = enrollment_pb2.CompleteEnrollmentRequest(
        enrollment_id=enrollment_id, activated_secret=b"guess"
    )
    refused = _refusal(lambda: stub.CompleteEnrollment(request, timeout=RPC_TIMEOUT))
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details().startswith("authz.host_mismatch:")
    pending = verifier.store.get_enrollment(enrollment_id)
    assert pending is not None
    assert pending.state == "pending"


def test_only_agents_fetch_ciphertext(channels: dict[str, grpc.Channel]) -> None:
    request = weights_pb2.FetchCiphertextRequest(manifest_digest=bytes(32), file_id="0" * 32)
    for who, code in (
        ("operator", grpc.StatusCode.PERMISSION_DENIED),
        ("agent_a", grpc.StatusCode.NOT_FOUND),
    ):
        stub = weights_pb2_grpc.WeightsStub(channels[who])
        refused = _refusal(lambda s=stub: list(s.FetchCiphertext(request, timeout=RPC_TIMEOUT)))
        assert refused.code() is code, who


def test_a_certificate_without_roles_may_call_nothing(
    verifier: VerifierHarness, material: Pki
) -> None:
    """A certificate from the trusted CA with no weightgate URIs at all."""
    ca_cert = x509.load_pem_x509_certificate((material.directory / pki.CA_CERTIFICATE).read_bytes())
    ca_key = serialization.load_pem_private_key(
        (material.directory / pki.CA_KEY).read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nobody")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(ca_cert.not_valid_before_utc)
        .not_valid_after(ca_cert.not_valid_after_utc)
        .sign(ca_key, hashes.SHA256())
    )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca_cert.public_bytes(serialization.Encoding.PEM),
        private_key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        certificate_chain=cert.public_bytes(serialization.Encoding.PEM),
    )
    with grpc.secure_channel(verifier.address, credentials) as channel:
        stub = operator_pb2_grpc.OperatorStub(channel)
        refused = _refusal(
            lambda: stub.ListHosts(operator_pb2.ListHostsRequest(), timeout=RPC_TIMEOUT)
        )
    assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
    assert refused.details() == (
        "authz.denied: 'nobody' (no roles) may not call /weightgate.v1.Operator/ListHosts"
    )


def test_pki_commands_write_private_keys_0600_and_certificates_that_name_identities(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "pki"
    assert main(["pki", "init", "--dir", str(directory)]) == 0
    assert main(["pki", "issue", "operator", "carol", "--role", "viewer,auditor",
                 "--dir", str(directory)]) == 0  # fmt: skip
    assert main(["pki", "issue", "agent", "node-7", "--dir", str(directory)]) == 0
    assert main(["pki", "issue", "server", "verifier", "--dir", str(directory),
                 "--san", "127.0.0.1", "verifier.internal"]) == 0  # fmt: skip
    keys = sorted(p.name for p in directory.glob("*.key"))
    assert keys == ["agent-node-7.key", "ca.key", "operator-carol.key", "server-verifier.key"]
    for key in directory.glob("*.key"):
        assert key.stat().st_mode & 0o777 == 0o600, key
    assert not list(directory.glob(".*")), "no temporary files left behind"
    assert identity_from_pem((directory / "operator-carol.crt").read_bytes()) == Identity(
        name="carol", roles=frozenset({Role.VIEWER, Role.AUDITOR}), host_id=None
    )
    assert identity_from_pem((directory / "agent-node-7.crt").read_bytes()) == Identity(
        name="node-7", roles=frozenset({Role.AGENT}), host_id="node-7"
    )
    assert identity_from_pem((directory / "server-verifier.crt").read_bytes()) == Identity(
        name="verifier", roles=frozenset(), host_id=None
    )
    capsys.readouterr()
    # Never overwritten; the agent role is not for people; unknown roles are named.
    before = (directory / "ca.key").read_bytes()
    for argv, message in (
        (["pki", "init"], "already holds a CA"),
        (["pki", "issue", "agent", "node-7"], "exists; refusing to overwrite"),
        (["pki", "issue", "operator", "dan", "--role", "agent"], "the agent role is for agents"),
        (["pki", "issue", "operator", "dan", "--role", "root"], "unknown role 'root'"),
    ):
        assert main([*argv, "--dir", str(directory)]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert (directory / "ca.key").read_bytes() == before
