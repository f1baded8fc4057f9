"""The per-kind data of tests/integration/test_group_policy_flow.py: for the NVIDIA GPU,
AMD SEV-SNP and Intel TDX policies, a valid policy, what proposing it shows, how a
changed one reads as a diff, and the malformed ones each loader refuses."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from weightgate.v1 import operator_pb2

H100_RIM = "NV_GPU_DRIVER_GH100_550.54.15"
VBIOS_RIM = "NV_GPU_VBIOS_1010_0200_882_96005E0001"
# The launch measurement of the shared Trustee v2 vector (tests/unit/test_snp_appraise.py).
TRUSTEE = (
    "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c"
    "23500644e0e692e6be917f9050d3d38c"
)
OTHER = "5e" * 48
MILAN_TCB = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}
NEWER_TCB = {**MILAN_TCB, "microcode": 120}
# 48-byte register values (verifier/evidence/tdx/policy.py), as the loader takes them: hex.
GOLDEN = "ab" * 48
RTMR0 = "0c" * 48
OWNER = "de" * 48


def canonical(document: Any) -> str:
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def gpu_policy(*rim_ids: str, **overrides: Any) -> dict[str, Any]:
    """A valid policy (the format in verifier/evidence/nvidia/gpu_policy.py)."""
    return {
        "version": 1,
        "allowed_cc_states": ["on"],
        "min_driver_version": "550.54.15",
        "min_vbios_version": "96.00.5e.00.01",
        "allowed_rim_ids": list(rim_ids or (H100_RIM, VBIOS_RIM)),
        **overrides,
    }


def snp_policy(*measurements: str, **overrides: Any) -> dict[str, Any]:
    """A valid policy (the format in verifier/evidence/snp/policy.py)."""
    return {
        "version": 1,
        "allowed_measurements": list(measurements or (TRUSTEE,)),
        "min_tcb": {"Milan": MILAN_TCB},
        **overrides,
    }


def tdx_policy(*mrtds: str, **overrides: Any) -> dict[str, Any]:
    """A valid policy (the format in verifier/evidence/tdx/policy.py)."""
    return {"version": 1, "mrtd": list(mrtds or (GOLDEN,)), **overrides}


def _without(policy: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in policy.items() if k != key}


@dataclass(frozen=True)
class PolicyKind:
    name: str  # the CLI's propose-<name> / show-<name>
    field: str  # the ProposedChange field, the proposal kind, the store's get_<field>
    label: str  # "NVIDIA GPU policy"
    rpc: str  # the read RPC
    message: Any  # the ProposedChange field's message type
    policy: Callable[..., dict[str, Any]]  # a valid policy
    group: str  # the group the first test proposes for
    proposed_lines: tuple[str, ...]  # among the lines `propose-<name>` prints
    slow: dict[str, Any]  # proposed first, goes stale
    fast: dict[str, Any]  # proposed second, applied first
    # Over `fast` in force: proposed (the first by olga, the others by otto), its diff.
    diffs: tuple[tuple[dict[str, Any], list[str]], ...]
    refused: tuple[tuple[dict[str, Any] | bytes, str], ...]  # malformed policy, reason

    def __str__(self) -> str:
        return self.name

    def change(self, group: str, policy: dict[str, Any] | bytes) -> operator_pb2.ProposedChange:
        data = policy if isinstance(policy, bytes) else json.dumps(policy).encode()
        message = self.message(group=group, policy_json=data)
        return operator_pb2.ProposedChange(**{self.field: message})


COMMON_REFUSALS: tuple[tuple[dict[str, Any] | bytes, str], ...] = (
    (b"{not json", "policy is not JSON"),
)
GPU = PolicyKind(
    "gpu", "gpu_policy", "NVIDIA GPU policy", "GetGpuPolicy", operator_pb2.GpuPolicyChange,
    gpu_policy, "h100",
    (f"  + allowed_rim_ids: {H100_RIM}", '  + min_driver_version: "550.54.15"'),
    gpu_policy(H100_RIM), gpu_policy(VBIOS_RIM),
    (
        (gpu_policy(VBIOS_RIM, H100_RIM), [f"+ allowed_rim_ids: {H100_RIM}"]),
        (
            gpu_policy(VBIOS_RIM, allowed_cc_states=["ppcie"]),
            ["- allowed_cc_states: on", "+ allowed_cc_states: ppcie"],
        ),
    ),
    (
        (gpu_policy(allowed_rim_ids=[]), "allowed_rim_ids must list at least one RIM id"),
        (gpu_policy(allow_everything=True), "unknown policy keys"),
        (_without(gpu_policy(), "min_vbios_version"), "are required"),
        (gpu_policy(min_driver_version="latest"), "is not dotted decimal"),
        (gpu_policy(version=2), "policy version must be 1"),
        *COMMON_REFUSALS,
    ),
)  # fmt: skip
SNP = PolicyKind(
    "snp", "snp_policy", "AMD SEV-SNP policy", "GetSnpPolicy", operator_pb2.SnpPolicyChange,
    snp_policy, "milan",
    (f"  + allowed_measurements: {TRUSTEE}", f"  + min_tcb[Milan]: {canonical(MILAN_TCB)}"),
    snp_policy(TRUSTEE), snp_policy(OTHER),
    (
        (snp_policy(OTHER, TRUSTEE), [f"+ allowed_measurements: {TRUSTEE}"]),
        (
            snp_policy(
                OTHER,
                min_tcb={"Milan": NEWER_TCB},
                allowed_signing_keys=["VLEK"],
                allowed_csp_ids=["CN=cc-us-east-2.amazonaws.com"],
            ),
            [
                "- allowed_signing_keys: VCEK",
                "+ allowed_signing_keys: VLEK",
                f"- min_tcb[Milan]: {canonical(MILAN_TCB)}",
                f"+ min_tcb[Milan]: {canonical(NEWER_TCB)}",
                '+ allowed_csp_ids: ["CN=cc-us-east-2.amazonaws.com"]',
            ],
        ),
        (snp_policy(OTHER, allow_smt=True), ["+ allow_smt: true"]),
    ),
    (
        (snp_policy(allowed_measurements=[]), "allowed_measurements must be a non-empty list"),
        (
            _without(snp_policy(), "allowed_measurements"),
            "allowed_measurements must list at least one launch measurement",
        ),
        (snp_policy(min_tcb={}), "min_tcb must map at least one product line"),
        (snp_policy(allow_everything=True), "unknown policy keys"),
        (snp_policy(min_tcb={"Milan": {"bootloader": 3}}), "min_tcb[Milan] must give exactly"),
        (snp_policy(min_tcb={"Zen9": MILAN_TCB}), "unknown product line 'Zen9'"),
        (snp_policy(allowed_measurements=["abcd"]), "must be 48 bytes"),
        (snp_policy(allow_debug="yes"), "allow_debug must be true or false"),
        (snp_policy(max_vmpl=4), "max_vmpl must be an integer 0-3"),
        (snp_policy(allowed_signing_keys=["ANY"]), "allowed_signing_keys must be a non-empty list"),
        (snp_policy(version=2), "policy version must be 1"),
        *COMMON_REFUSALS,
        (b"[]", "policy must be a JSON object"),
    ),
)  # fmt: skip
TDX = PolicyKind(
    "tdx", "tdx_policy", "Intel TDX policy", "GetTdxPolicy", operator_pb2.TdxPolicyChange,
    tdx_policy, "sapphire",
    # The loader's default is shown, so that approvers see which TCB statuses pass.
    (f"  + mrtd: {GOLDEN}", "  + accepted_tcb_statuses: UpToDate"),
    tdx_policy(GOLDEN), tdx_policy(OTHER),
    (
        # Hex in any case is the same value to the loader: compared in lower case.
        (tdx_policy(OTHER.upper(), GOLDEN), [f"+ mrtd: {GOLDEN}"]),
        (
            tdx_policy(GOLDEN, rtmr0=[RTMR0], mrconfigid=[OTHER], mrowner=[OWNER]),
            [
                f"- mrtd: {OTHER}",
                f"+ mrtd: {GOLDEN}",
                f"+ rtmr0: {RTMR0}",
                f"+ mrconfigid: {OTHER}",
                f"+ mrowner: {OWNER}",
            ],
        ),
        (
            tdx_policy(OTHER, accepted_tcb_statuses=["SWHardeningNeeded"]),
            ["- accepted_tcb_statuses: UpToDate", "+ accepted_tcb_statuses: SWHardeningNeeded"],
        ),
        (
            tdx_policy(OTHER, allow_debug=True, out_of_date_grace_days=30),
            ["+ allow_debug: true", "+ out_of_date_grace_days: 30"],
        ),
        # Naming the loader's default changes nothing that appraisal enforces.
        (tdx_policy(OTHER, accepted_tcb_statuses=["UpToDate"]), ["(no change)"]),
    ),
    (
        (tdx_policy(mrtd=[]), "mrtd must be a non-empty list of hex strings"),
        ({"version": 1}, "mrtd must list at least one allowed MRTD"),
        (tdx_policy(allow_everything=True), "unknown policy keys"),
        (tdx_policy(mrtds=[GOLDEN]), "unknown policy keys: ['mrtds']"),
        (tdx_policy(mrtd=["abcd"]), "mrtd: values are 48 bytes"),
        (tdx_policy(rtmr0=["zz" * 48]), "is not hex"),
        (tdx_policy(rtmr2=[]), "rtmr2 must be a non-empty list"),
        (tdx_policy(allow_debug="yes"), "allow_debug must be true or false"),
        (tdx_policy(accepted_tcb_statuses=["Revoked"]), "a Revoked TCB cannot be accepted"),
        (tdx_policy(accepted_tcb_statuses=["Fine"]), "accepted_tcb_statuses must list some of"),
        (tdx_policy(accepted_tcb_statuses=[]), "accepted_tcb_statuses must list some of"),
        (tdx_policy(out_of_date_grace_days=0), "out_of_date_grace_days must be 1..365"),
        (tdx_policy(out_of_date_grace_days=True), "out_of_date_grace_days must be an integer"),
        (tdx_policy(version=2), "policy version must be 1"),
        *COMMON_REFUSALS,
        (b"[]", "policy must be a JSON object"),
    ),
)  # fmt: skip
POLICY_KINDS = (GPU, SNP, TDX)
# Every read RPC: (RPC, what its NOT_FOUND names, the `reference show-*` command).
POLICY_READS = (
    ("GetImaPolicy", "IMA runtime policy", "show-ima"),
    *((kind.rpc, kind.label, f"show-{kind.name}") for kind in POLICY_KINDS),
)
