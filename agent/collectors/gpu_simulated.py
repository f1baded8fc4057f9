"""NVML over a simulated GPU fleet (``devsim.nvidia``), for tests and the demo.

:class:`SimulatedNvml` answers the calls of :class:`agent.collectors.gpu.NvmlApi`
the way the driver does on a Hopper host in CC mode: CC on, devtools off, no
protected-PCIe multi-GPU mode, the fleet's driver version, and reports and
chains in fixed-size arrays with the valid length beside them, so that the
collector's trimming runs exactly as against real NVML. The evidence chains to
the fleet's TEST roots: a verifier accepts it only where those are pinned.
"""

from __future__ import annotations

from pathlib import Path

from agent.collectors.gpu import NONCE_SIZE, ConfComputeState, NvmlCallError, SizedBuffer
from devsim.nvidia import Fleet, FleetError, load_fleet

# nvml.h array sizes: NVML_CC_GPU_ATTESTATION_REPORT_SIZE (0x2000) and
# NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE (0x1400).
REPORT_ARRAY_SIZE = 0x2000
CERT_CHAIN_ARRAY_SIZE = 0x1400

# nvml.h return codes the simulation can produce.
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_INSUFFICIENT_SIZE = 7

# nvmlConfComputeSystemState_t values: environment SIM (1) says honestly that
# this is no production GPU; CC feature on, devtools off.
_CC_ENVIRONMENT_SIM = 1
_ON, _OFF = 1, 0
_MULTI_GPU_NONE = 0


def _padded(call: str, data: bytes, size: int) -> SizedBuffer:
    if len(data) > size:
        # What NVML does when the driver's answer does not fit the caller's array.
        raise NvmlCallError(call, NVML_ERROR_INSUFFICIENT_SIZE, f"{len(data)} > {size} bytes")
    return SizedBuffer(data=data.ljust(size, b"\x00"), size=len(data))


class SimulatedNvml:
    """:class:`agent.collectors.gpu.NvmlApi` answered by a :class:`devsim.nvidia.Fleet`."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._initialized = False

    def _require_init(self, call: str) -> None:
        if not self._initialized:
            raise NvmlCallError(call, NVML_ERROR_UNINITIALIZED, "Uninitialized")

    def init(self) -> None:
        self._initialized = True

    def shutdown(self) -> None:
        self._require_init("nvmlShutdown")
        self._initialized = False

    def driver_version(self) -> str:
        self._require_init("nvmlSystemGetDriverVersion")
        return self._fleet.model.driver_version

    def conf_compute_state(self) -> ConfComputeState:
        self._require_init("nvmlSystemGetConfComputeState")
        return ConfComputeState(environment=_CC_ENVIRONMENT_SIM, cc_feature=_ON, devtools_mode=_OFF)

    def multi_gpu_mode(self) -> int:
        self._require_init("nvmlSystemGetConfComputeSettings")
        return _MULTI_GPU_NONE

    def device_count(self) -> int:
        self._require_init("nvmlDeviceGetCount")
        return self._fleet.gpu_count

    def device_handle(self, index: int) -> object:
        call = "nvmlDeviceGetHandleByIndex"
        self._require_init(call)
        if not 0 <= index < self._fleet.gpu_count:
            raise NvmlCallError(call, NVML_ERROR_INVALID_ARGUMENT, f"no GPU {index}")
        return _Handle(index)

    def _position(self, call: str, handle: object) -> int:
        self._require_init(call)
        if not isinstance(handle, _Handle):
            raise NvmlCallError(call, NVML_ERROR_INVALID_ARGUMENT, "not a device handle")
        return handle.index

    def attestation_report(self, handle: object, nonce: bytes) -> SizedBuffer:
        call = "nvmlDeviceGetConfComputeGpuAttestationReport"
        position = self._position(call, handle)
        if len(nonce) != NONCE_SIZE:
            raise NvmlCallError(call, NVML_ERROR_INVALID_ARGUMENT, f"nonce of {len(nonce)} bytes")
        report, _ = self._fleet.attest(position, nonce)
        return _padded(call, report, REPORT_ARRAY_SIZE)

    def attestation_cert_chain(self, handle: object) -> SizedBuffer:
        call = "nvmlDeviceGetConfComputeGpuCertificate"
        position = self._position(call, handle)
        return _padded(call, self._fleet.chain_pem(position), CERT_CHAIN_ARRAY_SIZE)


class _Handle:
    """An opaque device handle, like pynvml's ``c_nvmlDevice_t``."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __repr__(self) -> str:
        return f"<simulated nvmlDevice {self.index}>"


def load_simulated_nvml(directory: Path) -> SimulatedNvml | str:
    """NVML over the fleet in ``directory``, or why it cannot be had (never raises for it)."""
    try:
        return SimulatedNvml(load_fleet(directory))
    except FleetError as exc:
        return f"simulated GPU fleet unavailable: {exc}"
