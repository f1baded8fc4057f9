"""Collect NVIDIA GPU confidential-computing evidence through NVML, untouched.

For every GPU NVML enumerates, the collector asks for an SPDM attestation report
over a nonce the caller derives for that GPU (``nonce_for(index)``) and for the
GPU's attestation certificate chain, and keeps both exactly as the driver returned
them, trimmed only to the sizes NVML reports. Nothing here parses or judges the
evidence: it is untrusted, and the verifier parses, authenticates and appraises it
(``verifier/evidence/nvidia``). The system-wide CC state, protected-PCIe mode and
driver version are recorded too: the report's opaque data states no CC or devtools
mode, so the verifier's GPU policy takes the mode from NVML (``cc_mode``) and checks
it against what the signed report does attest (the v1 FEATURE_FLAG).

NVML is reached through :class:`NvmlApi`, which names exactly the calls used, so
tests drive the collector with recorded evidence. In production it is pynvml
(nvidia-ml-py, the optional ``gpu`` extra), imported lazily by
:mod:`agent.collectors.gpu_nvml`; without it the collection says why it is
unavailable instead of raising.

NVSwitch evidence is not collected: NVML exposes no switch attestation report or
certificate; NVIDIA reads those through a separate library (NSCQ, libnvidia-nscq).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

T = TypeVar("T")

# NVML_CC_GPU_CEC_NONCE_SIZE: the SPDM GET_MEASUREMENTS nonce is 32 bytes.
NONCE_SIZE = 32
# An 8-GPU HGX board is the largest single host NVIDIA ships; a driver reporting
# far more is misreporting, and each GPU costs a report and a chain in memory.
MAX_GPUS = 64

# NVML enums (nvml.h), for the state strings only.
_CC_ENVIRONMENT = {0: "unavailable", 1: "sim", 2: "prod"}
_ON_OFF = {0: "off", 1: "on"}
_MULTI_GPU_MODE = {0: "none", 1: "protected-pcie"}


class NvmlCallError(Exception):
    """An NVML call failed: its NVML_ERROR_* code, or None when the call is missing."""

    def __init__(self, call: str, code: int | None, text: str = "") -> None:
        self.call = call
        self.code = code
        self.text = text
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        """``<call> failed: NVML error <code> (<text>)``."""
        if self.code is None:
            return f"{self.call} failed: {self.text or 'no NVML error code'}"
        suffix = f" ({self.text})" if self.text else ""
        return f"{self.call} failed: NVML error {self.code}{suffix}"


@dataclass(frozen=True)
class SizedBuffer:
    """A fixed-size NVML output array and the number of its bytes that are valid."""

    data: bytes
    size: int


@dataclass(frozen=True)
class ConfComputeState:
    """``nvmlConfComputeSystemState_t``: raw enum values."""

    environment: int
    cc_feature: int
    devtools_mode: int

    def describe(self) -> str:
        """``cc=on devtools=off environment=prod``; unknown values are shown as numbers."""
        return (
            f"cc={_ON_OFF.get(self.cc_feature, str(self.cc_feature))} "
            f"devtools={_ON_OFF.get(self.devtools_mode, str(self.devtools_mode))} "
            f"environment={_CC_ENVIRONMENT.get(self.environment, str(self.environment))}"
        )


class NvmlApi(Protocol):
    """The NVML calls the collector makes (pynvml names in each docstring).

    Every method raises :class:`NvmlCallError` when NVML returns an error.
    """

    def init(self) -> None:
        """``nvmlInit``."""

    def shutdown(self) -> None:
        """``nvmlShutdown``."""

    def driver_version(self) -> str:
        """``nvmlSystemGetDriverVersion``."""

    def conf_compute_state(self) -> ConfComputeState:
        """``nvmlSystemGetConfComputeState``."""

    def multi_gpu_mode(self) -> int:
        """``nvmlSystemGetConfComputeSettings``: ``multiGpuMode`` (1 = protected PCIe)."""

    def device_count(self) -> int:
        """``nvmlDeviceGetCount``."""

    def device_handle(self, index: int) -> object:
        """``nvmlDeviceGetHandleByIndex``: an opaque handle."""

    def attestation_report(self, handle: object, nonce: bytes) -> SizedBuffer:
        """``nvmlDeviceGetConfComputeGpuAttestationReport``.

        ``attestationReport`` and ``attestationReportSize``.
        """

    def attestation_cert_chain(self, handle: object) -> SizedBuffer:
        """``nvmlDeviceGetConfComputeGpuCertificate``.

        ``attestationCertChain`` and ``attestationCertChainSize``.
        """


@dataclass(frozen=True)
class GpuEvidence:
    """What one GPU returned: evidence bytes untouched, and why any is missing."""

    index: int
    nonce: bytes
    report: bytes | None
    cert_chain: bytes | None
    reasons: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """Both the report and the chain were collected."""
        return self.report is not None and self.cert_chain is not None


@dataclass(frozen=True)
class GpuCollection:
    """Every GPU's evidence, or the reason there is none.

    ``unavailable`` is set when no GPU could be asked (no pynvml, NVML failed to
    start, no GPUs); ``reasons`` lists system-level calls that failed while the GPUs
    were still asked.
    """

    unavailable: str | None
    gpus: tuple[GpuEvidence, ...] = ()
    driver_version: str | None = None
    cc_state: str | None = None
    multi_gpu_mode: str | None = None
    # The mode the verifier's GPU policy speaks of: "on", "devtools", "ppcie", "off";
    # None when NVML could not say (the verifier then fails the policy, never guesses).
    cc_mode: str | None = None
    reasons: tuple[str, ...] = ()


def collect_gpu_evidence(
    nonce_for: Callable[[int], bytes], *, nvml: NvmlApi | None = None
) -> GpuCollection:
    """Ask every GPU for a report over its own nonce and for its certificate chain.

    Steps, in order: load NVML (pynvml when ``nvml`` is None; missing → unavailable);
    ``nvmlInit`` (failure → unavailable); driver version, CC state and multi-GPU
    mode (failures recorded, collection goes on); ``nvmlDeviceGetCount`` (failure
    or zero → unavailable); per GPU: ``nonce_for(index)`` (must be 32 bytes, else
    ValueError), handle, report, chain. An NVML error on one GPU is recorded
    for that GPU and the others are still asked. ``nvmlShutdown`` is called
    whenever ``nvmlInit`` succeeded, also when this raises.
    """
    if nvml is None:
        from agent.collectors.gpu_nvml import load_pynvml  # noqa: PLC0415 (optional)

        loaded = load_pynvml()
        if isinstance(loaded, str):
            return GpuCollection(unavailable=loaded)
        nvml = loaded
    try:
        nvml.init()
    except NvmlCallError as exc:
        # No nvmlShutdown: NVML is not initialised, it would only fail.
        return GpuCollection(unavailable=exc.reason)
    reasons: list[str] = []
    try:
        collection = _collect(nvml, nonce_for, reasons)
    finally:
        try:
            nvml.shutdown()
        except NvmlCallError as exc:
            reasons.append(exc.reason)
    return replace(collection, reasons=tuple(reasons))


def _collect(nvml: NvmlApi, nonce_for: Callable[[int], bytes], reasons: list[str]) -> GpuCollection:
    driver_version = _system(reasons, nvml.driver_version)
    state = _system(reasons, nvml.conf_compute_state)
    mode = _system(reasons, nvml.multi_gpu_mode)
    system = GpuCollection(
        unavailable=None,
        driver_version=driver_version,
        cc_state=state.describe() if state is not None else None,
        multi_gpu_mode=_MULTI_GPU_MODE.get(mode, str(mode)) if mode is not None else None,
        cc_mode=cc_mode(state, mode),
    )
    try:
        count = nvml.device_count()
    except NvmlCallError as exc:
        return replace(system, unavailable=exc.reason)
    if count <= 0:
        return replace(system, unavailable="no NVIDIA GPU: nvmlDeviceGetCount returned 0")
    if count > MAX_GPUS:
        return replace(
            system, unavailable=f"nvmlDeviceGetCount returned {count}, more than {MAX_GPUS}"
        )
    gpus = tuple(_collect_one(nvml, index, nonce_for) for index in range(count))
    return replace(system, gpus=gpus)


def cc_mode(state: ConfComputeState | None, multi_gpu_mode: int | None) -> str | None:
    """NVML's state as one mode: protected PCIe, CC with devtools, CC on, or off.

    None unless every value needed is known: an unknown enum value is not "off".
    """
    if state is None or multi_gpu_mode not in _MULTI_GPU_MODE:
        return None
    if multi_gpu_mode == 1:
        return "ppcie"
    if state.cc_feature not in _ON_OFF or state.devtools_mode not in _ON_OFF:
        return None
    if state.cc_feature == 0:
        return "off"
    return "devtools" if state.devtools_mode == 1 else "on"


def _system(reasons: list[str], call: Callable[[], T]) -> T | None:
    try:
        return call()
    except NvmlCallError as exc:
        reasons.append(exc.reason)
        return None


def _collect_one(nvml: NvmlApi, index: int, nonce_for: Callable[[int], bytes]) -> GpuEvidence:
    nonce = nonce_for(index)
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        size = len(nonce) if isinstance(nonce, bytes | bytearray) else type(nonce).__name__
        raise ValueError(f"nonce for GPU {index} must be {NONCE_SIZE} bytes, got {size}")
    try:
        handle = nvml.device_handle(index)
    except NvmlCallError as exc:
        return GpuEvidence(index, nonce, None, None, (exc.reason,))
    reasons: list[str] = []
    report = _trimmed(
        reasons,
        "nvmlDeviceGetConfComputeGpuAttestationReport",
        lambda: nvml.attestation_report(handle, nonce),
    )
    chain = _trimmed(
        reasons,
        "nvmlDeviceGetConfComputeGpuCertificate",
        lambda: nvml.attestation_cert_chain(handle),
    )
    return GpuEvidence(index, nonce, report, chain, tuple(reasons))


def _trimmed(reasons: list[str], call: str, fetch: Callable[[], SizedBuffer]) -> bytes | None:
    """The valid prefix of an NVML output array, or None with the reason recorded."""
    try:
        buffer = fetch()
    except NvmlCallError as exc:
        reasons.append(exc.reason)
        return None
    if buffer.size <= 0:
        reasons.append(f"{call} returned an empty result")
        return None
    if buffer.size > len(buffer.data):
        reasons.append(f"{call} claims {buffer.size} bytes in a {len(buffer.data)}-byte array")
        return None
    return buffer.data[: buffer.size]
