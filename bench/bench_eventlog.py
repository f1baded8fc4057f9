#!/usr/bin/env python3
"""Event-log parse + replay throughput, beside a bare hashlib loop over the same digests.

For the largest real logs in ../shared/testvectors/tpm it times, on the same bytes:
  reference  one ``hashlib.new(bank, pcr + digest)`` per extended event, over
             digests extracted beforehand (the irreducible cost of a replay)
  ours       parse_event_log + replay of every bank the log declares
and prints both rates and ours/reference as a ratio.

Usage: python bench/bench_eventlog.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

from verifier.evidence.tpm.eventlog import EV_NO_ACTION, PCR_NOT_EXTENDED, parse_event_log
from verifier.evidence.tpm.replay import replay

VECTORS = (
    Path(
        os.environ.get(
            "WEIGHTGATE_TESTVECTORS", Path(__file__).resolve().parents[2] / "shared" / "testvectors"
        )
    )
    / "tpm"
)
LOGS = (
    "tpm2-tss/binary_measurements_hcrtm.bin",  # most events (204), 3 declared banks
    "go-attestation/option_rom_eventlog",  # largest file (73 KB), SHA-1 legacy
    "python3-uefi-eventlog/thinkpad__p511.bin",  # Windows, 64 KB
)


def rate(call: Callable[[], object], seconds: float) -> float:
    call()  # warm-up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            call()
        count += 20
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    for name in LOGS:
        raw = (VECTORS / name).read_bytes()
        log = parse_event_log(raw)
        banks = []
        for bank in log.banks:
            try:
                replay(log, bank=bank)
            except ValueError:
                continue  # bank not replayable (missing digests, no hashlib support)
            banks.append(bank)
        work = [
            (bank, event.digests[bank])
            for bank in banks
            for event in log.events
            if event.event_type != EV_NO_ACTION and event.pcr != PCR_NOT_EXTENDED
        ]

        def reference(work: list[tuple[str, bytes]] = work) -> None:
            pcr = b""
            for bank, digest in work:
                pcr = hashlib.new(bank, pcr + digest).digest()

        def ours(raw: bytes = raw, banks: list[str] = banks) -> None:
            parsed = parse_event_log(raw)
            for bank in banks:
                replay(parsed, bank=bank)

        ref, our = rate(reference, args.seconds), rate(ours, args.seconds)
        print(
            f"{name}: {len(raw)} B, {len(log.events)} events, banks {banks}: "
            f"reference {ref:,.0f}/s, ours {our:,.0f}/s, ours/reference {our / ref:.2f}"
        )


if __name__ == "__main__":
    main()
