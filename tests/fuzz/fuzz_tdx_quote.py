"""atheris harness for the Intel TDX quote parser and the CCEL log reader (untrusted bytes).

Run: ``python tests/fuzz/fuzz_tdx_quote.py [libFuzzer options] [corpus dirs]``. Without
a corpus directory it seeds one from the TDX quotes in the shared vectors. The
property: parsing either returns a quote whose signed bytes are a prefix of the
(zero-trimmed) input, or raises ParseError; anything else is a bug. Inputs starting
with ``\\x01\\x00\\x00\\x00\\x03`` also go through the CCEL reader. ``fuzz_one`` is
importable so that the unit suite runs the property without atheris
(tests/unit/test_fuzz_smoke_tdx.py).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from verifier.evidence.errors import ParseError
from verifier.evidence.tdx.ccel import parse_ccel_log
from verifier.evidence.tdx.quote import ENCLAVE_REPORT_SIZE, parse_quote, strip_zero_padding

_CCEL_PREFIX = b"\x01\x00\x00\x00\x03"


def fuzz_one(data: bytes) -> None:
    """One fuzz input: a quote (maybe zero-padded), or a CCEL log area."""
    if data.startswith(_CCEL_PREFIX):
        try:
            parse_ccel_log(data)
        except ParseError:
            return
        return
    try:
        raw, padding = strip_zero_padding(data)
        quote = parse_quote(raw)
    except ParseError:
        return
    assert raw + bytes(padding) == data
    assert raw.startswith(quote.signed_bytes)
    assert len(quote.signature) == len(quote.attestation_key) == 64
    assert len(quote.certification.qe_report.raw) == ENCLAVE_REPORT_SIZE


SEEDS = (
    "gotdx_v4_quote_spr.dat",
    "gotdx_v5_quote_td15.dat",
    "gotdx_v4_quote_cos113.dat",
    "trustee_v4_quote_debug_td.dat",
    "trustee_v5_quote_td15.dat",
    "trustee_azure_tdx_quote.dat",
    "qvl_synthetic_v4_quote.dat",
    "trustee_sgx_v3_quote_occlum.dat",
)


def seed_inputs() -> Iterator[bytes]:
    """Every TDX quote in the shared vectors (the non-conformant ones included)."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    root = testvectors_root() / "tdx"
    for name in SEEDS:
        yield (root / name).read_bytes()


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("tdx_quote", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
