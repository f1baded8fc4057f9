#!/usr/bin/env python3
"""TPM evidence verification, ours beside Keylime 7.14.3, on the very same files.

For each AK kind (RSA-2048 and ECC P-256 by default) it builds a corpus in a
temporary directory with ../shared/bench/keylime/make_corpus.py (a private swtpm:
200 quotes per quote set, a 60-event UEFI log, an ima-ng log of --ima-entries
lines, its Keylime runtime policy, pcrs.json), times Keylime on it with
../shared/bench/keylime/time_keylime.py (a subprocess in Keylime's own venv; its
JSON must say ok), then times our verifier on the same quotes in the same run:

  sig     quote.pcrs parsed + authenticate_quote: AK signature over quote.attest,
          nonce == extraData, PCR selection and digest        (Keylime: checkquote)
  static  sig + PCRs 0-7 equal pcrs.json (appraise_pcrs)      (check_quote + static policy)
  ima     static + ASCII IMA log parsed, PCR 10 replayed (sha256 bank, every template
          hash checked), every entry against ima_policy       (check_quote + IMA)
  mb      sig + eventlog.bin parsed, replayed, compared with the quoted PCRs 0-7
          (check_boot_log)                                    (check_quote + tpm2_eventlog)
  full    ima + mb                                            (both; a first attestation)

As for Keylime: file reading, the AK and policy loading are outside the timed
region, one warm-up call per scenario, logging off, one timed call per quote;
sig and static go over every quote --repeat-fast times (10: 200 calls take
about 10 ms, too short to be steady), the others --repeat times (1), for both.
Every genuine quote must be accepted by both, and each scenario's tampered input
(a flipped nonce bit for sig/static, an edited IMA entry for ima/full, an extra
boot event for mb; the same bytes Keylime gets) rejected by both: otherwise the
exit status is 1. Targets (issue 5, per core) are printed beside the ratios:
sig >= 1.5x; full >= 20x with 2,000 IMA entries, >= 15x with 20,000
(--ima-entries 20000). Missing a target does not change the exit status.

--rounds N times Keylime and ours alternately N times and prints the medians and
the median of the rounds' ratios with their range: on a shared machine one side's
figure moves by 15% from one minute to the next (make bench uses 3).

--profile adds, per AK, our full check's mean time per stage and cProfile's
top functions for sig, ima and full (not part of the timed runs).

Usage: python bench/tpm_verify.py [--ak rsa ecc] [--ima-entries 2000] [--rounds N]
       [--profile [TOP]]
Needs Keylime's venv: bash ../shared/bench/keylime/setup.sh (make bench runs it).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tpm_verify_ours import (
    POLICY_NOTE,
    SCENARIOS,
    BenchError,
    Check,
    Corpus,
    QuoteFiles,
    control,
    load_corpus,
    load_keylime_timer,
    make_check,
    stage_times,
)

KEYLIME_SCRIPTS = Path(
    os.environ.get(
        "WEIGHTGATE_KEYLIME_BENCH",
        Path(__file__).resolve().parents[2] / "shared" / "bench" / "keylime",
    )
)


@dataclass(frozen=True)
class Target:
    ratio: float
    what: str


def targets(ima_entries: int) -> dict[str, Target]:
    """Issue 5's targets that apply to a corpus with ``ima_entries`` IMA lines."""
    out = {"sig": Target(1.5, "sig >= 1.5x")}
    if ima_entries == 2000:
        out["full"] = Target(20.0, "full, 2,000 IMA entries >= 20x")
    elif ima_entries == 20000:
        out["full"] = Target(15.0, "full, 20,000 IMA entries >= 15x")
    return out


# --------------------------------------------------------------------------- timing


def time_scenario(check: Check, quotes: list[QuoteFiles], repeat: int) -> dict[str, Any]:
    """The same loop and statistics as time_keylime.py's time_scenario."""
    check(quotes[0])  # warm-up; not timed
    times: list[float] = []
    rejections: list[dict[str, Any]] = []
    start = time.perf_counter()
    for _ in range(repeat):
        for q in quotes:
            t0 = time.perf_counter()
            reasons = check(q)
            times.append(time.perf_counter() - t0)
            if reasons:
                rejections.append({"quote": q.name, "reasons": reasons[:3]})
    wall = time.perf_counter() - start
    ordered = sorted(times)
    n = len(ordered)
    return {
        "calls": n,
        "accepted": n - len(rejections),
        "rejected": len(rejections),
        "rejections": rejections[:5],
        "wall_s": round(wall, 3),
        "quotes_per_s": round(n / wall, 1),
        "mean_ms": round(1000 * statistics.fmean(ordered), 4),
        "p50_ms": round(1000 * statistics.median(ordered), 4),
        "p95_ms": round(1000 * ordered[math.ceil(0.95 * n) - 1], 4),
    }


FAST = ("sig", "static")  # 200 calls take ~10 ms: repeated (--repeat-fast) to steady them


def repeat_for(scenario: str, args: argparse.Namespace) -> int:
    return int(args.repeat_fast if scenario in FAST else args.repeat)


def run_ours(corpus: Corpus, args: argparse.Namespace) -> dict[str, Any]:
    timer = load_keylime_timer(KEYLIME_SCRIPTS / "time_keylime.py")
    out: dict[str, Any] = {}
    for scenario in args.scenarios:
        quotes = corpus.quote_sets[corpus.meta["scenarios"][scenario]][: args.limit]
        result = time_scenario(make_check(corpus, scenario), quotes, repeat_for(scenario, args))
        result["control"] = control(corpus, scenario, timer, quotes[0])
        out[scenario] = result
    return out


def profile_ours(corpus: Corpus, scenario: str, top: int) -> str:
    """cProfile of our check over every quote of the scenario (not the timed run)."""
    quotes = corpus.quote_sets[corpus.meta["scenarios"][scenario]]
    check = make_check(corpus, scenario)
    check(quotes[0])
    profiler = cProfile.Profile()
    profiler.enable()
    for q in quotes:
        check(q)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    lines = text.getvalue().splitlines()
    keep = [ln for ln in lines if ln.strip() and not ln.startswith(("   Ordered", "   List"))]
    cwd = str(Path.cwd()) + "/"
    return "\n".join(ln.replace(cwd, "").replace(sys.prefix + "/", "") for ln in keep)


# --------------------------------------------------------------------------- Keylime


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("WG_BENCH_REEXEC", None)  # the shared scripts use it to stop re-exec loops
    return env


def build_corpus(out: Path, args: argparse.Namespace, ak: str) -> dict[str, Any]:
    command = [
        sys.executable,
        str(KEYLIME_SCRIPTS / "make_corpus.py"),
        str(out),
        "--ak",
        ak,
        "--n",
        str(args.n),
        "--ima-entries",
        str(args.ima_entries),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), check=False)
    if done.returncode != 0:
        raise BenchError(f"make_corpus.py failed (rc={done.returncode}): {done.stderr.strip()}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


def _time_keylime(
    corpus: Path, scenarios: list[str], repeat: int, limit: int | None
) -> dict[str, Any]:
    command = [sys.executable, str(KEYLIME_SCRIPTS / "time_keylime.py"), str(corpus)]
    command += ["--scenarios", *scenarios, "--repeat", str(repeat)]
    if limit is not None:
        command += ["--limit", str(limit)]
    # Its progress lines and errors go to our stderr as they come.
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=_env(), check=False)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise BenchError(f"time_keylime.py printed no JSON (rc={done.returncode})") from None
    return report


def run_keylime(corpus: Path, args: argparse.Namespace) -> dict[str, Any]:
    """time_keylime.py once per repeat count; one report with every scenario, ok of all."""
    groups: dict[int, list[str]] = {}
    for scenario in args.scenarios:
        groups.setdefault(repeat_for(scenario, args), []).append(scenario)
    report: dict[str, Any] = {}
    scenarios: dict[str, Any] = {}
    ok = True
    for repeat, names in groups.items():
        report = _time_keylime(corpus, names, repeat, args.limit)
        scenarios.update(report["scenarios"])
        ok = ok and bool(report["ok"])
    return {**report, "scenarios": scenarios, "ok": ok}


# --------------------------------------------------------------------------- report


def _ms(result: dict[str, Any]) -> str:
    return f"{result['mean_ms']:.3f}/{result['p50_ms']:.3f}/{result['p95_ms']:.3f} ms"


def report_ak(
    corpus: Corpus,
    built: dict[str, Any] | None,
    rounds: list[tuple[dict[str, Any], dict[str, Any]]],
    args: argparse.Namespace,
) -> tuple[bool, list[str]]:
    """Print one AK's figures; return (ok, summary rows).

    ``rounds``: (Keylime's report, ours) per round, timed one after the other. The
    figures are medians over the rounds, the ratio the median of each round's own
    ratio; the details (latencies, acceptance, controls) are the last round's, and
    every round must have accepted every genuine quote and rejected every control.
    """
    keylime, ours = rounds[-1]
    meta = corpus.meta
    entries = int(meta["ima"]["entries"])
    goals = targets(entries)
    sets = ", ".join(f"{name} {len(q)}" for name, q in corpus.quote_sets.items())
    made = f", built in {built['seconds']:.1f} s" if built else f" ({corpus.root})"
    print(f"\n== AK {meta['ak']['kind']}: {meta['ak']['algorithm']}")
    print(
        f"   corpus: quotes per set {sets}; {meta['eventlog']['events']} boot events "
        f"({meta['eventlog']['bytes']:,} B); {entries:,} IMA entries "
        f"({meta['ima']['bytes']:,} B){made}; every quote verified {args.repeat_fast}x (sig, "
        f"static) / {args.repeat}x (others), by both"
    )
    print(
        f"   ours: python {platform.python_version()}, cryptography {version('cryptography')}"
        f" | keylime {keylime['keylime_version']}: python {keylime['python']}, cryptography "
        f"{keylime['cryptography_version']}, tpm2-tools {keylime['tpm2_tools_version']}"
        f" | {os.cpu_count()} CPUs"
    )
    if {"ima", "full"} & set(args.scenarios):
        print(f"   IMA: {POLICY_NOTE}")
    ok = all(bool(k["ok"]) for k, _ in rounds)
    rows: list[str] = []
    for scenario in args.scenarios:
        mine, theirs = ours[scenario], keylime["scenarios"][scenario]
        ratios = [o[scenario]["quotes_per_s"] / k["scenarios"][scenario]["quotes_per_s"]
                  for k, o in rounds]  # fmt: skip
        ratio = statistics.median(ratios)
        mine_qps = statistics.median(o[scenario]["quotes_per_s"] for _, o in rounds)
        theirs_qps = statistics.median(k["scenarios"][scenario]["quotes_per_s"] for k, _ in rounds)
        spread = (
            f" ({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} rounds)"
            if len(ratios) > 1
            else ""
        )
        goal = goals.get(scenario)
        mark = ""
        if goal is not None:
            met = "met" if ratio >= goal.ratio else "NOT MET"
            mark = f"  [target {goal.what}: {met}]"
        line = (
            f"{scenario:<6} ours {mine_qps:>10,.1f}/s  keylime "
            f"{theirs_qps:>9,.1f}/s  ratio {ratio:>6.2f}x{spread}{mark}"
        )
        print("   " + line)
        print(f"{'':10}mean/p50/p95  ours {_ms(mine)}  keylime {_ms(theirs)}")
        mine_ctl, theirs_ctl = mine["control"], theirs["control"]
        print(
            f"{'':10}accepted ours {mine['accepted']}/{mine['calls']}, keylime "
            f"{theirs['accepted']}/{theirs['calls']}; control ({mine_ctl['probe']}): ours "
            f"{'rejected' if mine_ctl['rejected'] else 'ACCEPTED'}"
            f" ({'; '.join(mine_ctl['reasons'])[:90]}), keylime "
            f"{'rejected' if theirs_ctl['rejected'] else 'ACCEPTED'}"
        )
        for bad in mine["rejections"]:
            print(f"{'':10}OURS REJECTED genuine quote {bad['quote']}: {bad['reasons']}")
        ok = ok and all(
            o[scenario]["rejected"] == 0 and bool(o[scenario]["control"]["rejected"])
            for _, o in rounds
        )
        rows.append(f"{meta['ak']['kind']:<4} {entries:>6,}  {line}")
    return ok, rows


def run_one(corpus_dir: Path, built: dict[str, Any] | None, args: argparse.Namespace) -> bool:
    corpus = load_corpus(corpus_dir)
    rounds: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for number in range(1, args.rounds + 1):
        # Alternating Keylime and ours round by round: a machine that is slower for a
        # while slows both sides of a round, not one side of the whole comparison.
        note = f" (round {number}/{args.rounds})" if args.rounds > 1 else ""
        print(f"tpm_verify: timing Keylime on {corpus_dir}{note}", file=sys.stderr, flush=True)
        keylime = run_keylime(corpus_dir, args)
        print(f"tpm_verify: timing ours{note}", file=sys.stderr, flush=True)
        rounds.append((keylime, run_ours(corpus, args)))
    ok, rows = report_ak(corpus, built, rounds, args)
    args.summary_rows += rows
    if not all(k["ok"] for k, _ in rounds):
        print("   KEYLIME NOT OK: a genuine quote was rejected or a control accepted by Keylime")
    if args.profile:
        stages = stage_times(corpus)
        total = sum(stages.values())
        kind = corpus.meta["ak"]["kind"]
        print(f"\n   ours, full ({kind}): mean ms per quote by stage, without a profiler")
        for stage, ms in stages.items():
            print(f"      {stage:<24} {ms:8.3f} ms  {100 * ms / total:5.1f} %")
        for scenario in (s for s in ("sig", "ima", "full") if s in args.scenarios):
            print(f"\n   cProfile, ours, {scenario} ({corpus.meta['ak']['kind']}), by own time:")
            print("      " + profile_ours(corpus, scenario, args.profile).replace("\n", "\n      "))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ak", nargs="+", choices=["rsa", "ecc"], default=["rsa", "ecc"], help="AK kinds"
    )
    parser.add_argument(
        "--ima-entries", type=int, default=2000, help="IMA log lines (make_corpus; default 2000)"
    )
    parser.add_argument("--n", type=int, default=200, help="quotes per quote set (default 200)")
    parser.add_argument(
        "--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), help="default: all"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="ima, mb, full: verify every quote N times (1)"
    )
    parser.add_argument(
        "--repeat-fast", type=int, default=10, help="sig, static: verify every quote N times (10)"
    )
    parser.add_argument("--limit", type=int, help="use only the first LIMIT quotes of each set")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="time Keylime and ours alternately N times; report medians (1)",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        help="use this existing corpus (from make_corpus.py) instead of building one per --ak",
    )
    parser.add_argument(
        "--profile",
        type=int,
        nargs="?",
        const=15,
        default=0,
        metavar="TOP",
        help="after timing: our full check by stage, and cProfile's TOP (15) functions for "
        "our sig, ima and full checks",
    )
    args = parser.parse_args()
    if min(args.repeat, args.repeat_fast, args.n, args.limit or 1, args.rounds) < 1:
        parser.error("--repeat, --repeat-fast, --n, --limit and --rounds must be at least 1")
    args.summary_rows = []
    logging.disable(logging.CRITICAL)  # as for Keylime: logging is not part of the figure

    ok = True
    if args.corpus is not None:
        ok = run_one(args.corpus, None, args)
    else:
        with tempfile.TemporaryDirectory(prefix="wg-bench-tpm-") as tmp:
            for ak in args.ak:
                out = Path(tmp) / f"tpm-{ak}"
                print(f"tpm_verify: building the {ak} corpus", file=sys.stderr, flush=True)
                built = build_corpus(out, args, ak)
                ok = run_one(out, built, args) and ok
    print("\nsummary (quotes/s, same run, same files; ratio = ours/keylime):")
    for row in args.summary_rows:
        print("  " + row)
    print(
        "all genuine quotes accepted and all controls rejected, by both"
        if ok
        else "FAILED: a genuine quote was rejected or a control accepted (see above)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        sys.exit(f"tpm_verify.py: error: {err}")
