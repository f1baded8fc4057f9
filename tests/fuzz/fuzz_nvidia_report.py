"""atheris harness for the NVIDIA SPDM attestation-report parser (untrusted bytes).

Run: ``python tests/fuzz/fuzz_nvidia_report.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from every distinct report in the
shared vectors' ``nvidia/expected_results.json``. The property: parsing either returns
a report whose parts tile the input exactly (signed bytes + 96-byte signature, no
trailing bytes) or raises ParseError; anything else is a bug. Inputs starting with
``[`` also go through the evidence-JSON reader. ``fuzz_one`` is importable so that the
unit suite runs the same property without atheris (tests/unit/test_fuzz_smoke_nvidia.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from verifier.evidence.errors import ParseError
from verifier.evidence.nvidia.report import SIGNATURE_SIZE, parse_report
from verifier.evidence.nvidia.report_files import read_evidence_json, report_from_hex


def _check(data: bytes) -> None:
    try:
        report = parse_report(data)
    except ParseError:
        return
    assert report.signed_bytes + report.signature == data
    assert len(report.signature) == SIGNATURE_SIZE
    indexes = [block.index for block in report.blocks]
    assert indexes == sorted(set(indexes))
    assert all(0 < i < 0xFF for i in indexes)


def fuzz_one(data: bytes) -> None:
    """One fuzz input: the bytes of a report (or, from ``[``, an evidence JSON file)."""
    if data[:1] == b"[":
        try:
            entries = read_evidence_json(data)
        except ParseError:
            return
        for entry in entries:
            _check(entry.report)
        return
    _check(data)


def seed_inputs() -> Iterator[bytes]:
    """Every distinct report in the shared NVIDIA vectors (invalid signatures included)."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    root = testvectors_root() / "nvidia"
    expected = json.loads((root / "expected_results.json").read_text())
    for entry in expected["evidence"]:
        if entry["duplicate_of"] is not None:
            continue
        name: str = entry["file"]
        if name.endswith("]"):
            path, index = name[:-1].split("[")
            yield read_evidence_json((root / path).read_bytes())[int(index)].report
        else:
            yield report_from_hex((root / name).read_text())


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("nvidia_report", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
