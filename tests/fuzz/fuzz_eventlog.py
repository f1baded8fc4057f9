"""atheris harness for the UEFI event-log parser and replay (untrusted bytes).

Run: ``python tests/fuzz/fuzz_eventlog.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from the real logs listed in the
shared vectors' ``tpm/manifest.json``. The property: parsing either returns or raises
ParseError, and replaying a parsed log in any bank it declares either returns one
value per extended PCR or raises ReplayError; anything else is a bug. ``fuzz_one``
is importable so that the unit suite runs the same property without atheris
(tests/unit/test_eventlog.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.eventlog import PCR_NOT_EXTENDED, parse_event_log
from verifier.evidence.tpm.replay import ReplayError, replay


def fuzz_one(data: bytes) -> None:
    """One fuzz input: the bytes of a whole event log."""
    try:
        log = parse_event_log(data)
    except ParseError:
        return
    assert log.events, "a parsed log has at least its first event"
    for bank in log.banks:
        try:
            pcrs = replay(log, bank=bank)
        except ReplayError:
            continue
        assert PCR_NOT_EXTENDED not in pcrs
        assert all(0 <= pcr <= 23 for pcr in pcrs)


def seed_inputs() -> Iterator[bytes]:
    """Every real log in the shared vectors (the ones that must not parse included)."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    tpm = testvectors_root() / "tpm"
    manifest = json.loads((tpm / "manifest.json").read_text())
    for entry in manifest["logs"]:
        yield (tpm / entry["file"]).read_bytes()


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("eventlog", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
