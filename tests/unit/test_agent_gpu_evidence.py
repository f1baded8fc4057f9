"""The agent's answer to a GpuRequest: what it sends, and what it says when it cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.collectors.gpu import ConfComputeState, cc_mode
from agent.collectors.gpu_evidence import gpu_evidence_message
from devsim.nvidia import create_fleet
from weightgate.gpu_nonce import gpu_nonce

NONCE = bytes(range(32))
ATTEST = b"\xffTCG" + bytes(60)


def test_off_says_so_and_sends_nothing() -> None:
    message = gpu_evidence_message(
        source="off", simulator_dir=None, challenge_nonce=NONCE, tpm_attest=ATTEST
    )
    assert "switched off" in message.unavailable
    assert not message.devices


def test_a_missing_fleet_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    message = gpu_evidence_message(
        source="simulator", simulator_dir=tmp_path / "none", challenge_nonce=NONCE,
        tpm_attest=ATTEST,
    )  # fmt: skip
    assert "fleet.json" in message.unavailable


def test_simulated_gpus_answer_their_derived_nonces(tmp_path: Path) -> None:
    create_fleet(tmp_path / "fleet", gpus=2)
    message = gpu_evidence_message(
        source="simulator", simulator_dir=tmp_path / "fleet", challenge_nonce=NONCE,
        tpm_attest=ATTEST,
    )  # fmt: skip
    assert message.unavailable == ""
    assert message.cc_state == "on"
    assert len(message.devices) == 2
    for position, device in enumerate(message.devices):
        assert device.unavailable == ""
        assert device.certificate_chain.startswith(b"-----BEGIN CERTIFICATE-----")
        # SPDM GET_MEASUREMENTS request: 4-byte header, then the 32-byte nonce.
        assert device.report[4:36] == gpu_nonce(NONCE, ATTEST, position)


@pytest.mark.parametrize(
    ("cc", "devtools", "multi", "mode"),
    [
        (1, 0, 0, "on"),
        (1, 1, 0, "devtools"),
        (0, 0, 0, "off"),
        (1, 0, 1, "ppcie"),
        (7, 0, 0, None),  # an unknown value is not "off"
        (1, 0, 9, None),
    ],
)
def test_cc_mode_from_nvml(cc: int, devtools: int, multi: int, mode: str | None) -> None:
    assert cc_mode(ConfComputeState(2, cc, devtools), multi) == mode


def test_cc_mode_unknown_without_state() -> None:
    assert cc_mode(None, 0) is None
    assert cc_mode(ConfComputeState(2, 1, 0), None) is None
