"""Our side of bench/gpu_host.py: two whole hosts, built outside the timed region.

``stream-8gpu``: a simulated 8-GPU fleet (devsim.nvidia), its RIMs imported into a
FileRimStore and its OCSP directory used as the verifier's OcspCache, exactly as
tests/integration/test_gpu_stream.py configures the verifier; each round's
GpuEvidence comes from the agent's ``gpu_evidence_message(source="simulator")``
and is checked by ``GpuVerifier.verify`` (the attestation stream's GPU step).

``ppcie-8gpu-4switch``: NVIDIA's protected-PCIe vectors (8 GPUs + 4 NVSwitches of
one real host), ``verify_devices`` with ``require_ppcie``. The RIMs for driver
590.12 are not among the vectors: this covers authentication (parse, chain,
signature, nonce, FWID), duplicates and topology, never RIM verification.
"""

from __future__ import annotations

import cProfile
import io
import math
import os
import pstats
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from agent.collectors.gpu_evidence import gpu_evidence_message
from devsim.nvidia import create_fleet
from verifier.config_nvidia import NvidiaConfig
from verifier.evidence.nvidia import appraise
from verifier.evidence.nvidia.chain import spki_sha256, verify_device_chain
from verifier.evidence.nvidia.gpu_policy import (
    CcState,
    GpuPolicy,
    load_policy,
    parse_driver_version,
    parse_firmware_version,
)
from verifier.evidence.nvidia.host_round import CHECK_GPU_ATTESTED, GpuRoundResult, GpuVerifier
from verifier.evidence.nvidia.ocsp import OcspPolicy
from verifier.evidence.nvidia.ocsp_cache import OcspCache
from verifier.evidence.nvidia.offline import OcspInput, rim_signing_path_for, verify_nvgpu_offline
from verifier.evidence.nvidia.report import parse_report
from verifier.evidence.nvidia.report_files import EvidenceEntry, read_evidence_json
from verifier.evidence.nvidia.rim_cache import clear_rim_cache
from verifier.evidence.nvidia.rim_store import FileRimStore
from verifier.evidence.nvidia.verify_gpu import DevicesVerdict, verify_devices
from verifier.verdict import Tier
from weightgate.gpu_nonce import gpu_nonce
from weightgate.v1 import attestation_pb2

VECTORS = (
    Path(
        os.environ.get(
            "WEIGHTGATE_TESTVECTORS",
            Path(__file__).resolve().parents[2] / "shared" / "testvectors",
        )
    )
    / "nvidia"
)
PPCIE = VECTORS / "nvtrust" / "ppcie-verifier-sdk-cpp" / "tests" / "data"
AT_PPCIE = datetime(2025, 12, 1, tzinfo=UTC)  # V7's clock (tests/unit/test_nvidia_appraise.py)
STREAM_GPUS = 8
AUTH_CHECKS = ("nvidia.report.parse", "nvidia.chain", "nvidia.report.signature")
NONCE_CHECK = "nvidia.report.nonce"
STREAM_CHECKS = frozenset(
    {
        *AUTH_CHECKS,
        NONCE_CHECK,
        "nvidia.report.fwid",
        "nvidia.rim.parse",
        "nvidia.rim.signature",
        "nvidia.rim.chain",
        "nvidia.rim.verify",
        "nvidia.measurement.compare",
        "nvidia.rim.version",
        "nvidia.policy",
        "nvidia.ocsp",
        "nvidia.ocsp.rims",
        CHECK_GPU_ATTESTED,
    }
)
PPCIE_NOTE = (
    "RIMs for driver 590.12 are NOT in the vectors: this scenario covers authentication "
    "(parse, chain, signature, nonce, FWID), duplicates and topology, NOT RIM verification "
    "(every device ends in nvidia.rim.missing; not the full pipeline)"
)


def wrong_nonce(nonce: bytes) -> bytes:
    return nonce[:-1] + bytes([nonce[-1] ^ 0x01])


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "mean": round(1000 * statistics.fmean(ordered), 3),
        "p50": round(1000 * statistics.median(ordered), 3),
        "p95": round(1000 * ordered[math.ceil(0.95 * len(ordered)) - 1], 3),
        "min": round(1000 * ordered[0], 3),
    }


def time_calls(
    calls: Sequence[Callable[[], Any]], before: Callable[[], None] | None = None
) -> tuple[float, list[float], list[Any]]:
    """calls[0] is the warm-up; the rest are timed. ``before`` runs untimed before each."""
    results, times = [], []
    first = 0.0
    for i, call in enumerate(calls):
        if before is not None:
            before()
        start = time.perf_counter()
        result = call()
        elapsed = time.perf_counter() - start
        if i == 0:
            first = elapsed
        else:
            times.append(elapsed)
        results.append(result)
    return first, times, results


# --- stream-8gpu -------------------------------------------------------------------


@dataclass(frozen=True)
class StreamRound:
    challenge_nonce: bytes
    tpm_attest: bytes
    evidence: attestation_pb2.GpuEvidence
    at: datetime


@dataclass
class StreamHost:
    fleet_dir: Path
    config: NvidiaConfig
    verifier: GpuVerifier
    policy: GpuPolicy

    def round(self) -> StreamRound:
        """One round's inputs: fresh challenge nonce, a quote-sized TPMS_ATTEST, the
        agent's GpuEvidence over the simulator (8 reports signed now)."""
        challenge, attest = secrets.token_bytes(32), secrets.token_bytes(145)
        evidence = gpu_evidence_message(
            source="simulator",
            simulator_dir=self.fleet_dir,
            challenge_nonce=challenge,
            tpm_attest=attest,
        )
        return StreamRound(challenge, attest, evidence, datetime.now(UTC))

    def call(self, r: StreamRound, *, challenge_nonce: bytes | None = None) -> Callable[[], Any]:
        def verify() -> GpuRoundResult:
            return self.verifier.verify(
                r.evidence,
                challenge_nonce=r.challenge_nonce if challenge_nonce is None else challenge_nonce,
                tpm_attest=r.tpm_attest,
                policy=self.policy,
                at=r.at,
            )

        return verify


@contextmanager
def stream_host(gpus: int = STREAM_GPUS) -> Iterator[StreamHost]:
    """A fleet in a temporary directory and a GpuVerifier configured as the stream's."""
    with tempfile.TemporaryDirectory(prefix="wg-bench-gpu-host-") as tmp:
        work = Path(tmp)
        fleet = create_fleet(work / "fleet", gpus=gpus)
        device_root = x509.load_pem_x509_certificate(fleet.device_root_pem)
        rim_root = x509.load_pem_x509_certificate(fleet.rim_root_pem)
        store_dir = work / "rim-store"
        store_dir.mkdir(mode=0o700)
        store = FileRimStore(store_dir, pinned_roots=[rim_root])
        for xml in sorted(fleet.rims_dir.glob("*.xml")):
            store.import_bytes(xml.read_bytes(), at=datetime.now(UTC), rim_id=xml.stem)
        config = NvidiaConfig(
            device_roots=(device_root,),
            device_spki_pins=frozenset({spki_sha256(device_root)}),
            rim_roots=(rim_root,),
            rim_store=store_dir,
            ocsp_dir=fleet.ocsp_dir,
            ocsp_max_age=timedelta(days=7),
            ocsp_stale_grace=timedelta(0),
            test_roots_trusted=True,
        )
        yield StreamHost(
            fleet.directory,
            config,
            GpuVerifier(config),
            load_policy(fleet.policy_path.read_bytes()),
        )


def stream_summary(result: GpuRoundResult) -> dict[str, Any]:
    return {
        "attested": CHECK_GPU_ATTESTED in result.checks_run,
        "devices": result.devices,
        "reason_codes": sorted({r.code for r in result.reasons}),
        "checks_run": sorted(result.checks_run),
    }


def stream_gate(host: StreamHost, r: StreamRound, summary: dict[str, Any]) -> list[str]:
    """Why the round's verdict is not a clean 8-GPU affirmation (empty: it is).

    Beyond GpuVerifier's result, one untimed verify_nvgpu_offline over the same
    entries shows each device affirming with its OCSP check passed and the RIMs'
    signing chains' OCSP passed (a warning tier would also count as attested)."""
    problems = []
    if not summary["attested"] or summary["reason_codes"]:
        problems.append(f"not attested: {summary['reason_codes']}")
    if summary["devices"] != len(r.evidence.devices) or summary["devices"] != STREAM_GPUS:
        problems.append(f"{summary['devices']} devices, expected {STREAM_GPUS}")
    missing = STREAM_CHECKS - set(summary["checks_run"])
    if missing:
        problems.append(f"checks not run: {sorted(missing)}")
    config = host.config
    entries = [
        EvidenceEntry(
            d.arch, gpu_nonce(r.challenge_nonce, r.tpm_attest, i), d.report, d.certificate_chain
        )
        for i, d in enumerate(r.evidence.devices)
    ]
    report = verify_nvgpu_offline(
        entries,
        expected_nonce_for=lambda i: entries[i].nonce,
        store=FileRimStore(config.rim_store, pinned_roots=config.rim_roots),
        policy=host.policy,
        cc_state=CcState(r.evidence.cc_state),
        device_roots=config.device_roots,
        rim_roots=config.rim_roots,
        ocsp=OcspInput(
            OcspCache(directory=config.ocsp_dir),
            OcspPolicy(max_age=config.ocsp_max_age, stale_grace=config.ocsp_stale_grace),
        ),
        at=r.at,
        device_spki_pins=config.device_spki_pins,
        rim_signing_paths=rim_signing_path_for(config.rim_roots, r.at),
    )
    if report.verdict.tier is not Tier.AFFIRMING:
        problems.append(f"offline report {report.verdict.tier.value}")
    for device in report.claims["devices"]:
        ocsp = [c for c in device["checks"] if c["name"] == "nvidia.ocsp"]
        if device["verdict"] != "affirming" or [c["status"] for c in ocsp] != ["passed"]:
            problems.append(f"{device['name']}: {device['verdict']}, ocsp {ocsp}")
    rim_ocsp = [c.status for c in report.checks if c.name == "nvidia.ocsp.rims"]
    if rim_ocsp != ["passed"]:
        problems.append(f"RIM signing chains' OCSP: {rim_ocsp}")
    return problems


def stream_control(host: StreamHost, r: StreamRound) -> dict[str, Any]:
    """The round's evidence checked against another challenge nonce: every GPU's
    expected nonce differs, so the round must not attest."""
    got = stream_summary(host.call(r, challenge_nonce=wrong_nonce(r.challenge_nonce))())
    return {
        "probe": "challenge nonce with one bit flipped (every GPU's derived nonce differs)",
        "reason_codes": got["reason_codes"],
        "rejected": not got["attested"] and "nvidia.report.nonce_mismatch" in got["reason_codes"],
    }


# --- ppcie-8gpu-4switch ------------------------------------------------------------


@dataclass(frozen=True)
class PpcieHost:
    entries: list[EvidenceEntry]
    policy: GpuPolicy
    device_roots: list[x509.Certificate]
    rim_roots: list[x509.Certificate]

    def call(self, nonces: Sequence[bytes] | None = None) -> Callable[[], DevicesVerdict]:
        expected = [e.nonce for e in self.entries] if nonces is None else list(nonces)

        def verify() -> DevicesVerdict:
            return verify_devices(
                self.entries,
                expected_nonce_for=lambda i: expected[i],
                rims=lambda _rim_id: None,  # the 590.12 RIMs are not in the vectors
                policy=self.policy,
                cc_state=CcState.PPCIE,
                pinned_device_roots=self.device_roots,
                pinned_rim_roots=self.rim_roots,
                at=AT_PPCIE,
            )

        return verify


def ppcie_host() -> PpcieHost:
    """The vectors' 8 GPUs then 4 switches; the policy allows exactly the RIM ids the
    reports name (so the only finding left is that those RIMs are absent)."""
    entries = read_evidence_json((PPCIE / "gpu_evidence.json").read_bytes())
    entries += read_evidence_json((PPCIE / "switch_evidence.json").read_bytes())
    roots = VECTORS / "roots"
    device_roots = x509.load_pem_x509_certificates(
        (roots / "verifier_device_root.pem").read_bytes()
    )
    rim_ids = set()
    for entry in entries:
        report = parse_report(entry.report)
        chain = verify_device_chain(entry.chain_pem, pinned_roots=device_roots, at=AT_PPCIE)
        if not entry.arch.upper().startswith("LS"):
            rim_ids.add(appraise.driver_rim_id(report, chain.hwmodel))
        rim_ids.add(appraise.firmware_rim_id(report))
    policy = GpuPolicy(
        min_driver_version=parse_driver_version("535.00"),
        min_vbios_version=parse_firmware_version("96.00.00.00.00"),
        min_switch_bios_version=parse_firmware_version("96.10.00.00.00"),
        allowed_rim_ids=frozenset(i for i in rim_ids if i is not None),
        allowed_cc_states=frozenset({CcState.PPCIE}),
        require_ppcie=True,
    )
    return PpcieHost(
        entries,
        policy,
        device_roots,
        x509.load_pem_x509_certificates((roots / "verifier_RIM_root.pem").read_bytes()),
    )


def ppcie_summary(result: DevicesVerdict) -> dict[str, Any]:
    return {
        "host_affirms": result.host.affirms,
        "host_checks": sorted(result.host.checks_run),
        "devices": {
            d.name: {
                "reasons": sorted(set(d.verdict.reason_codes())),
                "checks": sorted(d.verdict.checks_run),
            }
            for d in result.devices
        },
    }


def ppcie_gate(host: PpcieHost, summary: dict[str, Any]) -> list[str]:
    """Authentication on all 12, FWID on every GPU, topology on every GPU, no duplicate,
    and nothing wrong but the absent RIMs."""
    problems = []
    devices = summary["devices"]
    expected = [f"gpu{i}" for i in range(8)] + [f"nvswitch{i}" for i in range(4)]
    if list(devices) != expected:
        problems.append(f"devices {list(devices)}")
    for name, device in devices.items():
        need = {*AUTH_CHECKS, NONCE_CHECK}
        if name.startswith("gpu"):
            need |= {"nvidia.report.fwid", "nvidia.topology"}
        if not need <= set(device["checks"]):
            problems.append(f"{name}: checks not run {sorted(need - set(device['checks']))}")
        if device["reasons"] != ["nvidia.rim.missing"]:
            problems.append(f"{name}: reasons {device['reasons']} (expected only rim.missing)")
    if "nvidia.topology" not in summary["host_checks"]:
        problems.append("no host topology check")
    return problems


def ppcie_control(host: PpcieHost) -> dict[str, Any]:
    nonces = [wrong_nonce(e.nonce) for e in host.entries]
    got = ppcie_summary(host.call(nonces)())
    bad = [n for n, d in got["devices"].items() if "nvidia.report.nonce_mismatch" in d["reasons"]]
    return {
        "probe": "every device's nonce with one bit flipped",
        "reason_codes": sorted({c for d in got["devices"].values() for c in d["reasons"]}),
        "rejected": not got["host_affirms"] and len(bad) == len(host.entries),
    }


# --- profile -----------------------------------------------------------------------

STAGES = {
    "GpuVerifier.verify (round)": "host_round.py:verify",
    "verify_devices": "verify_gpu.py:verify_devices",
    "  device chain (x509 path)": "chain.py:verify_device_chain",
    "  report signature": "signature.py:verify_report_signature",
    "  report parse": "report.py:parse_report",
    "  RIM store lookup (StoreRimSource)": "offline_rims.py:__call__",
    "  RIM verify_rim (all callers)": "rim.py:verify_rim",
    "    RIM XML-DSig (signxml/lxml)": "rim.py:_verify_signature",
    "  measurement compare": "appraise.py:compare_measurements",
    "  topology": "verify_gpu.py:_check_topology",
    "OCSP, per device (chain again + OCSP)": "offline.py:_device_ocsp",
    "RIM signing path for OCSP": "offline.py:path",
    "check_chain_ocsp (all)": "ocsp_chain.py:check_chain_ocsp",
}


def profile(
    call: Callable[[], Any], calls: int, top: int, before: Callable[[], None] | None = None
) -> tuple[list[tuple[str, float]], str]:
    """cProfile over ``calls`` calls: (stage, ms per call) and the top functions by tottime."""
    call()
    profiler = cProfile.Profile()
    for _ in range(calls):
        if before is not None:
            before()
        profiler.enable()
        call()
        profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    stages = []
    for label, where in STAGES.items():
        file_name, func = where.split(":")
        cum = sum(
            v[3]
            for (path, _line, name), v in raw.items()
            if name == func and path.endswith("nvidia/" + file_name)
        )
        if cum:
            stages.append((label, 1000 * cum / calls))
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(top)
    lines = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return stages, "\n".join(line for line in lines[start:] if line.strip())


__all__ = [
    "PPCIE_NOTE",
    "StreamHost",
    "clear_rim_cache",
    "ppcie_control",
    "ppcie_gate",
    "ppcie_host",
    "ppcie_summary",
    "profile",
    "stats_ms",
    "stream_control",
    "stream_gate",
    "stream_host",
    "stream_summary",
    "time_calls",
]
