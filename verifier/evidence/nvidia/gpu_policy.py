"""Policy for NVIDIA GPUs and NVSwitches: mode, minimum versions, allowed RIMs.

JSON format (every key listed; unknown keys are refused so a typo cannot
silently drop a rule)::

    {
      "version": 1,
      "allowed_cc_states": ["on"],            # optional, default ["on"]; also
                                              # "devtools", "ppcie", "off"
      "require_ppcie": false,                 # optional, default false
      "min_driver_version": "550.54.15",      # required, dotted decimal
      "min_vbios_version": "96.00.5e.00.01",  # required, dotted hex (as NVIDIA prints it)
      "min_switch_bios_version": "96.10.55.00.01",  # optional; absent = no NVSwitch allowed
      "allowed_rim_ids": ["NV_GPU_DRIVER_GH100_550.54.15", "..."],  # required, non-empty
      "device_count": 8                       # optional: exactly this many devices
    }

Deny by default: the dataclass defaults allow no RIM and no switch; a file
must name its versions and RIM ids, and an empty RIM list is refused on load
(STYLE.md, "Verifying evidence" 5).

Where the mode comes from. The opaque data states no CC / devtools mode: the
parser's author found no such field in any vector (opaque.py decodes every field
seen), and NVIDIA's verifiers take CC mode from NVML, not from the report. So
the mode is an input, ``cc_state``, which the agent reads with NVML
(``nvmlSystemGetConfComputeState`` / ``...Settings``); a missing state is a
failure, never a pass. What the report does attest is used on top: the v1
opaque layout's FEATURE_FLAG (SPT / PPCIE) must agree with the claimed mode, and
PROTECTED_PCIE_STATUS must be 0xAA when protected PCIe is required.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from verifier.evidence.nvidia.opaque import DeviceKind
from verifier.evidence.nvidia.report import AttestationReport
from verifier.evidence.policy_json import optional_bool, policy_document
from verifier.verdict import Reason

CHECK_POLICY = "nvidia.policy"

PPCIE_ENABLED = 0xAA  # PROTECTED_PCIE_STATUS, same encoding as NVDEC0_STATUS
POLICY_FORMAT_VERSION = 1
MAX_POLICY_BYTES = 1 << 20  # a policy is a few KiB; bound what a bad file costs

_DECIMAL_VERSION = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6}){0,5}")
_HEX_VERSION = re.compile(r"[0-9a-fA-F]{1,4}(\.[0-9a-fA-F]{1,4}){0,5}")


class CcState(enum.Enum):
    """The confidential-computing mode NVML reports for the host's GPUs."""

    ON = "on"
    DEVTOOLS = "devtools"  # CC on with debugging tools enabled: not confidential
    PPCIE = "ppcie"  # protected PCIe (multi-GPU mode; per-GPU CC is off)
    OFF = "off"


class PolicyError(ValueError):
    """A policy file is malformed or too permissive to load."""


def parse_driver_version(text: str) -> tuple[int, ...]:
    """ "550.90.07" -> (550, 90, 7): numeric, so 550.100 > 550.90."""
    if not _DECIMAL_VERSION.fullmatch(text):
        raise ValueError(f"driver version {text!r} is not dotted decimal")
    return tuple(int(part) for part in text.split("."))


def parse_firmware_version(text: str) -> tuple[int, ...]:
    """VBIOS / switch BIOS "96.00.5e.00.01" -> (0x96, 0, 0x5e, 0, 1).

    NVIDIA prints each byte in hex, so "96.00.9f" is newer than "96.00.a0" only
    if compared as hex numbers, never as text.
    """
    if not _HEX_VERSION.fullmatch(text):
        raise ValueError(f"firmware version {text!r} is not dotted hex")
    return tuple(int(part, 16) for part in text.split("."))


@dataclass(frozen=True)
class GpuPolicy:
    """What a GPU or NVSwitch must show to affirm. Defaults deny everything."""

    min_driver_version: tuple[int, ...] | None = None
    min_vbios_version: tuple[int, ...] | None = None
    min_switch_bios_version: tuple[int, ...] | None = None
    allowed_rim_ids: frozenset[str] = field(default_factory=frozenset)
    allowed_cc_states: frozenset[CcState] = frozenset({CcState.ON})
    require_ppcie: bool = False
    # Exactly this many devices must be listed (None: any number, at least one), so
    # that a host cannot leave a GPU out of its evidence and still affirm.
    device_count: int | None = None


def _str(doc: dict[str, object], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PolicyError(f"{key} must be a string")
    return value


def _str_list(doc: dict[str, object], key: str) -> list[str] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{key} must be a list of strings")
    return list(value)


_KEYS = frozenset(
    {
        "version",
        "allowed_cc_states",
        "require_ppcie",
        "min_driver_version",
        "min_vbios_version",
        "min_switch_bios_version",
        "allowed_rim_ids",
        "device_count",
    }
)


def load_policy(data: bytes | str) -> GpuPolicy:
    """Parse and validate a policy JSON document (format in the module docstring)."""
    doc = policy_document(data, _KEYS, POLICY_FORMAT_VERSION, MAX_POLICY_BYTES, PolicyError)
    driver, vbios = _str(doc, "min_driver_version"), _str(doc, "min_vbios_version")
    if driver is None or vbios is None:
        raise PolicyError("min_driver_version and min_vbios_version are required")
    rim_ids = _str_list(doc, "allowed_rim_ids")
    if not rim_ids:
        raise PolicyError("allowed_rim_ids must list at least one RIM id")
    states = _str_list(doc, "allowed_cc_states") or [CcState.ON.value]
    ppcie = optional_bool(doc, "require_ppcie", PolicyError)
    switch = _str(doc, "min_switch_bios_version")
    count = doc.get("device_count")
    # 64: the agent's and the verifier's bound on devices per host.
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or not 1 <= count <= 64):  # fmt: skip
        raise PolicyError("device_count must be a whole number from 1 to 64")
    try:
        return GpuPolicy(
            min_driver_version=parse_driver_version(driver),
            min_vbios_version=parse_firmware_version(vbios),
            min_switch_bios_version=None if switch is None else parse_firmware_version(switch),
            allowed_rim_ids=frozenset(rim_ids),
            allowed_cc_states=frozenset(CcState(s) for s in states),
            require_ppcie=ppcie,
            device_count=count,
        )
    except ValueError as exc:
        raise PolicyError(str(exc)) from exc


def _at_least(
    what: str,
    reported: str | None,
    minimum: tuple[int, ...] | None,
    parse: Callable[[str], tuple[int, ...]],
) -> list[Reason]:
    code = f"nvidia.policy.{what}_too_old"
    if minimum is None:
        return [Reason(code, f"the policy sets no minimum {what} version: denied")]
    try:
        value = parse(reported or "")
    except ValueError:
        return [Reason(code, f"{what} version {reported!r} is unreadable")]
    if value < minimum:
        shown = ".".join(str(v) for v in minimum)
        return [Reason(code, f"{what} version {reported} is below the minimum {shown}")]
    return []


def _mode_reasons(
    policy: GpuPolicy, report: AttestationReport, cc_state: CcState | None
) -> list[Reason]:
    if cc_state is None:
        # A required check that could not run is a failure (STYLE.md 3).
        return [Reason("nvidia.policy.cc_state_unknown", "no CC state was supplied for the host")]
    reasons = []
    if cc_state not in policy.allowed_cc_states:
        code = "nvidia.policy.devtools" if cc_state is CcState.DEVTOOLS else "nvidia.policy.cc_mode"
        reasons.append(Reason(code, f"CC state {cc_state.value} is not allowed"))
    flag = report.opaque.feature_flag_name
    if flag is not None and (flag == "PPCIE") != (cc_state is CcState.PPCIE):
        # The signed report contradicts what the host claimed: trust neither.
        reasons.append(
            Reason("nvidia.policy.mode_mismatch", f"report says {flag}, host says {cc_state.value}")
        )
    return reasons


def appraise_policy(
    policy: GpuPolicy,
    report: AttestationReport,
    *,
    rim_ids: Iterable[str | None],
    cc_state: CcState | None,
) -> list[Reason]:
    """Every policy violation of one authenticated device report.

    Checks: CC mode (GPUs) is allowed and agrees with the report's feature flag;
    protected PCIe is on when required; driver (GPUs) and VBIOS / switch BIOS
    versions are at least the minimum; every RIM id the device needs is allowed.
    """
    reasons: list[Reason] = []
    opaque = report.opaque
    if opaque.device is DeviceKind.GPU:
        reasons += _mode_reasons(policy, report, cc_state)
        if policy.require_ppcie and opaque.protected_pcie_status != PPCIE_ENABLED:
            status = opaque.protected_pcie_status
            shown = "absent" if status is None else f"0x{status:02x}"
            reasons.append(Reason("nvidia.policy.ppcie_off", f"PROTECTED_PCIE_STATUS {shown}"))
        reasons += _at_least(
            "driver", opaque.driver_version, policy.min_driver_version, parse_driver_version
        )
        reasons += _at_least(
            "vbios", opaque.vbios_version, policy.min_vbios_version, parse_firmware_version
        )
    else:
        reasons += _at_least(
            "switch_bios",
            opaque.vbios_version,
            policy.min_switch_bios_version,
            parse_firmware_version,
        )
    for rim_id in rim_ids:
        if rim_id is None or rim_id not in policy.allowed_rim_ids:
            reasons.append(Reason("nvidia.policy.rim_not_allowed", f"RIM {rim_id} is not allowed"))
    return reasons
