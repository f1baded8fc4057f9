"""Protected-PCIe topology: every GPU is wired to exactly the NVSwitches that attested.

In protected-PCIe (PPCIe) mode the GPUs of an HGX board talk through NVSwitches.
A GPU's report lists the PDIs of the switches on its NVLink ports (opaque field 22
in GPU reports, one entry per port, so each switch appears several times); each
switch's report carries its own PDI (field 22 in switch reports). If a GPU names
a switch that did not attest, GPU traffic crosses an unverified device; if an
attested switch is missing from a GPU's list, the evidence describes another
system. Both are failures, reported on the GPU (nvtrust ppcie-verifier, topology
check; PROVENANCE.md section 4.1: the 8-GPU vector lists the 4 switch PDIs).

Only reports that authenticated are passed in: an unauthenticated switch did not
attest, whatever its report says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from verifier.evidence.nvidia.report import AttestationReport
from verifier.verdict import Reason

CHECK_TOPOLOGY = "nvidia.topology"


def _pdis(values: Iterable[int]) -> str:
    return ", ".join(f"{v:016x}" for v in sorted(values)) or "none"


def topology_reasons(
    gpus: Mapping[str, AttestationReport], switches: Iterable[AttestationReport]
) -> dict[str, list[Reason]]:
    """For each GPU name, the topology violations (empty list when it matches)."""
    attested = {s.opaque.device_pdi for s in switches if s.opaque.device_pdi is not None}
    result: dict[str, list[Reason]] = {}
    for name, report in gpus.items():
        listed = set(report.opaque.switch_pdis or ())
        reasons = []
        if listed != attested:
            reasons.append(
                Reason(
                    "nvidia.topology.switch_mismatch",
                    f"{name} is connected to switches not attested: {_pdis(listed - attested)}; "
                    f"attested switches it does not list: {_pdis(attested - listed)}",
                )
            )
        result[name] = reasons
    return result
