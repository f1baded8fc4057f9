"""Our side of bench/gpu_verify.py: the V1 vector, verify_devices, timing and profile.

Everything here reads files and builds inputs outside the timed region; what is
timed is one ``verify_devices`` call (report parsing, device chain, report
signature, nonce, RIM XML-DSig + signing chain, measurement comparison, policy).
"""

from __future__ import annotations

import cProfile
import hashlib
import io
import math
import os
import pstats
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from verifier.evidence.nvidia import verify_gpu
from verifier.evidence.nvidia.gpu_policy import (
    CcState,
    GpuPolicy,
    parse_driver_version,
    parse_firmware_version,
)
from verifier.evidence.nvidia.report_files import EvidenceEntry, report_from_hex
from verifier.evidence.nvidia.rim import VerifiedRim, verify_rim
from verifier.evidence.nvidia.rim_cache import clear_rim_cache
from verifier.evidence.nvidia.verify_gpu import DevicesVerdict, verify_devices

VECTORS = (
    Path(
        os.environ.get(
            "WEIGHTGATE_TESTVECTORS",
            Path(__file__).resolve().parents[2] / "shared" / "testvectors",
        )
    )
    / "nvidia"
)
# The same files as ../shared/bench/nvidia/time_nvidia.py's defaults (PROVENANCE.md V1).
REPORT = VECTORS / "pypi_nv-local-gpu-verifier_2.0.0" / "attestationReport.txt"
CHAIN = VECTORS / "pypi_nv-local-gpu-verifier_2.0.0" / "gpuAkCertChain.txt"
SAMPLES = VECTORS / "pypi_nv-local-gpu-verifier_2.7.3" / "samples"
DRIVER_RIM = SAMPLES / "Driver_RIM_test_no_gpu.swidtag"
VBIOS_RIM = SAMPLES / "1010_0200_882_96005E0001_test_no_gpu.swidtag"
RIM_IDS = {
    "NV_GPU_DRIVER_GH100_545.00": DRIVER_RIM,
    "NV_GPU_VBIOS_1010_0200_882_96005E0001": VBIOS_RIM,
}
NONCE = "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e"
# time_nvidia.py's faked clock, '2024-03-01 12:00:00' (the machine's zone is UTC).
AT = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
DUPLICATE = "nvidia.device.duplicate"
OCSP_NOTE = (
    "not checked: verify_devices does no OCSP; NVIDIA's OCSP is stubbed 'good', "
    "so neither side does revocation here"
)


def wrong_nonce(nonce: str) -> str:
    """time_nvidia.py's control: the nonce with its last hex digit changed."""
    return nonce[:-1] + ("0" if nonce[-1] != "0" else "1")


@dataclass(frozen=True)
class Inputs:
    report: bytes  # raw SPDM bytes (hex decoded outside the timed region)
    chain_pem: bytes
    rims: dict[str, bytes]  # RIM id -> XML bytes, read once
    device_roots: list[x509.Certificate]
    rim_roots: list[x509.Certificate]
    policy: GpuPolicy


def load_inputs() -> Inputs:
    roots = VECTORS / "roots"
    return Inputs(
        report=report_from_hex(REPORT.read_text()),
        chain_pem=CHAIN.read_bytes(),
        rims={rim_id: path.read_bytes() for rim_id, path in RIM_IDS.items()},
        device_roots=x509.load_pem_x509_certificates(
            (roots / "verifier_device_root.pem").read_bytes()
        ),
        rim_roots=x509.load_pem_x509_certificates((roots / "verifier_RIM_root.pem").read_bytes()),
        # As tests/unit/test_nvidia_appraise.py verifies V1.
        policy=GpuPolicy(
            min_driver_version=parse_driver_version("535.00"),
            min_vbios_version=parse_firmware_version("96.00.00.00.00"),
            min_switch_bios_version=parse_firmware_version("96.10.00.00.00"),
            allowed_rim_ids=frozenset(RIM_IDS),
            allowed_cc_states=frozenset({CcState.ON}),
            require_ppcie=False,
        ),
    )


Call = Callable[[], DevicesVerdict]


def make_call(inputs: Inputs, gpus: int, nonce: str = NONCE) -> Call:
    entries = [EvidenceEntry("HOPPER", b"", inputs.report, inputs.chain_pem)] * gpus
    expected = bytes.fromhex(nonce)

    def call() -> DevicesVerdict:
        return verify_devices(
            entries,
            expected_nonce_for=lambda _i: expected,
            rims=inputs.rims.get,
            policy=inputs.policy,
            cc_state=CcState.ON,
            pinned_device_roots=inputs.device_roots,
            pinned_rim_roots=inputs.rim_roots,
            at=AT,
        )

    return call


@contextmanager
def rim_verification(*, reuse: bool) -> Iterator[dict[str, int]]:
    """Count RIM verifications in verify_devices; with ``reuse=False``, verify every time.

    verify_devices reuses VerifiedRims in-process (verifier.evidence.nvidia.rim_cache).
    The cold line replaces that with a plain verify_rim per RIM per call, which is
    what NVIDIA's verifier does (per GPU, even); the warm line keeps the product's
    cache, starting empty, and counts how often a RIM was verified or reused.
    """
    namespace = vars(verify_gpu)  # the module's globals: what verify_devices looks up
    real = namespace["verify_rim_cached"]
    counts = {"verified": 0, "reused": 0}
    seen: dict[str, VerifiedRim] = {}
    clear_rim_cache()

    def counted(
        xml_bytes: bytes, *, pinned_roots: list[x509.Certificate], at: datetime
    ) -> VerifiedRim:
        if not reuse:
            counts["verified"] += 1
            return verify_rim(xml_bytes, pinned_roots=pinned_roots, at=at)
        rim = real(xml_bytes, pinned_roots=pinned_roots, at=at)
        digest = hashlib.sha256(xml_bytes).hexdigest()
        counts["reused" if seen.get(digest) is rim else "verified"] += 1
        seen[digest] = rim
        return rim

    namespace["verify_rim_cached"] = counted
    try:
        yield counts
    finally:
        namespace["verify_rim_cached"] = real
        clear_rim_cache()


def verdict_summary(result: DevicesVerdict) -> dict[str, Any]:
    """Host verdict, and per device its affirmation and reason codes."""
    devices: dict[str, dict[str, Any]] = {
        d.name: {"affirms": d.verdict.affirms, "reasons": sorted(d.verdict.reason_codes())}
        for d in result.devices
    }
    only_duplicates = all(set(d["reasons"]) <= {DUPLICATE} for d in devices.values())
    return {
        "host_affirms": result.host.affirms,
        "devices": devices,
        # Copies of one GPU: every device verified; only the duplicate check differs.
        "affirms_but_for_duplicates": only_duplicates
        and any(d["affirms"] for d in devices.values()),
    }


def _stats(per_gpu: list[float]) -> dict[str, float]:
    ordered = sorted(per_gpu)
    return {
        "mean": round(1000 * statistics.fmean(ordered), 4),
        "p50": round(1000 * statistics.median(ordered), 4),
        "p95": round(1000 * ordered[math.ceil(0.95 * len(ordered)) - 1], 4),
        "min": round(1000 * ordered[0], 4),
    }


def time_call(call: Call, gpus: int, n: int) -> dict[str, Any]:
    """One warm-up call, then ``n`` timed calls; per-GPU figures as time_nvidia.py's."""
    first_start = time.perf_counter()
    result = call()
    first = time.perf_counter() - first_start
    times = []
    summaries = set()
    for _ in range(n):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
        summaries.add(repr(verdict_summary(result)))
    return {
        "first_call_ms": round(1000 * first, 3),
        "per_gpu_ms": _stats([t / gpus for t in times]),
        "gpus_per_s": round(gpus * n / sum(times), 1),
        "verdict": verdict_summary(result),
        "verdict_same_every_call": len(summaries) == 1,
    }


# Stages of one call, by the function that does them (cumulative time under cProfile).
STAGES = {
    "RIM verify_rim (total)": "rim.py:verify_rim",
    "  RIM XML-DSig (signxml/lxml)": "rim.py:_verify_signature",
    "  RIM signing chain": "rim_chain.py:verify_signing_chain",
    "  RIM XML parse": "rim.py:_parse",
    "  RIM content read": "rim_read.py:read_rim_content",
    "device chain": "chain.py:verify_device_chain",
    "report signature": "signature.py:verify_report_signature",
    "report parse": "report.py:parse_report",
    "measurement compare": "appraise.py:compare_measurements",
    "policy": "gpu_policy.py:appraise_policy",
}


def profile(call: Call, calls: int, top: int) -> tuple[list[tuple[str, float, float]], str]:
    """cProfile over ``calls`` calls: (stage, ms per call, share of the call) and the top list."""
    call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[3] for (_p, _l, name), v in raw.items() if name == "verify_devices")
    stages = []
    for label, where in STAGES.items():
        file_name, func = where.split(":")
        cum = sum(
            v[3]
            for (path, _line, name), v in raw.items()
            if name == func and path.endswith("nvidia/" + file_name)
        )
        stages.append((label, 1000 * cum / calls, cum / total))
    # Every ECDSA P-384 verification: certificate links and the raw signatures.
    ecdsa = [
        v
        for (_path, _line, name), v in raw.items()
        if "verify_directly_issued_by" in name
        or ("method 'verify' of" in name and "ECPublicKey" in name)
    ]
    count, seconds = sum(v[1] for v in ecdsa), sum(v[2] for v in ecdsa)
    stages.append(
        (
            f"ECDSA P-384 verify ({count / calls:.0f}/call, all stages)",
            1000 * seconds / calls,
            seconds / total,
        )
    )
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(top)
    lines = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return stages, "\n".join(line for line in lines[start:] if line.strip())
