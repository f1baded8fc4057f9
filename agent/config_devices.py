"""The device-evidence keys of ``[agent]``: where GPU, SEV-SNP and TDX evidence comes from.

Example (defaults shown)::

    [agent]
    # NVIDIA GPU evidence, sent when the verifier's GPU policy asks: "nvml" (needs
    # the `gpu` extra, nvidia-ml-py), "off", or "simulator" with gpu_simulator, a
    # devsim fleet directory (tests and demos only).
    gpu_evidence = "nvml"
    gpu_timeout_seconds = 20.0         # then "unavailable" instead of waiting on NVML
    # AMD SEV-SNP evidence, sent when the verifier's SNP policy asks: "tsm" (the
    # kernel's configfs-tsm interface), "off", or "simulator" with snp_simulator,
    # a devsim.snp host directory (tests and demos only).
    snp_evidence = "tsm"
    # Intel TDX evidence, sent when the verifier's TDX policy asks: "tsm" (a quote
    # through configfs-tsm), "off", or "simulator" with tdx_simulator, a devsim.tdx
    # guest directory (tests and demos only).
    tdx_evidence = "tsm"
    # configfs-tsm's report directory, for SEV-SNP and TDX alike (one interface,
    # the kernel's provider says which CPU answers).
    snp_tsm_dir = "/sys/kernel/config/tsm/report"

``snp_evidence`` defaults to "tsm", not "off": on an SEV-SNP guest the report is
the evidence that the VM's memory is the CPU's to protect, and an agent that
forgot the key would answer "switched off" to a policy that requires it. On any
other host "tsm" costs nothing: the verifier asks only hosts whose group has an
SNP policy, and the answer is then a named "unavailable" reason (no configfs-tsm
directory, or a provider other than sev_guest), never a crash. ``tdx_evidence``
defaults to "tsm" for the same reasons (provider tdx_guest).

The configfs-tsm directory keeps its first name, ``snp_tsm_dir``, and serves
both: it is one kernel interface whatever CPU answers, and a guest is either
SEV-SNP or TDX.

Parsed here so that ``agent.config`` keeps to the agent's general settings; the
values land in :class:`agent.config.AgentConfig` unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NoReturn, TypedDict, cast, get_args

__all__ = [
    "DEFAULT_SNP_TSM_DIR",
    "DEVICE_KEYS",
    "DeviceSettings",
    "GpuSource",
    "SnpSource",
    "TdxSource",
    "parse_device_keys",
]

GpuSource = Literal["nvml", "off", "simulator"]
SnpSource = Literal["tsm", "off", "simulator"]
TdxSource = Literal["tsm", "off", "simulator"]
DEFAULT_SNP_TSM_DIR = Path("/sys/kernel/config/tsm/report")
DEFAULT_GPU_TIMEOUT_SECONDS = 20.0

DEVICE_KEYS = frozenset(
    {
        "gpu_evidence",
        "gpu_simulator",
        "gpu_timeout_seconds",
        "snp_evidence",
        "snp_simulator",
        "snp_tsm_dir",
        "tdx_evidence",
        "tdx_simulator",
    }
)


class DeviceSettings(TypedDict):
    """The device-evidence fields of ``AgentConfig``, to be passed as its keywords."""

    gpu_evidence: GpuSource
    gpu_simulator: Path | None
    gpu_timeout_seconds: float
    snp_evidence: SnpSource
    snp_simulator: Path | None
    snp_tsm_dir: Path
    tdx_evidence: TdxSource
    tdx_simulator: Path | None


# Readers of the [agent] table given by the loader; each failure a located ConfigError.
PathReader = Callable[[str], Path]  # key -> its string value as a path (relative: to the file)
SecondsReader = Callable[[str, float], float]  # key, default -> a positive number of seconds
Fail = Callable[[str, str], NoReturn]  # key, message


def _source(
    agent: dict[str, Any], fail: Fail, key: str, default: str, allowed: tuple[str, ...]
) -> str:
    source = agent.get(key, default)
    if source not in allowed:
        quoted = [f'"{a}"' for a in allowed]
        fail(key, f"expected {', '.join(quoted[:-1])} or {quoted[-1]}")
    return str(source)


def _simulator(
    agent: dict[str, Any], path: PathReader, fail: Fail, *, source_key: str, key: str, what: str
) -> Path | None:
    simulator = path(key) if key in agent else None
    if (agent.get(source_key) == "simulator") != (simulator is not None):
        fail(key, f'{what}, set exactly when {source_key} = "simulator"')
    return simulator


def parse_device_keys(
    agent: dict[str, Any], *, path: PathReader, seconds: SecondsReader, fail: Fail
) -> DeviceSettings:
    """The GPU, SNP and TDX evidence settings of the ``[agent]`` table ``agent``."""
    # cast: _source returns one of exactly the allowed values.
    gpu = cast(GpuSource, _source(agent, fail, "gpu_evidence", "nvml", get_args(GpuSource)))
    snp = cast(SnpSource, _source(agent, fail, "snp_evidence", "tsm", get_args(SnpSource)))
    tdx = cast(TdxSource, _source(agent, fail, "tdx_evidence", "tsm", get_args(TdxSource)))
    return DeviceSettings(
        gpu_evidence=gpu,
        gpu_simulator=_simulator(
            agent,
            path,
            fail,
            source_key="gpu_evidence",
            key="gpu_simulator",
            what="a devsim fleet directory",
        ),
        gpu_timeout_seconds=seconds("gpu_timeout_seconds", DEFAULT_GPU_TIMEOUT_SECONDS),
        snp_evidence=snp,
        snp_simulator=_simulator(
            agent,
            path,
            fail,
            source_key="snp_evidence",
            key="snp_simulator",
            what="a devsim.snp host directory",
        ),
        snp_tsm_dir=path("snp_tsm_dir") if "snp_tsm_dir" in agent else DEFAULT_SNP_TSM_DIR,
        tdx_evidence=tdx,
        tdx_simulator=_simulator(
            agent,
            path,
            fail,
            source_key="tdx_evidence",
            key="tdx_simulator",
            what="a devsim.tdx guest directory",
        ),
    )
