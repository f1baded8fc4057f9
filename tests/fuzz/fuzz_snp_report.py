"""atheris harness for the AMD SEV-SNP parsers (untrusted bytes).

Run: ``python tests/fuzz/fuzz_snp_report.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from the shared vectors'
reports (raw and Azure HCL), certificates and Azure vTPM evidence. The first byte
selects the parser: 0 report (raw or hex), 1 Azure HCL report, 2 certificate
bytes + AMD extensions, 3 Azure SNP vTPM evidence JSON (+ its runtime claims).
The property: each either returns a value consistent with its input (a report's
signed bytes are the input's first 0x2A0 bytes) or raises ParseError; anything
else is a bug. ``fuzz_one`` is importable so that the unit suite runs the same
property without atheris (tests/unit/test_fuzz_smoke_snp.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from verifier.evidence.errors import ParseError
from verifier.evidence.snp.azure_evidence import parse_azure_evidence, parse_runtime_claims
from verifier.evidence.snp.certs import load_certificates, read_key_cert
from verifier.evidence.snp.hcl import parse_hcl_report
from verifier.evidence.snp.report import REPORT_SIZE, SIGNED_SIZE, parse_report, report_bytes

REPORT, HCL, CERT, AZURE = 0, 1, 2, 3


def _report(data: bytes) -> None:
    try:
        report = parse_report(data)
    except ParseError:
        return
    raw = report_bytes(data)
    assert len(raw) == REPORT_SIZE
    assert report.signed_bytes == raw[:SIGNED_SIZE]
    assert report.r < 1 << 576 and report.s < 1 << 576


def _hcl(data: bytes) -> None:
    try:
        hcl = parse_hcl_report(data)
    except ParseError:
        return
    assert len(hcl.snp_report) == REPORT_SIZE
    _report(hcl.snp_report)


def _cert(data: bytes) -> None:
    try:
        certificates = load_certificates(data)
    except ParseError:
        return
    for certificate in certificates:
        try:
            key = read_key_cert(certificate)
        except ParseError:
            continue
        assert key.hwid is None or len(key.hwid) in (8, 64)
        assert all(0 <= spl <= 255 for spl in key.spls.values())


def _azure(data: bytes) -> None:
    try:
        evidence = parse_azure_evidence(data)
    except ParseError:
        return
    assert evidence.version == 2 and evidence.attest[:4] == b"\xffTCG"
    assert evidence.pcrs is None or all(len(pcr) == 32 for pcr in evidence.pcrs)
    _report(evidence.hcl.snp_report)
    try:
        claims = parse_runtime_claims(evidence.hcl.runtime_claims)
    except ParseError:
        return
    assert claims.ak_bits >= 2048


def fuzz_one(data: bytes) -> None:
    """One fuzz input: a selector byte, then the bytes for that parser."""
    if not data:
        return
    selector, body = data[0] % 4, data[1:]
    (_report, _hcl, _cert, _azure)[selector](body)


def seed_inputs() -> Iterator[bytes]:
    """Every vector report (raw, hex, HCL) and certificate, with its selector byte."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    root = testvectors_root() / "snp"
    for path in sorted(root.glob("*report*.bin")):
        data = path.read_bytes()
        if data[:4] == b"HCLA":
            yield bytes([HCL]) + data
        else:
            yield bytes([REPORT]) + data
            yield bytes([REPORT]) + data.hex().encode()
    for path in sorted([*root.glob("*.der"), *root.glob("*.pem")]):
        yield bytes([CERT]) + path.read_bytes()
    for path in sorted(root.glob("*azure*evidence*.json")):
        yield bytes([AZURE]) + path.read_bytes()


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("snp_report", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
