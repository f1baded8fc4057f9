"""Verify every GPU and NVSwitch of a host: one sub-verdict each, then the host's.

NVIDIA's local verifier stops at the first failing GPU (PROVENANCE.md section 3,
V7), so one bad device hides the state of the others. Here every device is
verified to the end and gets its own verdict (``gpu0``, ``gpu1``, ...,
``nvswitch0``, ...); the host affirms only if every device does.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from verifier.evidence.errors import ParseError
from verifier.evidence.nvidia import appraise
from verifier.evidence.nvidia.appraise_topology import CHECK_TOPOLOGY, topology_reasons
from verifier.evidence.nvidia.chain import (
    CHECK_CHAIN,
    DEVICE_ROOT_SPKI_SHA256,
    DeviceChain,
    verify_device_chain,
)
from verifier.evidence.nvidia.gpu_policy import CHECK_POLICY, CcState, GpuPolicy, appraise_policy
from verifier.evidence.nvidia.opaque import DeviceKind
from verifier.evidence.nvidia.report import AttestationReport, parse_report
from verifier.evidence.nvidia.report_files import EvidenceEntry
from verifier.evidence.nvidia.rim import VerifiedRim
from verifier.evidence.nvidia.rim_cache import verify_rim_cached
from verifier.evidence.nvidia.signature import (
    CHECK_FWID,
    CHECK_NONCE,
    CHECK_SIGNATURE,
    check_fwid,
    check_nonce,
    verify_report_signature,
)
from verifier.verdict import Reason, Verdict, VerificationError

CHECK_PARSE = "nvidia.report.parse"
CHECK_RIMS = "nvidia.rim.verify"
CHECK_DEVICES = "nvidia.devices"

# Looks a RIM up by NVIDIA's RIM id (NV_GPU_DRIVER_GH100_545.00, ...): the XML
# bytes, e.g. from the offline RIM store, or None when it has none.
RimSource = Callable[[str], bytes | None]


@dataclass(frozen=True)
class DeviceVerdict:
    name: str  # gpu0, nvswitch0, ...
    position: int  # index of the entry in the evidence list
    verdict: Verdict
    ueid: int | None  # the device's id from its leaf certificate, once authenticated
    # The path leaf → pinned root that authenticated this device (None when it did
    # not), so that OCSP walks the path verified here rather than verifying again.
    chain: DeviceChain | None = None


@dataclass(frozen=True)
class DevicesVerdict:
    devices: tuple[DeviceVerdict, ...]
    host: Verdict

    def device(self, name: str) -> Verdict:
        for device in self.devices:
            if device.name == name:
                return device.verdict
        raise KeyError(name)


@dataclass
class _Device:
    """One device while it is being verified (mutable, never leaves this module)."""

    name: str
    position: int
    kind: DeviceKind
    checks: list[str]
    reasons: list[Reason]
    report: AttestationReport | None = None  # set only once authentication passed
    chain: DeviceChain | None = None


def _kind_from_label(arch: str) -> DeviceKind:
    # Only for naming before anything is authenticated; the signed opaque data is
    # checked against it once the report verified.
    return DeviceKind.NVSWITCH if arch.upper().startswith("LS") else DeviceKind.GPU


def _authenticate(
    device: _Device,
    entry: EvidenceEntry,
    *,
    expected_nonce: bytes,
    roots: Sequence[x509.Certificate],
    spki_pins: Collection[bytes],
    at: datetime,
) -> None:
    """parse, chain, signature, nonce, FWID; VerificationError at the first failure."""
    try:
        report = parse_report(entry.report)
    except ParseError as exc:
        raise VerificationError(Reason("nvidia.report.malformed", f"{exc.code}: {exc}")) from exc
    device.checks.append(CHECK_PARSE)
    try:
        chain = verify_device_chain(entry.chain_pem, pinned_roots=roots, at=at, spki_pins=spki_pins)
    except ParseError as exc:
        raise VerificationError(Reason("nvidia.chain.malformed", f"{exc.code}: {exc}")) from exc
    device.checks.append(CHECK_CHAIN)
    verify_report_signature(report.signed_bytes, report.signature, chain.leaf.public_key())
    device.checks.append(CHECK_SIGNATURE)
    check_nonce(expected_nonce, report.request.nonce)
    device.checks.append(CHECK_NONCE)
    # Firmware before the v1 opaque layout sends no FWID (the 2.0.0 sample), so
    # there is nothing to compare; NVIDIA's verifiers skip it the same way.
    if report.opaque.fwid is not None:
        check_fwid(chain.fwid, report.opaque.fwid)
        device.checks.append(CHECK_FWID)
    device.report, device.chain = report, chain


class _RimCache:
    """Verifies each RIM id once per call: an 8-GPU host shares two RIMs."""

    def __init__(self, source: RimSource, roots: Sequence[x509.Certificate], at: datetime) -> None:
        self._source, self._roots, self._at = source, roots, at
        self._seen: dict[str, VerifiedRim | Reason] = {}

    def get(self, rim_id: str | None, what: str) -> VerifiedRim | Reason:
        if rim_id is None:
            return Reason("nvidia.rim.missing", f"the report does not name its {what} RIM")
        if rim_id not in self._seen:
            xml = self._source(rim_id)
            if xml is None:
                self._seen[rim_id] = Reason("nvidia.rim.missing", f"{rim_id} is not available")
            else:
                try:
                    self._seen[rim_id] = verify_rim_cached(
                        xml, pinned_roots=self._roots, at=self._at
                    )
                except VerificationError as exc:
                    reason = exc.reason
                    self._seen[rim_id] = Reason(reason.code, f"{rim_id}: {reason.detail}")
        return self._seen[rim_id]


def _appraise(
    device: _Device, rims: _RimCache, policy: GpuPolicy, cc_state: CcState | None
) -> None:
    """RIM lookup and verification, comparison, policy: every violation recorded."""
    report, chain = device.report, device.chain
    if report is None or chain is None:  # a bug here, never evidence: refuse loudly
        raise RuntimeError("appraisal before authentication")
    if report.opaque.device is not device.kind:
        device.reasons.append(
            Reason(
                "nvidia.device.kind_mismatch",
                f"evidence says {device.kind.value}, "
                f"the signed report {report.opaque.device.value}",
            )
        )
    switch = report.opaque.device is DeviceKind.NVSWITCH
    driver_id = None if switch else appraise.driver_rim_id(report, chain.hwmodel)
    firmware_id = appraise.firmware_rim_id(report)
    found: dict[str, VerifiedRim | None] = {}
    for role, rim_id in (() if switch else (("driver", driver_id),)) + (("firmware", firmware_id),):
        got = rims.get(rim_id, role)
        if isinstance(got, Reason):
            device.reasons.append(got)
            found[role] = None
        else:
            found[role] = got
            device.checks.extend(got.checks_run)
    device.checks.append(CHECK_RIMS)
    compared = appraise.compare_measurements(report, found.get("driver"), found["firmware"])
    # A RIM that could not be had is already named above, with its id and why;
    # the comparison's generic "missing" for the same RIM would only repeat it.
    device.reasons.extend(r for r in compared if r.code != "nvidia.rim.missing")
    device.checks += [appraise.CHECK_MEASUREMENTS, appraise.CHECK_RIM_VERSION]
    rim_ids = [firmware_id] if switch else [driver_id, firmware_id]
    device.reasons.extend(appraise_policy(policy, report, rim_ids=rim_ids, cc_state=cc_state))
    device.checks.append(CHECK_POLICY)


def _name_devices(entries: Sequence[EvidenceEntry]) -> list[_Device]:
    counts = {DeviceKind.GPU: 0, DeviceKind.NVSWITCH: 0}
    devices = []
    for position, entry in enumerate(entries):
        kind = _kind_from_label(entry.arch)
        devices.append(_Device(f"{kind.value}{counts[kind]}", position, kind, [], []))
        counts[kind] += 1
    return devices


def _mark_duplicates(devices: Sequence[_Device]) -> None:
    # The same device twice (multi_switch_ls10.json is 4 copies of one switch)
    # would let one attested device stand in for several.
    first: dict[int, str] = {}
    for device in devices:
        if device.chain is None:
            continue
        ueid = device.chain.ueid
        if ueid in first:
            device.reasons.append(
                Reason("nvidia.device.duplicate", f"same device (ueid {ueid}) as {first[ueid]}")
            )
        else:
            first[ueid] = device.name


def _check_topology(devices: Sequence[_Device]) -> None:
    authenticated = [d for d in devices if d.report is not None]
    gpus = {
        d.name: d.report
        for d in authenticated
        if d.report is not None and d.report.opaque.device is DeviceKind.GPU
    }
    switches = [
        d.report
        for d in authenticated
        if d.report is not None and d.report.opaque.device is DeviceKind.NVSWITCH
    ]
    found = topology_reasons(gpus, switches)
    for device in authenticated:
        if device.name in found:
            device.reasons.extend(found[device.name])
            device.checks.append(CHECK_TOPOLOGY)


def verify_devices(
    entries: Sequence[EvidenceEntry],
    *,
    expected_nonce_for: Callable[[int], bytes],
    rims: RimSource,
    policy: GpuPolicy,
    cc_state: CcState | None,
    pinned_device_roots: Sequence[x509.Certificate],
    pinned_rim_roots: Sequence[x509.Certificate],
    at: datetime,
    device_spki_pins: Collection[bytes] = (DEVICE_ROOT_SPKI_SHA256,),
) -> DevicesVerdict:
    """Verify every device in ``entries`` (no early stop) and the host as a whole.

    ``expected_nonce_for(position)`` is the nonce this verifier derived for the
    entry at that position. Per device, in order: parse; device chain to a pinned
    root at ``at``; report signature by the leaf; nonce; FWID when the report has
    one. Authentication stops the device at its first failure; appraisal then
    reports every violation: driver and VBIOS (or switch BIOS) RIMs looked up by
    NVIDIA's RIM id and verified against ``pinned_rim_roots``; measurements and
    versions compared; policy (``cc_state`` from NVML, minimum versions, allowed
    RIM ids, protected PCIe). After all devices: duplicate devices, and when the
    policy requires protected PCIe, the switch topology of every GPU. The host
    verdict affirms only if there is at least one device and every device affirms.
    """
    devices = _name_devices(entries)
    rim_cache = _RimCache(rims, pinned_rim_roots, at)
    for device, entry in zip(devices, entries, strict=True):
        expected = expected_nonce_for(device.position)
        try:
            _authenticate(
                device,
                entry,
                expected_nonce=expected,
                roots=pinned_device_roots,
                spki_pins=device_spki_pins,
                at=at,
            )
        except VerificationError as exc:
            device.reasons.append(exc.reason)
            continue
        _appraise(device, rim_cache, policy, cc_state)
    _mark_duplicates(devices)
    if policy.require_ppcie:
        _check_topology(devices)

    results = tuple(
        DeviceVerdict(
            d.name,
            d.position,
            Verdict.contraindicated(d.reasons, d.checks)
            if d.reasons
            else Verdict.affirming(d.checks),
            d.chain.ueid if d.chain is not None else None,
            d.chain,
        )
        for d in devices
    )
    host_reasons = [
        Reason("nvidia.device.not_affirming", f"{r.name}: {', '.join(r.verdict.reason_codes())}")
        for r in results
        if not r.verdict.affirms
    ]
    if not results:
        host_reasons.append(Reason("nvidia.devices.none", "the evidence holds no device"))
    host_checks = {CHECK_DEVICES} | ({CHECK_TOPOLOGY} if policy.require_ppcie else set())
    host = (
        Verdict.contraindicated(host_reasons, host_checks)
        if host_reasons
        else Verdict.affirming(host_checks)
    )
    return DevicesVerdict(results, host)
