#!/usr/bin/env python3
"""NVIDIA GPU verification, ours beside NVIDIA's nv-local-gpu-verifier: same files, same run.

For each K in --gpus (1 and 8 GPUs per call by default) it runs
../shared/bench/nvidia/time_nvidia.py (NVIDIA's attest() in its own venv, under
faketime 2024-03-01 12:00, OCSP stubbed "good", K copies of the evidence; its JSON
must say ok), then times our verify_devices on the very same files in this process:
the 2.0.0 sample attestationReport.txt + gpuAkCertChain.txt, the *_test_no_gpu
driver and VBIOS RIMs, nonce 4cff7f53...51af2e, at = 2024-03-01 12:00 UTC, the V1
policy of tests/unit/test_nvidia_appraise.py (CC on, driver >= 535.00, VBIOS >=
96.00.00.00.00, the two RIM ids allowed), pinned roots from the vector's roots/.

Timed, ours: one verify_devices call (report parse, device chain to the pinned
root, report signature, nonce, both RIMs' XML-DSig + signing chain, measurement
comparison, policy). Files are read and hex decoded once, outside the timed
region; the RIMs are VERIFIED in every call (NVIDIA verifies them per GPU; we
verify each RIM id once per call, so at K = 8 we verify 2 RIMs, NVIDIA 16).
A second line, "ours+rimcache", keeps the verifier's own in-process reuse of
verified RIMs (verifier.evidence.nvidia.rim_cache; see
gpu_verify_ours.rim_verification). OCSP: no check on our side (verify_devices
does none), as NVIDIA's is a stub answering "good".
One warm-up call, then --n timed calls for NVIDIA, --n-ours for ours.

Both must give the same verdict (NVIDIA: pass; ours: affirming, except that at
K > 1 the copies are one GPU seen K times, which ours flags as
nvidia.device.duplicate and NVIDIA does not check: every copy must otherwise
affirm), and both must reject the control (nonce with its last hex digit
changed). Otherwise the exit status is 1. The issue-6 target (>= 20x NVIDIA per
GPU, <= 2 ms per GPU) is printed beside the ratios; missing it does not change
the exit status. --profile [TOP] adds cProfile's stages and top functions.

Usage: python bench/gpu_verify.py [--gpus 1 8] [--n 20] [--n-ours 200] [--profile [TOP]]
Needs NVIDIA's venv: bash ../shared/bench/nvidia/setup.sh (make bench runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from gpu_verify_ours import (
    AT,
    NONCE,
    OCSP_NOTE,
    Inputs,
    load_inputs,
    make_call,
    profile,
    rim_verification,
    time_call,
    verdict_summary,
    wrong_nonce,
)

NVIDIA_SCRIPTS = Path(
    os.environ.get(
        "WEIGHTGATE_NVIDIA_BENCH",
        Path(__file__).resolve().parents[2] / "shared" / "bench" / "nvidia",
    )
)
TARGET_RATIO = 20.0
TARGET_MS = 2.0


class BenchError(RuntimeError):
    pass


def run_nvidia(gpus: int, n: int) -> dict[str, Any]:
    command = [
        sys.executable,
        str(NVIDIA_SCRIPTS / "time_nvidia.py"),
        "--n",
        str(n),
        "--gpus",
        str(gpus),
        "--expect",
        "pass",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # NVIDIA's console log (warnings) only when it failed
        sys.stderr.write(done.stderr[-4000:])
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise BenchError(
            f"time_nvidia.py exited {done.returncode} without JSON "
            "(run bash ../shared/bench/nvidia/setup.sh)"
        ) from exc
    return result


def run_ours(inputs: Inputs, gpus: int, n: int) -> dict[str, Any]:
    with rim_verification(reuse=False):
        result = time_call(make_call(inputs, gpus), gpus, n)
    with rim_verification(reuse=True) as counts:
        cached = time_call(make_call(inputs, gpus), gpus, n)
    cached["rim_verifications"] = dict(counts)
    control = verdict_summary(make_call(inputs, gpus, wrong_nonce(NONCE))())
    codes = {c for d in control["devices"].values() for c in d["reasons"]}
    result["control"] = {
        "probe": "nonce with its last hex digit changed",
        "host_affirms": control["host_affirms"],
        "reason_codes": sorted(codes),
        "rejected": not control["host_affirms"] and "nvidia.report.nonce_mismatch" in codes,
    }
    result["rimcache"] = cached
    return result


def _same_verdict(ours: dict[str, Any], nvidia: dict[str, Any], gpus: int) -> tuple[bool, str]:
    verdict = ours["verdict"]
    nv_pass = nvidia.get("verdict") is True
    if gpus == 1:
        same = verdict["host_affirms"] == nv_pass
        return same, ("affirming" if verdict["host_affirms"] else "contraindicated")
    same = nv_pass and verdict["affirms_but_for_duplicates"]
    return same, (
        f"every GPU verified; gpu0 affirms, gpu1..gpu{gpus - 1} only {'nvidia.device.duplicate'}"
        " (K copies of one GPU; NVIDIA has no duplicate check)"
        if same
        else f"differs: {verdict}"
    )


def _row(label: str, ours: dict[str, Any], nvidia: dict[str, Any]) -> list[str]:
    lines = []
    for stat in ("mean", "p50", "p95"):
        o, v = ours["per_gpu_ms"][stat], nvidia["per_gpu_ms"][stat]
        ratio = v / o
        met = "met" if ratio >= TARGET_RATIO and o <= TARGET_MS else "NOT met"
        lines.append(
            f"  {label:<14} {stat:<4}  ours {o:8.3f} ms/GPU  nvidia {v:8.3f} ms/GPU  "
            f"ratio {ratio:6.1f}x   "
            f"(target >= {TARGET_RATIO:.0f}x and <= {TARGET_MS:.0f} ms: {met})"
        )
    lines.append(
        f"  {label:<14} GPUs/s ours {ours['gpus_per_s']:8.1f}         nvidia "
        f"{nvidia['gpus_per_s']:8.1f}         "
        f"ratio {ours['gpus_per_s'] / nvidia['gpus_per_s']:6.1f}x"
    )
    return lines


def report_k(gpus: int, ours: dict[str, Any], nvidia: dict[str, Any]) -> bool:
    same, why = _same_verdict(ours, nvidia, gpus)
    controls = ours["control"]["rejected"] and nvidia["control"]["rejected"]
    stable = ours["verdict_same_every_call"] and ours["rimcache"]["verdict_same_every_call"]
    ok = bool(nvidia.get("ok")) and same and controls and stable
    print(f"\nK = {gpus} GPU{'s' if gpus > 1 else ''} per call")
    print(
        f"  verdict: nvidia {'pass' if nvidia.get('verdict') else 'FAIL'}, ours {why}"
        f" -> {'same' if same else 'DIFFERENT'}"
    )
    print(
        f"  control (wrong nonce): nvidia rejected={nvidia['control']['rejected']}, ours "
        f"rejected={ours['control']['rejected']} {ours['control']['reason_codes']}"
    )
    print("\n".join(_row("ours", ours, nvidia)))
    cached = ours["rimcache"]
    print("\n".join(_row("ours+rimcache", cached, nvidia)))
    counts = cached["rim_verifications"]
    print(
        f"  (ours+rimcache: RIMs verified {counts['verified']}x, reused {counts['reused']}x "
        "over warm-up + timed calls; NVIDIA re-verifies every RIM per GPU per call)"
    )
    print(
        f"  first call: ours {ours['first_call_ms']} ms, nvidia {nvidia['first_call_ms']} ms; "
        f"ok={ok}"
    )
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 8], help="GPUs per call")
    ap.add_argument("--n", type=int, default=20, help="NVIDIA's timed calls per K (default 20)")
    ap.add_argument("--n-ours", type=int, default=200, help="our timed calls per K (default 200)")
    ap.add_argument("--profile", type=int, nargs="?", const=15, default=0, metavar="TOP")
    ap.add_argument("--json", type=Path, help="also write all figures as JSON here")
    args = ap.parse_args()

    inputs = load_inputs()
    results: dict[str, Any] = {}
    ok = True
    first_nvidia: dict[str, Any] = {}
    for gpus in args.gpus:
        nvidia = run_nvidia(gpus, args.n)
        first_nvidia = first_nvidia or nvidia
        ours = run_ours(inputs, gpus, args.n_ours)
        results[str(gpus)] = {"ours": ours, "nvidia": nvidia}
        if gpus == args.gpus[0]:
            print(
                "GPU verification, same evidence (PROVENANCE.md V1: 2.0.0 attestationReport.txt,"
                " test_no_gpu driver + VBIOS RIMs), same run"
            )
            print(
                f"  nvidia: nv-local-gpu-verifier {nvidia.get('nv_local_gpu_verifier_version')}, "
                f"cryptography {nvidia.get('cryptography_version')}, python "
                f"{nvidia.get('python')}, clock faked {nvidia.get('faked_clock')} "
                f"(seen {nvidia.get('clock_seen_by_verifier')}), OCSP {nvidia.get('ocsp')}, "
                f"{args.n} calls"
            )
            print(
                f"  ours:   weightgate verify_devices, cryptography {version('cryptography')}, "
                f"signxml {version('signxml')}, lxml {version('lxml')}, python "
                f"{platform.python_version()}, at={AT.isoformat()}, OCSP {OCSP_NOTE}, "
                f"{args.n_ours} calls; {os.cpu_count()} CPUs"
            )
        ok = report_k(gpus, ours, nvidia) and ok

    if args.profile:
        for gpus in args.gpus:
            stages, top = profile(make_call(inputs, gpus), max(20, args.n_ours // 5), args.profile)
            print(f"\nprofile, ours, K = {gpus} (cProfile; ms per call include its overhead)")
            for label, ms, share in stages:
                print(f"  {label:<32} {ms:8.3f} ms  {100 * share:5.1f} %")
            print("  " + top.replace("\n", "\n  "))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"\nok={ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"gpu_verify.py: {exc}", file=sys.stderr)
        sys.exit(2)
