"""Appraise a GPU / NVSwitch report against its verified reference manifests (RIMs).

Appraisal reports *every* violation (STYLE.md, "Verifying evidence" 1): a list of
named reasons, empty when the measurements and versions are as NVIDIA signed them.
Only :class:`VerifiedRim` values are accepted, so golden values are never read
from a RIM whose signature and chain did not verify (NVIDIA's Python verifier
reads them before checking the signature).

The rules follow NVIDIA's C++ SDK (attestation-sdk, ``LocalGpuVerifier::
generate_set_measurement_claims``), which PROVENANCE.md section 5 names as the
correct reference:

* RIM entry k is compared with SPDM measurement block k+1; only ``active``
  entries count, and the block must equal one of the entry's alternatives.
* A GPU needs two RIMs: the driver RIM and the VBIOS RIM each cover some indexes,
  together their union. An index active in both is a conflict
  (``RimMeasurementConflict``): which golden value would apply is undefined.
* NVDEC rule: when the report's NVDEC0_STATUS is 0x55 (NVDEC0 disabled), RIM
  index 35 is skipped in both RIMs; 0xAA (enabled) compares it; any other value,
  or a missing field, is an error (the SDK returns ``InternalError``).
  nv-local-gpu-verifier 2.7.3 compares the status bytes to an Enum and so never
  skips (PROVENANCE.md section 5); we follow the SDK.
* A RIM's ``colloquialVersion`` must equal the report's driver / VBIOS version,
  case-insensitively (RIMs write "96.00.5E.00.01", reports "96.00.5e.00.01").
* An NVSwitch has one RIM, its BIOS RIM, compared like a VBIOS RIM.
"""

from __future__ import annotations

from verifier.evidence.nvidia.opaque import DeviceKind
from verifier.evidence.nvidia.report import AttestationReport
from verifier.evidence.nvidia.rim import VerifiedRim
from verifier.verdict import Reason

CHECK_MEASUREMENTS = "nvidia.measurement.compare"
CHECK_RIM_VERSION = "nvidia.rim.version"

NVDEC_INDEX = 35  # RIM index of the NVDEC0 measurement (SPDM block 36)
NVDEC_DISABLED = 0x55
NVDEC_ENABLED = 0xAA

# NVSwitch opaque data carries no project / SKU fields; NVIDIA's tools use the
# LS10 constants (nv-local-gpu-verifier NVSwitch settings PROJECT, PROJECT_SKU,
# CHIP_SKU), giving ids such as NV_SWITCH_BIOS_5612_0002_890_9610550001.
LS10_PROJECT, LS10_PROJECT_SKU, LS10_CHIP_SKU = "5612", "0002", "890"

# Driver RIM id prefix by chip, as NVIDIA's RIM service names them
# (expected_results.json: NV_GPU_DRIVER_GH100_545.00, NV_GPU_CC_DRIVER_GB100_575.32).
_DRIVER_RIM_PREFIX = {"GH100": "NV_GPU_DRIVER_GH100_", "GB100": "NV_GPU_CC_DRIVER_GB100_"}


def _compact_version(version: str) -> str:
    return version.replace(".", "").upper()


def driver_rim_id(report: AttestationReport, hwmodel: str) -> str | None:
    """NVIDIA's RIM id for the GPU driver, or None when it cannot be named.

    ``hwmodel`` is the authenticated chain's boot-ROM name ("GH100 A01 GSP BROM"),
    not the evidence file's unauthenticated ``arch`` label.
    """
    prefix = _DRIVER_RIM_PREFIX.get(hwmodel.split(" ", 1)[0])
    version = report.opaque.driver_version
    if prefix is None or not version:
        return None
    return prefix + version


def firmware_rim_id(report: AttestationReport) -> str | None:
    """NVIDIA's RIM id for the GPU VBIOS or the NVSwitch BIOS, or None if unnamed."""
    opaque = report.opaque
    if not opaque.vbios_version:
        return None
    version = _compact_version(opaque.vbios_version)
    if opaque.device is DeviceKind.NVSWITCH:
        return f"NV_SWITCH_BIOS_{LS10_PROJECT}_{LS10_PROJECT_SKU}_{LS10_CHIP_SKU}_{version}"
    if not (opaque.project and opaque.project_sku and opaque.chip_sku):
        return None
    return f"NV_GPU_VBIOS_{opaque.project}_{opaque.project_sku}_{opaque.chip_sku}_{version}"


def _version_reasons(report: AttestationReport, role: str, rim: VerifiedRim) -> list[Reason]:
    reported = report.opaque.driver_version if role == "driver" else report.opaque.vbios_version
    expected = rim.content.colloquial_version
    if reported is None or reported.lower() != expected.lower():
        return [
            Reason(
                "nvidia.rim.version_mismatch",
                f"{role} RIM {rim.tag_id[:16]}… is for version {expected}, "
                f"the report says {reported or 'nothing'}",
            )
        ]
    return []


def _nvdec_skip(report: AttestationReport, reasons: list[Reason]) -> bool | None:
    """Whether RIM index 35 is skipped; None (with a reason) when the status is unusable."""
    status = report.opaque.nvdec0_status
    if status == NVDEC_DISABLED:
        return True
    if status == NVDEC_ENABLED:
        return False
    shown = "absent" if status is None else f"0x{status:02x}"
    reasons.append(
        Reason("nvidia.measurement.nvdec_status_unknown", f"NVDEC0_STATUS {shown}: not 0x55/0xAA")
    )
    return None


def mismatched_indexes(
    report: AttestationReport, golden: dict[int, tuple[bytes, ...]], *, skip: frozenset[int]
) -> list[int]:
    """RIM indexes (sorted) whose block k+1 is absent or equals none of the alternatives."""
    found = []
    for index in sorted(golden.keys() - skip):
        try:
            value: bytes | None = report.block(index + 1).value
        except KeyError:
            value = None  # NVIDIA's SDK counts a missing block as a mismatch
        # Golden values are public; constant-time comparison buys nothing here.
        if value not in golden[index]:
            found.append(index)
    return found


def active_golden(rim: VerifiedRim) -> dict[int, tuple[bytes, ...]]:
    """The RIM's active entries: index -> accepted SHA-384 values."""
    return {m.index: m.alternatives for m in rim.measurements if m.active}


def _mismatch(
    report: AttestationReport, role: str, index: int, accepted: tuple[bytes, ...]
) -> Reason:
    try:
        got = report.block(index + 1).value.hex()[:16] + "…"
    except KeyError:
        got = "no such block"
    allowed = ", ".join(g.hex()[:16] + "…" for g in accepted)
    return Reason(
        "nvidia.measurement.mismatch",
        f"index {index} ({role} RIM, SPDM block {index + 1}): report {got}, RIM allows {allowed}",
    )


def compare_measurements(
    report: AttestationReport, driver_rim: VerifiedRim | None, vbios_rim: VerifiedRim | None
) -> list[Reason]:
    """Every way ``report`` differs from its RIMs; empty when it matches them.

    For an NVSwitch pass its BIOS RIM as ``vbios_rim`` and no driver RIM.
    Checks, all of them reported: each needed RIM is present (``nvidia.rim.missing``;
    a driver RIM for a switch is ``nvidia.rim.unexpected``); RIM versions equal the
    report's (``nvidia.rim.version_mismatch``); no index active in both RIMs
    (``nvidia.measurement.index_conflict``); NVDEC0 status known for a GPU
    (``nvidia.measurement.nvdec_status_unknown``); every active RIM entry equals
    one of its alternatives (``nvidia.measurement.mismatch``, one per index).
    """
    reasons: list[Reason] = []
    switch = report.opaque.device is DeviceKind.NVSWITCH
    roles: list[tuple[str, VerifiedRim]] = []
    if switch:
        if driver_rim is not None:
            reasons.append(Reason("nvidia.rim.unexpected", "an NVSwitch has no driver RIM"))
    elif driver_rim is None:
        reasons.append(Reason("nvidia.rim.missing", "no verified driver RIM"))
    else:
        roles.append(("driver", driver_rim))
    if vbios_rim is None:
        what = "switch BIOS" if switch else "VBIOS"
        reasons.append(Reason("nvidia.rim.missing", f"no verified {what} RIM"))
    else:
        roles.append(("vbios", vbios_rim))

    for role, rim in roles:
        reasons += _version_reasons(report, role, rim)

    golden = {role: active_golden(rim) for role, rim in roles}
    if len(golden) == 2:
        both = golden["driver"].keys() & golden["vbios"].keys()
        if both:
            # NVIDIA's SDK stops comparing here: no golden value is authoritative.
            reasons.append(
                Reason(
                    "nvidia.measurement.index_conflict",
                    f"indexes active in both RIMs: {sorted(both)}",
                )
            )
            return reasons

    skip: set[int] = set()
    if not switch and golden:
        nvdec_skip = _nvdec_skip(report, reasons)
        if nvdec_skip is None:
            return reasons
        if nvdec_skip:
            skip.add(NVDEC_INDEX)
    for role, values in golden.items():
        for index in mismatched_indexes(report, values, skip=frozenset(skip)):
            reasons.append(_mismatch(report, role, index, values[index]))
    return reasons
