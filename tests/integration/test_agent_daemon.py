"""The real ``weightgate-agent run`` daemon against a real verifier, across restarts.

One deployment per module: a private swtpm, a verifier on a fixed loopback port
with a file SQLite database (so it can be stopped and started again on the same
port and data), and the agent as a subprocess. The tests run in order and share
it: enrollment, a verifier restart, a TPM power cycle, then SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.collectors.tpm import Tpm
from tests.agent_process import AgentProcess, free_port, stamp
from tests.verifier_harness import VerifierHarness
from verifier.config import VerifierConfig, config_for_demo
from verifier.demo.swtpm import SwtpmProcess
from weightgate.v1 import common_pb2, operator_pb2

HOST_ID = "daemon-node"
GROUP = "daemon"
REFERENCE = {"sha256": list(range(8))}
WAIT_SECONDS = 30.0
POLL_SECONDS = 0.05
ATTESTATION_INTERVAL_SECONDS = 0.2
HISTORY_LIMIT = 1000  # the Operator API's maximum; far more than this module produces

T = TypeVar("T")


class Deployment:
    """swtpm + restartable verifier + agent subprocess, for one module."""

    def __init__(self, tpm_process: SwtpmProcess, work: Path) -> None:
        self.tpm_process = tpm_process
        self.tpm = Tpm(tpm_process.tcti)
        self.work = work
        port = free_port()
        state = work / "verifier"
        state.mkdir()
        self.config: VerifierConfig = replace(
            config_for_demo(state, ek_ca_certificates=tpm_process.ek_ca_certificates),
            listen=f"127.0.0.1:{port}",
            attestation_interval_seconds=ATTESTATION_INTERVAL_SECONDS,
        )
        assert self.config.database_url.startswith("sqlite:///")
        self.verifier: VerifierHarness | None = None
        self.agent = AgentProcess(work / "agent.log")
        self.agent_state = work / "agent-state"

    # -- verifier -----------------------------------------------------------

    def start_verifier(self) -> VerifierHarness:
        self.verifier = VerifierHarness(self.config)
        assert self.verifier.address == self.config.listen  # the fixed port, every time
        return self.verifier

    def stop_verifier(self) -> None:
        if self.verifier is not None:
            self.verifier.stop()
            self.verifier = None

    @property
    def operator(self) -> Any:
        assert self.verifier is not None, "the verifier is not running"
        return self.verifier.operator

    def host(self) -> operator_pb2.HostDetail:
        detail: operator_pb2.HostDetail = self.operator.GetHost(
            operator_pb2.GetHostRequest(host_id=HOST_ID, history_limit=HISTORY_LIMIT), timeout=10
        )
        return detail

    def events(self, kind: str) -> list[operator_pb2.HostEvent]:
        return [e for e in self.host().events if e.kind == kind]

    def set_reference(self, values: dict[str, dict[int, bytes]]) -> None:
        self.operator.ProposeChange(
            operator_pb2.ProposeChangeRequest(
                change=operator_pb2.ProposedChange(
                    reference_values=operator_pb2.SetReferenceValuesRequest(
                        group=GROUP,
                        pcrs=[
                            common_pb2.PcrBank(hash_algorithm=b, values=v)
                            for b, v in values.items()
                        ],
                    )
                )
            ),
            timeout=10,
        )

    # -- agent --------------------------------------------------------------

    def start_agent(self) -> None:
        config = self.work / "agent.toml"
        config.write_text(
            "[agent]\n"
            f'host_id = "{HOST_ID}"\n'
            f'verifier = "{self.config.listen}"\n'
            f'tcti = "{self.tpm_process.tcti}"\n'
            f'state_dir = "{self.agent_state}"\n'
            "insecure = true\n"
            "reconnect_initial_seconds = 0.1\n"
            "reconnect_max_seconds = 1.0\n"
        )
        self.agent.start(config)

    def stop_agent(self) -> None:
        self.agent.stop()

    def agent_events(self, name: str | None = None) -> list[dict[str, Any]]:
        return self.agent.events(name)

    def wait_for(
        self, what: str, check: Callable[[], T | None], *, timeout: float = WAIT_SECONDS
    ) -> T:
        """Poll ``check`` until it returns something truthy; fail if the agent dies."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if (code := self.agent.exited()) is not None:
                pytest.fail(
                    f"the agent exited ({code}) while waiting for {what}:\n" + self.log_tail()
                )
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}:\n" + self.log_tail())
            time.sleep(POLL_SECONDS)

    def wait_trusted(self, *, since: datetime | None = None) -> operator_pb2.HostDetail:
        def trusted() -> operator_pb2.HostDetail | None:
            detail = self.host()
            if detail.summary.status != operator_pb2.HOST_STATUS_TRUSTED:
                return None
            if since is not None and stamp(detail.summary.last_attestation) < since:
                return None
            return detail

        return self.wait_for("the host to be trusted", trusted)

    def log_tail(self, lines: int = 30) -> str:
        return self.agent.log_tail(lines)


@pytest.fixture(scope="module")
def deployment(
    swtpm_factory_module: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    # A TPM of our own: this module power-cycles it.
    deployment = Deployment(swtpm_factory_module(), tmp_path_factory.mktemp("daemon"))
    # A "firmware" measurement, so that a power cycle visibly resets the PCRs.
    deployment.tpm.extend_pcr(0, b"firmware: daemon test UEFI 1.0")
    try:
        deployment.start_verifier()
        deployment.operator.RegisterHost(
            operator_pb2.RegisterHostRequest(host_id=HOST_ID, group=GROUP), timeout=10
        )
        deployment.set_reference(deployment.tpm.read_pcrs(REFERENCE))
        deployment.start_agent()
        yield deployment
    finally:
        deployment.stop_agent()
        deployment.stop_verifier()


def test_agent_enrolls_and_host_becomes_trusted(deployment: Deployment) -> None:
    detail = deployment.wait_trusted()
    affirming = [v for v in detail.history if v.tier == common_pb2.TIER_AFFIRMING]
    assert affirming, detail.history
    assert not affirming[0].reasons
    assert "tpm.quote.signature" in affirming[0].checks_run
    assert "tpm.pcr.reference" in affirming[0].checks_run
    assert len(deployment.events("enrolled")) == 1
    saved = json.loads((deployment.agent_state / "enrollment.json").read_text())
    assert saved["host_id"] == HOST_ID
    assert bytes.fromhex(saved["ak_name"]) == detail.ak_name
    assert len(deployment.agent_events("enrollment.completed")) == 1


def test_verifier_restart_keeps_data_and_agent_reconnects_without_reenrolling(
    deployment: Deployment,
) -> None:
    deployment.wait_trusted()
    before = deployment.host()
    old_results = {v.result_id for v in before.history}
    old_events = {(e.kind, e.detail, stamp(e.at)) for e in before.events}
    retries_before = len(deployment.agent_events("agent.retry"))

    deployment.stop_verifier()
    # The agent notices the outage and backs off (it is not an old stream surviving).
    deployment.wait_for(
        "the agent to retry after losing the verifier",
        lambda: len(deployment.agent_events("agent.retry")) > retries_before,
    )
    restarted_at = datetime.now(UTC)
    deployment.start_verifier()

    after = deployment.wait_trusted(since=restarted_at)
    new_affirming = [
        v
        for v in after.history
        if stamp(v.appraised_at) >= restarted_at and v.tier == common_pb2.TIER_AFFIRMING
    ]
    assert new_affirming, "no affirming verdict from the restarted verifier"
    # Nothing recorded before the restart was lost.
    assert old_results <= {v.result_id for v in after.history}
    assert old_events <= {(e.kind, e.detail, stamp(e.at)) for e in after.events}
    assert after.ak_name == before.ak_name
    # Reconnected with the saved enrollment: no second enrollment anywhere.
    assert len(deployment.events("enrolled")) == 1
    assert len(deployment.agent_events("enrollment.begin")) == 1


def test_tpm_power_cycle_is_recorded_as_reboot_and_host_recovers(
    deployment: Deployment,
) -> None:
    deployment.wait_trusted()
    assert not deployment.events("reboot")
    measured = deployment.tpm.read_pcrs(REFERENCE)

    deployment.tpm_process.restart()
    fresh = deployment.tpm.read_pcrs(REFERENCE)
    assert fresh["sha256"][0] != measured["sha256"][0], "the power cycle did not reset PCR0"

    reboot = deployment.wait_for("a reboot event", lambda: deployment.events("reboot"))
    assert len(reboot) == 1
    assert "reset_count=" in reboot[0].detail
    # The first quote after the reboot no longer matches the (pre-reboot) reference.
    summary = deployment.host().summary
    assert summary.status == operator_pb2.HOST_STATUS_UNTRUSTED
    assert [r.code for r in summary.reasons] == ["tpm.pcr.mismatch"]

    reference_set_at = datetime.now(UTC)
    deployment.set_reference(fresh)
    deployment.wait_trusted(since=reference_set_at)
    # The AK is persistent in the TPM's NV: it survived, so no re-enrollment.
    assert len(deployment.events("enrolled")) == 1
    assert len(deployment.agent_events("enrollment.begin")) == 1


def test_sigterm_stops_the_agent_with_exit_code_0(deployment: Deployment) -> None:
    deployment.wait_trusted()
    agent = deployment.agent.process
    assert agent is not None and agent.poll() is None
    agent.send_signal(signal.SIGTERM)
    try:
        code = agent.wait(timeout=15)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
        pytest.fail("the agent ignored SIGTERM for 15 s:\n" + deployment.log_tail())
    assert code == 0, deployment.log_tail()
    assert deployment.agent_events("agent.stopped")
