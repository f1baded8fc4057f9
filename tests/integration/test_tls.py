"""Mutual TLS between the verifier and its clients, with throwaway certificates.

The verifier requires a client certificate issued by its client CA: the real
agent and an operator with such certificates get through; a client with no
certificate, with one from another CA, or speaking plaintext does not.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.collectors.tpm import Tpm
from tests.agent_process import AgentProcess
from tests.tls_material import CertificateAuthority, Issued
from tests.verifier_harness import VerifierHarness, running_verifier
from verifier.config import TlsConfig
from verifier.demo.swtpm import SwtpmProcess
from weightgate.v1 import common_pb2, operator_pb2, operator_pb2_grpc

HOST_ID = "tls-node"
GROUP = "tls"
AK_HANDLE = 0x81010010  # not the handle other modules use on the shared swtpm
WAIT_SECONDS = 30.0
RPC_TIMEOUT = 10.0


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    server: Issued
    agent: Issued
    operator: Issued
    stranger: Issued  # a client certificate from a CA the verifier does not trust


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"), "weightgate test CA")
    other = CertificateAuthority(tmp_path_factory.mktemp("other-pki"), "some other CA")
    return Pki(
        ca=ca,
        server=ca.issue_server("verifier"),
        agent=ca.issue_client(HOST_ID, roles=("agent",), host_id=HOST_ID),
        operator=ca.issue_client("operator", roles=("operator",)),
        stranger=other.issue_client("operator", roles=("operator",)),
    )


@pytest.fixture(scope="module")
def verifier(
    tmp_path_factory: pytest.TempPathFactory, swtpm: SwtpmProcess, pki: Pki
) -> Iterator[VerifierHarness]:
    tls = TlsConfig(
        certificate=pki.server.certificate,
        private_key=pki.server.private_key,
        client_ca=pki.ca.certificate,
    )
    with running_verifier(
        tmp_path_factory.mktemp("tls-verifier"),
        ek_ca_certificates=swtpm.ek_ca_certificates,
        insecure=False,
        tls=tls,
    ) as harness:
        yield harness


def credentials(pki: Pki, client: Issued | None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=pki.ca.certificate.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.certificate.read_bytes(),
        private_key=client.private_key.read_bytes(),
        certificate_chain=client.certificate.read_bytes(),
    )


@pytest.fixture
def operator(verifier: VerifierHarness, pki: Pki) -> Iterator[Any]:
    with grpc.secure_channel(verifier.address, credentials(pki, pki.operator)) as channel:
        yield operator_pb2_grpc.OperatorStub(channel)


def test_operator_with_a_client_certificate_lists_hosts(operator: Any) -> None:
    operator.RegisterHost(
        operator_pb2.RegisterHostRequest(host_id="listed-over-mtls", group=GROUP),
        timeout=RPC_TIMEOUT,
    )
    hosts = operator.ListHosts(operator_pb2.ListHostsRequest(), timeout=RPC_TIMEOUT).hosts
    assert "listed-over-mtls" in [h.host_id for h in hosts]


def test_agent_over_mtls_reaches_trusted(
    verifier: VerifierHarness, operator: Any, swtpm: SwtpmProcess, pki: Pki, tmp_path: Path
) -> None:
    operator.RegisterHost(
        operator_pb2.RegisterHostRequest(host_id=HOST_ID, group=GROUP), timeout=RPC_TIMEOUT
    )
    values = Tpm(swtpm.tcti).read_pcrs({"sha256": list(range(8))})
    operator.ProposeChange(
        operator_pb2.ProposeChangeRequest(
            change=operator_pb2.ProposedChange(
                reference_values=operator_pb2.SetReferenceValuesRequest(
                    group=GROUP,
                    pcrs=[
                        common_pb2.PcrBank(hash_algorithm=b, values=v) for b, v in values.items()
                    ],
                )
            )
        ),
        timeout=RPC_TIMEOUT,
    )
    config = tmp_path / "agent.toml"
    config.write_text(
        "[agent]\n"
        f'host_id = "{HOST_ID}"\n'
        f'verifier = "{verifier.address}"\n'
        f'tcti = "{swtpm.tcti}"\n'
        f'state_dir = "{tmp_path / "agent-state"}"\n'
        f"ak_handle = {AK_HANDLE:#x}\n"
        "reconnect_initial_seconds = 0.1\n"
        "reconnect_max_seconds = 1.0\n"
        "\n[agent.tls]\n"
        f'ca_certificate = "{pki.ca.certificate}"\n'
        f'certificate = "{pki.agent.certificate}"\n'
        f'private_key = "{pki.agent.private_key}"\n'
    )
    agent = AgentProcess(tmp_path / "agent.log")
    agent.start(config)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            summary = operator.GetHost(
                operator_pb2.GetHostRequest(host_id=HOST_ID), timeout=RPC_TIMEOUT
            ).summary
            if summary.status == operator_pb2.HOST_STATUS_TRUSTED:
                break
            if agent.exited() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"host not trusted (status {summary.status}, agent exit {agent.exited()}):\n"
                    + agent.log_tail(60)
                )
            time.sleep(0.05)
    finally:
        agent.stop()
    assert agent.exited() == 0


def _list_hosts_over(channel: grpc.Channel) -> None:
    operator_pb2_grpc.OperatorStub(channel).ListHosts(
        operator_pb2.ListHostsRequest(), timeout=RPC_TIMEOUT
    )


@pytest.mark.parametrize("client", ["none", "stranger"])
def test_client_without_a_trusted_certificate_is_refused(
    verifier: VerifierHarness, pki: Pki, client: str
) -> None:
    issued = None if client == "none" else pki.stranger
    with (
        grpc.secure_channel(verifier.address, credentials(pki, issued)) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _list_hosts_over(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_is_refused(verifier: VerifierHarness) -> None:
    with (
        grpc.insecure_channel(verifier.address) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        _list_hosts_over(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
