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


def test_a_hung_collection_is_not_waited_for_nor_stacked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """NVML cannot be interrupted, so a hang is stood in for by a blocked call."""
    import asyncio  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from agent.collectors import gpu_evidence  # noqa: PLC0415

    release = threading.Event()
    calls: list[bytes] = []
    real = gpu_evidence.gpu_evidence_message

    def hanging(**kwargs: object) -> object:
        calls.append(bytes(kwargs["challenge_nonce"]))  # type: ignore[arg-type]
        release.wait(10)
        return real(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gpu_evidence, "gpu_evidence_message", hanging)
    create_fleet(tmp_path / "fleet", gpus=1)
    collector = gpu_evidence.BoundedGpuCollector(
        source="simulator", simulator_dir=tmp_path / "fleet", timeout_seconds=0.2
    )

    async def rounds() -> list[object]:
        first = await collector.collect(challenge_nonce=NONCE, tpm_attest=ATTEST)
        second = await collector.collect(challenge_nonce=NONCE, tpm_attest=ATTEST)
        release.set()
        await asyncio.sleep(0.5)  # the hung thread returns
        third = await collector.collect(challenge_nonce=NONCE, tpm_attest=ATTEST)
        return [first, second, third]

    first, second, third = asyncio.run(rounds())
    assert "did not finish within 0.2 s" in first.unavailable  # type: ignore[attr-defined]
    assert "previous GPU collection has not returned" in second.unavailable  # type: ignore[attr-defined]
    assert third.unavailable == "" and len(third.devices) == 1  # type: ignore[attr-defined]
    assert len(calls) == 2, "no thread was stacked on the hung one"
