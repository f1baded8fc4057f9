"""The agent's NVIDIA GPU evidence collector (agent/collectors/gpu.py), on recorded evidence.

There is no GPU here, so NVML cannot run: ``RecordedNvml`` stands in for it with
the evidence four real H100s returned (the shared vector
``multi_gpu_hopper.json``: each entry's base64 report and certificate chain),
served the way NVML serves them, in fixed-size arrays with a separate size. The
collector must hand those bytes back untouched. The real NVML path is exercised
by ``tools/gpu_check.py`` on a machine with a GPU.
"""

from __future__ import annotations

import base64
import ctypes
import json
import sys
import types
from dataclasses import dataclass, field

import pytest

from agent.collectors.gpu import (
    ConfComputeState,
    NvmlCallError,
    SizedBuffer,
    collect_gpu_evidence,
)
from agent.collectors.gpu_nvml import PynvmlApi
from tests.vectors import vectors_dir

# pynvml's array sizes: NVML_CC_GPU_ATTESTATION_REPORT_SIZE and
# NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE.
REPORT_ARRAY = 0x2000
CHAIN_ARRAY = 0x1400
NOT_SUPPORTED = 3
LIBRARY_NOT_FOUND = 12


@dataclass(frozen=True)
class RecordedGpu:
    report: bytes
    chain: bytes


def recorded_gpus() -> list[RecordedGpu]:
    path = vectors_dir(
        "nvidia",
        "attestation-sdk",
        "common-test-data",
        "serialized_test_evidence",
        "multi_gpu_hopper.json",
    )
    return [
        RecordedGpu(base64.b64decode(e["evidence"]), base64.b64decode(e["certificate"]))
        for e in json.loads(path.read_text())
    ]


def padded(data: bytes, size: int) -> bytes:
    return data + b"\0" * (size - len(data))


@dataclass
class RecordedNvml:
    """NVML as the recorded GPUs answered it; ``fail[(method, gpu index or None)]`` = code."""

    gpus: list[RecordedGpu]
    fail: dict[tuple[str, int | None], int] = field(default_factory=dict)
    count: int | None = None
    sizes: dict[int, int] = field(default_factory=dict)
    calls: list[tuple[object, ...]] = field(default_factory=list)

    def _enter(self, method: str, call: str, index: int | None = None) -> None:
        self.calls.append((method, index) if index is not None else (method,))
        code = self.fail.get((method, index))
        if code is not None:
            raise NvmlCallError(call, code, "Not Supported" if code == NOT_SUPPORTED else "")

    def init(self) -> None:
        self._enter("init", "nvmlInit")

    def shutdown(self) -> None:
        self._enter("shutdown", "nvmlShutdown")

    def driver_version(self) -> str:
        self._enter("driver_version", "nvmlSystemGetDriverVersion")
        return "590.12"

    def conf_compute_state(self) -> ConfComputeState:
        self._enter("conf_compute_state", "nvmlSystemGetConfComputeState")
        return ConfComputeState(environment=2, cc_feature=1, devtools_mode=0)

    def multi_gpu_mode(self) -> int:
        self._enter("multi_gpu_mode", "nvmlSystemGetConfComputeSettings")
        return 1

    def device_count(self) -> int:
        self._enter("device_count", "nvmlDeviceGetCount")
        return len(self.gpus) if self.count is None else self.count

    def device_handle(self, index: int) -> object:
        self._enter("device_handle", "nvmlDeviceGetHandleByIndex", index)
        return ("handle", index)

    def attestation_report(self, handle: object, nonce: bytes) -> SizedBuffer:
        assert isinstance(handle, tuple)
        index = handle[1]
        self._enter("attestation_report", "nvmlDeviceGetConfComputeGpuAttestationReport", index)
        self.calls.append(("nonce", index, nonce))
        report = self.gpus[index].report
        return SizedBuffer(padded(report, REPORT_ARRAY), self.sizes.get(index, len(report)))

    def attestation_cert_chain(self, handle: object) -> SizedBuffer:
        assert isinstance(handle, tuple)
        index = handle[1]
        self._enter("attestation_cert_chain", "nvmlDeviceGetConfComputeGpuCertificate", index)
        chain = self.gpus[index].chain
        return SizedBuffer(padded(chain, CHAIN_ARRAY), len(chain))


def nonce_for(index: int) -> bytes:
    return bytes([index]) * 32


def shutdowns(nvml: RecordedNvml) -> int:
    return nvml.calls.count(("shutdown",))


def test_every_gpu_evidence_byte_for_byte() -> None:
    gpus = recorded_gpus()
    nvml = RecordedNvml(gpus)
    collection = collect_gpu_evidence(nonce_for, nvml=nvml)
    assert collection.unavailable is None
    assert collection.reasons == ()
    assert collection.driver_version == "590.12"
    assert collection.cc_state == "cc=on devtools=off environment=prod"
    assert collection.multi_gpu_mode == "protected-pcie"
    assert [g.index for g in collection.gpus] == [0, 1, 2, 3]
    for got, want in zip(collection.gpus, gpus, strict=True):
        assert got.complete
        assert got.reasons == ()
        assert got.report == want.report  # trimmed from the 8 KiB array, untouched
        assert got.cert_chain == want.chain
    assert nvml.calls[-1] == ("shutdown",)
    assert shutdowns(nvml) == 1


def test_report_asked_with_each_gpus_own_nonce() -> None:
    nvml = RecordedNvml(recorded_gpus())
    collection = collect_gpu_evidence(nonce_for, nvml=nvml)
    asked = [call for call in nvml.calls if call[0] == "nonce"]
    assert asked == [("nonce", i, nonce_for(i)) for i in range(4)]
    assert [g.nonce for g in collection.gpus] == [nonce_for(i) for i in range(4)]


def test_without_pynvml_unavailable_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    collection = collect_gpu_evidence(nonce_for)
    assert collection.gpus == ()
    assert collection.unavailable is not None
    assert collection.unavailable.startswith("pynvml is not installed")


def test_pynvml_without_cc_calls_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", types.ModuleType("pynvml"))
    collection = collect_gpu_evidence(nonce_for)
    assert collection.unavailable is not None
    assert "nvmlDeviceGetConfComputeGpuAttestationReport" in collection.unavailable


def test_init_failure_is_the_reason_and_nothing_else_is_called() -> None:
    nvml = RecordedNvml(recorded_gpus(), fail={("init", None): LIBRARY_NOT_FOUND})
    collection = collect_gpu_evidence(nonce_for, nvml=nvml)
    assert collection.unavailable == "nvmlInit failed: NVML error 12"
    assert collection.gpus == ()
    # NVML was never initialised, so there is nothing to shut down.
    assert nvml.calls == [("init",)]


def test_zero_gpus() -> None:
    nvml = RecordedNvml([])
    collection = collect_gpu_evidence(nonce_for, nvml=nvml)
    assert collection.unavailable == "no NVIDIA GPU: nvmlDeviceGetCount returned 0"
    assert collection.gpus == ()
    assert collection.cc_state is not None
    assert shutdowns(nvml) == 1


def test_device_count_failure() -> None:
    nvml = RecordedNvml(recorded_gpus(), fail={("device_count", None): NOT_SUPPORTED})
    collection = collect_gpu_evidence(nonce_for, nvml=nvml)
    assert collection.unavailable == "nvmlDeviceGetCount failed: NVML error 3 (Not Supported)"
    assert shutdowns(nvml) == 1


def test_one_gpu_failing_does_not_stop_the_others() -> None:
    gpus = recorded_gpus()
    nvml = RecordedNvml(
        gpus,
        fail={
            ("attestation_report", 1): NOT_SUPPORTED,
            ("device_handle", 2): NOT_SUPPORTED,
        },
    )
    collection = collect_gpu_evidence(nonce_for, nvml=nvml)
    assert collection.unavailable is None
    by_index = {g.index: g for g in collection.gpus}
    assert by_index[1].reasons == (
        "nvmlDeviceGetConfComputeGpuAttestationReport failed: NVML error 3 (Not Supported)",
    )
    assert by_index[1].report is None
    assert by_index[1].cert_chain == gpus[1].chain  # the chain is still asked for
    assert by_index[2].reasons == (
        "nvmlDeviceGetHandleByIndex failed: NVML error 3 (Not Supported)",
    )
    assert not by_index[2].complete
    for index in (0, 3):
        assert by_index[index].complete
        assert by_index[index].report == gpus[index].report
    assert shutdowns(nvml) == 1


def test_system_call_failures_are_recorded_and_gpus_still_asked() -> None:
    nvml = RecordedNvml(
        recorded_gpus(),
        fail={("conf_compute_state", None): NOT_SUPPORTED, ("shutdown", None): 1},
    )
    collection = collect_gpu_evidence(nonce_for, nvml=nvml)
    assert collection.cc_state is None
    assert collection.reasons == (
        "nvmlSystemGetConfComputeState failed: NVML error 3 (Not Supported)",
        "nvmlShutdown failed: NVML error 1",
    )
    assert all(g.complete for g in collection.gpus)


@pytest.mark.parametrize("size", [0, REPORT_ARRAY + 1])
def test_impossible_report_size_is_a_reason(size: int) -> None:
    nvml = RecordedNvml(recorded_gpus(), sizes={0: size})
    gpu0 = collect_gpu_evidence(nonce_for, nvml=nvml).gpus[0]
    assert gpu0.report is None
    assert len(gpu0.reasons) == 1
    assert gpu0.reasons[0].startswith("nvmlDeviceGetConfComputeGpuAttestationReport ")


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_wrong_nonce_length_raises_and_still_shuts_down(length: int) -> None:
    nvml = RecordedNvml(recorded_gpus())
    with pytest.raises(ValueError, match="must be 32 bytes"):
        collect_gpu_evidence(lambda _index: b"\1" * length, nvml=nvml)
    assert shutdowns(nvml) == 1
    assert not any(call[0] == "attestation_report" for call in nvml.calls)


def test_shutdown_even_when_something_unexpected_raises() -> None:
    class Broken(RecordedNvml):
        def attestation_cert_chain(self, handle: object) -> SizedBuffer:
            raise RuntimeError("driver went away")

    nvml = Broken(recorded_gpus())
    with pytest.raises(RuntimeError):
        collect_gpu_evidence(nonce_for, nvml=nvml)
    assert shutdowns(nvml) == 1


# --- the pynvml adapter, over a stand-in module with pynvml's names and structs --------


class _NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return "Not Supported"


class _Report(ctypes.Structure):
    _fields_ = [
        ("attestationReportSize", ctypes.c_uint),
        ("attestationReport", ctypes.c_uint8 * REPORT_ARRAY),
    ]


def test_pynvml_adapter_reads_sizes_and_maps_errors() -> None:
    report = recorded_gpus()[0].report
    struct = _Report()
    ctypes.memmove(struct.attestationReport, report, len(report))
    struct.attestationReportSize = len(report)

    def get_certificate(handle: object) -> object:
        raise _NVMLError(NOT_SUPPORTED)

    module = types.ModuleType("pynvml")
    module.NVMLError = _NVMLError  # type: ignore[attr-defined]
    module.nvmlDeviceGetConfComputeGpuAttestationReport = (  # type: ignore[attr-defined]
        lambda handle, nonce: struct
    )
    module.nvmlDeviceGetConfComputeGpuCertificate = get_certificate  # type: ignore[attr-defined]
    api = PynvmlApi(module)
    got = api.attestation_report(object(), nonce_for(0))
    assert got.size == len(report)
    assert got.data[: got.size] == report
    with pytest.raises(NvmlCallError) as caught:
        api.attestation_cert_chain(object())
    assert caught.value.reason == (
        "nvmlDeviceGetConfComputeGpuCertificate failed: NVML error 3 (Not Supported)"
    )
