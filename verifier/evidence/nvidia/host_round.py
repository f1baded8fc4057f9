"""NVIDIA GPU evidence of one attestation round: every GPU of the host, bound to its quote.

Called by the attestation round only after the host's TPM quote authenticated,
because each GPU's expected nonce is derived from the verifier's challenge nonce and
the exact quote bytes the AK signed (:func:`weightgate.gpu_nonce.gpu_nonce`): a
report made for another host's quote, another round, or another position answers a
different nonce and fails ``nvidia.report.nonce_mismatch`` for that GPU.

Checks, in order (every device to the end, no early stop):

1. the evidence is there (``nvidia.evidence.missing`` names why not), lists as
   many devices as the policy's ``device_count`` (``nvidia.devices.count_mismatch``:
   a GPU left out cannot go unnoticed), and every device listed gave a report and
   a chain (``nvidia.device.unavailable``);
2. per device, :func:`~verifier.evidence.nvidia.offline.verify_nvgpu_offline`:
   parse, chain to a pinned root, report signature over the exact bytes, nonce,
   FWID, RIMs from the local store verified before use, measurements, versions,
   the group's GPU policy (CC mode from NVML, checked against the signed feature
   flags), duplicates and topology, then OCSP from the local cache for the device
   chain and each RIM's signing chain;
3. the host passes only if every device passes: then, and only then, the round's
   checks include ``nvidia.gpu.attested``, which the ``gpu_attestation`` release
   control requires.

OCSP is never skipped here: a missing response is a finding. A stale response
inside the operator's configured grace (``ocsp_stale_grace_hours``) is accepted,
as that setting says, and not reported as a finding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from verifier.config_nvidia import NvidiaConfig
from verifier.evidence.nvidia.gpu_policy import CcState, GpuPolicy
from verifier.evidence.nvidia.ocsp import OcspPolicy
from verifier.evidence.nvidia.ocsp_cache import OcspCache
from verifier.evidence.nvidia.offline import OcspInput, rim_signing_path_for, verify_nvgpu_offline
from verifier.evidence.nvidia.report_files import EvidenceEntry
from verifier.evidence.nvidia.rim_store import FileRimStore
from verifier.verdict import Reason, Tier
from weightgate.gpu_nonce import gpu_nonce
from weightgate.v1 import attestation_pb2

__all__ = ["CHECK_GPU_ATTESTED", "GpuRoundResult", "GpuVerifier"]

CHECK_GPU_ATTESTED = "nvidia.gpu.attested"
CHECK_GPU_EVIDENCE = "nvidia.evidence"
# An 8-GPU HGX board with 4 NVSwitches is the largest host NVIDIA ships; a list far
# longer is hostile and each device costs signature checks.
MAX_DEVICES = 64
_CC_STATES: Mapping[str, CcState] = MappingProxyType({state.value: state for state in CcState})


@dataclass(frozen=True, slots=True)
class GpuRoundResult:
    checks_run: frozenset[str]
    reasons: tuple[Reason, ...]
    devices: int  # how many devices the agent sent


def _missing(detail: str) -> GpuRoundResult:
    return GpuRoundResult(frozenset(), (Reason("nvidia.evidence.missing", detail),), 0)


class GpuVerifier:
    """Verifies GPU evidence with the verifier's local trust material (no network)."""

    def __init__(self, config: NvidiaConfig) -> None:
        """RimStoreError or OSError when the RIM store is unusable (a startup error)."""
        self._config = config
        self._store = FileRimStore(config.rim_store, pinned_roots=config.rim_roots)
        self._ocsp = OcspInput(
            OcspCache(directory=config.ocsp_dir),
            OcspPolicy(max_age=config.ocsp_max_age, stale_grace=config.ocsp_stale_grace),
        )

    def verify(
        self,
        evidence: attestation_pb2.GpuEvidence | None,
        *,
        challenge_nonce: bytes,
        tpm_attest: bytes,
        policy: GpuPolicy,
        at: datetime,
    ) -> GpuRoundResult:
        """Every device of ``evidence`` against ``policy``; see the module docstring.

        ``tpm_attest``: the authenticated quote's TPMS_ATTEST bytes of this round.
        """
        if evidence is None:
            return _missing("the group has a GPU policy; the agent sent no GPU evidence")
        if evidence.unavailable:
            return _missing(f"the group has a GPU policy; {evidence.unavailable}")
        if not evidence.devices:
            return _missing("the group has a GPU policy; the agent listed no GPU")
        if len(evidence.devices) > MAX_DEVICES:
            reason = Reason(
                "nvidia.evidence.malformed",
                f"{len(evidence.devices)} devices, more than {MAX_DEVICES}",
            )
            return GpuRoundResult(frozenset(), (reason,), len(evidence.devices))
        reasons: list[Reason] = []
        entries: list[EvidenceEntry] = []
        positions: list[int] = []
        for position, device in enumerate(evidence.devices):
            if device.unavailable or not device.report or not device.certificate_chain:
                why = device.unavailable or "no report or no certificate chain"
                reasons.append(Reason("nvidia.device.unavailable", f"device {position}: {why}"))
                continue
            expected = gpu_nonce(challenge_nonce, tpm_attest, position)
            entries.append(
                EvidenceEntry(device.arch, expected, device.report, device.certificate_chain)
            )
            positions.append(position)
        checks = {CHECK_GPU_EVIDENCE}
        if entries:
            found, ran = self._verify_entries(
                entries,
                lambda at_entry: gpu_nonce(challenge_nonce, tpm_attest, positions[at_entry]),
                cc_state=_CC_STATES.get(evidence.cc_state),
                policy=policy,
                at=at,
                listed_devices=len(evidence.devices),
            )
            reasons += found
            checks |= ran
        if not reasons:
            checks.add(CHECK_GPU_ATTESTED)
        return GpuRoundResult(frozenset(checks), tuple(reasons), len(evidence.devices))

    def _verify_entries(
        self,
        entries: list[EvidenceEntry],
        expected_nonce_for: Callable[[int], bytes],
        *,
        cc_state: CcState | None,
        policy: GpuPolicy,
        at: datetime,
        listed_devices: int,
    ) -> tuple[list[Reason], set[str]]:
        """``expected_nonce_for(i)``: the nonce of ``entries[i]``, by its position in the
        agent's list (a device that gave no evidence shifts no other device's nonce)."""
        config = self._config
        report = verify_nvgpu_offline(
            entries,
            expected_nonce_for=expected_nonce_for,
            store=self._store,
            policy=policy,
            cc_state=cc_state,
            device_roots=config.device_roots,
            rim_roots=config.rim_roots,
            ocsp=self._ocsp,
            at=at,
            device_spki_pins=config.device_spki_pins,
            rim_signing_paths=rim_signing_path_for(config.rim_roots, at),
            listed_devices=listed_devices,
        )
        # Per-device outcomes are named gpu0, nvswitch0...: only the checks themselves
        # (nvidia.*) go into the round's checks_run.
        checks = {
            c.name for c in report.checks if c.status == "passed" and c.name.startswith("nvidia.")
        }
        for device in report.claims.get("devices", []):
            checks.update(device.get("checks_run", []))
        if report.verdict.tier is Tier.CONTRAINDICATED:
            return list(report.verdict.reasons), checks
        return [], checks
