"""`weightgate evidence verify nvgpu`: every GPU and NVSwitch of a host, from files.

Runs :func:`verify_devices` with RIMs served from the offline store, then, per
device that authenticated, OCSP over its device chain and over the signing
chain of each RIM it used. OCSP is never silently skipped: without responses
each device carries the warning ``nvidia.ocsp.not_checked`` and the host is at
best a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from verifier.evidence.nvidia.chain import DEVICE_ROOT_SPKI_SHA256, DeviceChain
from verifier.evidence.nvidia.gpu_policy import CcState, GpuPolicy
from verifier.evidence.nvidia.ocsp import NOT_CHECKED, WARNING_CODES, OcspPolicy
from verifier.evidence.nvidia.ocsp_chain import ResponseSource, check_chain_ocsp
from verifier.evidence.nvidia.offline_rims import StoreRimSource
from verifier.evidence.nvidia.report_files import EvidenceEntry
from verifier.evidence.nvidia.rim_cache import signing_path_cached
from verifier.evidence.nvidia.rim_store import FileRimStore
from verifier.evidence.nvidia.verify_gpu import DeviceVerdict, verify_devices
from verifier.evidence.report import CheckOutcome, EvidenceReport, Status, verdict_from
from verifier.verdict import Reason, Tier, Verdict

__all__ = ["OcspInput", "rim_signing_path_for", "verify_nvgpu_offline"]

CHECK_OCSP = "nvidia.ocsp"
CHECK_OCSP_RIMS = "nvidia.ocsp.rims"

# verify_devices' checks in the order it runs them, for people reading the output.
_PIPELINE = (
    "nvidia.report.parse",
    "nvidia.chain",
    "nvidia.report.signature",
    "nvidia.report.nonce",
    "nvidia.report.fwid",
    "nvidia.rim.parse",
    "nvidia.rim.chain",
    "nvidia.rim.signature",
    "nvidia.rim.verify",
    "nvidia.measurement.compare",
    "nvidia.rim.version",
    "nvidia.policy",
    "nvidia.topology",
)


def _in_order(names: frozenset[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(_PIPELINE)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


@dataclass(frozen=True)
class OcspInput:
    """Where OCSP responses come from; ``source`` None means skipped (a warning)."""

    source: ResponseSource | None
    policy: OcspPolicy | None = None


def _device_ocsp(chain: DeviceChain, *, ocsp: OcspInput, at: datetime) -> list[Reason]:
    if ocsp.source is None or ocsp.policy is None:
        return [Reason(NOT_CHECKED, "OCSP not checked (--ocsp-skip): revocation is unknown")]
    # ``chain`` is the pinned path leaf → root that verify_devices verified, in
    # this same call, with these roots, pins and ``at``.
    return [
        Reason(r.code, f"device chain: {r.detail}")
        for r in check_chain_ocsp(chain.certificates, {}, ocsp.policy, at=at, cache=ocsp.source)
    ]


def _device_json(
    device: DeviceVerdict, verdict: Verdict, checks: list[CheckOutcome]
) -> dict[str, Any]:
    return {
        "name": device.name,
        "position": device.position,
        "verdict": verdict.tier.value,
        "ueid": None if device.ueid is None else str(device.ueid),
        "reasons": [{"code": r.code, "message": r.detail} for r in verdict.reasons],
        "checks_run": sorted(verdict.checks_run),
        "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in checks],
    }


def verify_nvgpu_offline(
    entries: Sequence[EvidenceEntry],
    *,
    expected_nonce_for: Callable[[int], bytes],
    store: FileRimStore,
    policy: GpuPolicy,
    cc_state: CcState | None,
    device_roots: Sequence[x509.Certificate],
    rim_roots: Sequence[x509.Certificate],
    ocsp: OcspInput,
    at: datetime,
    rim_signing_paths: Callable[[bytes], Sequence[x509.Certificate]],
    device_spki_pins: frozenset[bytes] = frozenset({DEVICE_ROOT_SPKI_SHA256}),
    listed_devices: int | None = None,
) -> EvidenceReport:
    """verify_devices (its checks, in its order), then OCSP per device; one report.

    The report's verdict is the host's: contraindicated if any device is,
    warning if every device affirms but some carry warnings (OCSP not checked or
    stale-accepted), affirming only if every device affirms with OCSP checked.
    ``rim_signing_paths(xml)`` gives a used RIM's verified signing path for OCSP
    (required: a RIM's revocation is never left unchecked for want of its path).
    ``listed_devices``: how many devices the host listed, for the policy's
    ``device_count`` (default ``len(entries)``; the stream also counts devices
    that sent no evidence, which it reports itself).
    """
    rims = StoreRimSource(store, at=at)
    result = verify_devices(
        entries,
        expected_nonce_for=expected_nonce_for,
        rims=rims,
        policy=policy,
        cc_state=cc_state,
        pinned_device_roots=device_roots,
        pinned_rim_roots=rim_roots,
        at=at,
        device_spki_pins=device_spki_pins,
    )
    devices_json: list[dict[str, Any]] = []
    host_reasons: list[Reason] = []
    listed = len(entries) if listed_devices is None else listed_devices
    if policy.device_count is not None and listed != policy.device_count:
        host_reasons.append(
            Reason(
                "nvidia.devices.count_mismatch",
                f"{listed} devices listed, the policy expects {policy.device_count}",
            )
        )
    host_warnings: list[Reason] = []
    host_checks: list[CheckOutcome] = []
    for device in result.devices:
        verdict = device.verdict
        checks = [CheckOutcome(name, "device", "passed") for name in _in_order(verdict.checks_run)]
        if verdict.tier is Tier.CONTRAINDICATED or device.chain is None:
            checks.append(CheckOutcome(CHECK_OCSP, "revocation", "not_run", "device rejected"))
            final = verdict
        else:
            found = _device_ocsp(device.chain, ocsp=ocsp, at=at)
            problems = [r for r in found if r.code not in WARNING_CODES]
            warnings = [r for r in found if r.code in WARNING_CODES]
            status: Status = (
                "failed" if problems else ("not_run" if ocsp.source is None else "passed")
            )
            detail = "; ".join(str(r) for r in found[:3])
            checks.append(CheckOutcome(CHECK_OCSP, "revocation", status, detail))
            final = verdict_from(problems, warnings, tuple(checks))
        devices_json.append(_device_json(device, final, checks))
        host_checks.append(
            CheckOutcome(
                device.name,
                "device",
                "failed" if final.tier is Tier.CONTRAINDICATED else "passed",
                final.tier.value,
            )
        )
        tagged = [Reason(r.code, f"{device.name}: {r.detail}") for r in final.reasons]
        if final.tier is Tier.CONTRAINDICATED:
            host_reasons += tagged
        else:
            host_warnings += tagged
    if not result.devices:
        host_reasons += list(result.host.reasons)
    if ocsp.source is None or ocsp.policy is None:
        host_checks.append(
            CheckOutcome(CHECK_OCSP_RIMS, "revocation", "not_run", "OCSP not checked")
        )
    else:
        # A RIM serves every device that names it, so its revocation is the host's.
        rim_found: list[Reason] = []
        for choice in rims.chosen.values():
            if choice.digest is not None:
                path = rim_signing_paths(store.load_bytes(choice.digest))
                rim_found += [
                    Reason(r.code, f"RIM {choice.rim_id} signing chain: {r.detail}")
                    for r in check_chain_ocsp(path, {}, ocsp.policy, at=at, cache=ocsp.source)
                ]
        host_reasons += [r for r in rim_found if r.code not in WARNING_CODES]
        host_warnings += [r for r in rim_found if r.code in WARNING_CODES]
        bad = any(r.code not in WARNING_CODES for r in rim_found)
        host_checks.append(
            CheckOutcome(
                CHECK_OCSP_RIMS,
                "revocation",
                "failed" if bad else "passed",
                "; ".join(str(r) for r in rim_found[:3]),
            )
        )
    # Host-level findings of verify_devices (none today beyond the per-device ones).
    host_reasons += [
        r
        for r in result.host.reasons
        if r.code not in {"nvidia.device.not_affirming", "nvidia.devices.none"}
    ]
    verdict = verdict_from(host_reasons, host_warnings, tuple(host_checks))
    claims = {
        "at": at.isoformat(),
        "devices": devices_json,
        "rims": [
            {
                "rim_id": c.rim_id,
                "digest": c.digest,
                "candidates": c.candidates,
                "valid_until": None if c.valid_until is None else c.valid_until.isoformat(),
            }
            for c in rims.chosen.values()
        ],
    }
    return EvidenceReport("nvgpu", verdict, tuple(host_checks), claims)


def rim_signing_path_for(
    rim_roots: Sequence[x509.Certificate], at: datetime
) -> Callable[[bytes], Sequence[x509.Certificate]]:
    """A function giving a stored RIM's verified KeyInfo path, leaf → pinned root.

    The path is verified once per RIM bytes and roots and reused while ``at`` is
    inside the validity of every certificate on it (rim_cache.signing_path_cached).
    """

    def path(xml: bytes) -> Sequence[x509.Certificate]:
        return signing_path_cached(xml, pinned_roots=rim_roots, at=at)

    return path
