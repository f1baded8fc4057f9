"""pynvml (nvidia-ml-py) behind :class:`agent.collectors.gpu.NvmlApi`.

pynvml is optional (the ``gpu`` extra) and loads libnvidia-ml.so.1 only at
``nvmlInit``, so it is imported here, on first use, by name: hosts without NVIDIA
GPUs need neither. Each pynvml ``NVMLError`` becomes an :class:`NvmlCallError`
that names the call and the NVML error code.
"""

from __future__ import annotations

import ctypes
import importlib
from types import ModuleType
from typing import Any

from agent.collectors.gpu import ConfComputeState, NvmlApi, NvmlCallError, SizedBuffer

# The CC attestation calls arrived in nvidia-ml-py 12.535 (driver branch 535).
_REQUIRED = (
    "NVMLError",
    "nvmlInit",
    "nvmlShutdown",
    "nvmlSystemGetDriverVersion",
    "nvmlSystemGetConfComputeState",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetConfComputeGpuAttestationReport",
    "nvmlDeviceGetConfComputeGpuCertificate",
)
_SETTINGS = "nvmlSystemGetConfComputeSettings"
_SETTINGS_STRUCT = "c_nvmlSystemConfComputeSettings_v1_t"


def load_pynvml() -> NvmlApi | str:
    """The pynvml-backed API, or why it cannot be had (never raises)."""
    try:
        module = importlib.import_module("pynvml")
    except ImportError as exc:
        return f"pynvml is not installed (the 'gpu' extra, nvidia-ml-py): {exc}"
    missing = [name for name in _REQUIRED if not hasattr(module, name)]
    if missing:
        return f"pynvml lacks {', '.join(missing)}: nvidia-ml-py >= 12.535 is needed"
    return PynvmlApi(module)


class PynvmlApi:
    """:class:`NvmlApi` over the pynvml module."""

    def __init__(self, module: ModuleType) -> None:
        self._nvml = module

    def _call(self, name: str, *args: object) -> Any:
        try:
            return getattr(self._nvml, name)(*args)
        except self._nvml.NVMLError as exc:
            raise NvmlCallError(name, _code(exc), _text(exc)) from exc

    def init(self) -> None:
        self._call("nvmlInit")

    def shutdown(self) -> None:
        self._call("nvmlShutdown")

    def driver_version(self) -> str:
        version = self._call("nvmlSystemGetDriverVersion")
        return version.decode() if isinstance(version, bytes) else str(version)

    def conf_compute_state(self) -> ConfComputeState:
        state = self._call("nvmlSystemGetConfComputeState")
        return ConfComputeState(
            environment=int(state.environment),
            cc_feature=int(state.ccFeature),
            devtools_mode=int(state.devToolsMode),
        )

    def multi_gpu_mode(self) -> int:
        struct = getattr(self._nvml, _SETTINGS_STRUCT, None)
        if struct is None or not hasattr(self._nvml, _SETTINGS):
            raise NvmlCallError(_SETTINGS, None, "not in this pynvml")
        settings = struct()
        # Some pynvml versions return NVML's status here instead of raising.
        status = self._call(_SETTINGS, ctypes.byref(settings))
        if isinstance(status, int) and status != 0:
            raise NvmlCallError(_SETTINGS, status)
        return int(settings.multiGpuMode)

    def device_count(self) -> int:
        return int(self._call("nvmlDeviceGetCount"))

    def device_handle(self, index: int) -> object:
        handle: object = self._call("nvmlDeviceGetHandleByIndex", index)
        return handle

    def attestation_report(self, handle: object, nonce: bytes) -> SizedBuffer:
        report = self._call("nvmlDeviceGetConfComputeGpuAttestationReport", handle, nonce)
        return SizedBuffer(bytes(report.attestationReport), int(report.attestationReportSize))

    def attestation_cert_chain(self, handle: object) -> SizedBuffer:
        cert = self._call("nvmlDeviceGetConfComputeGpuCertificate", handle)
        return SizedBuffer(bytes(cert.attestationCertChain), int(cert.attestationCertChainSize))


def _code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def _text(exc: BaseException) -> str:
    # pynvml's __str__ asks the driver (nvmlErrorString), which may itself fail.
    try:
        return str(exc)
    except Exception:  # a failed description must not hide the failed call
        return ""
