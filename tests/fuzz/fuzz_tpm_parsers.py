"""atheris harness for the TPM evidence parsers (untrusted bytes from the agent).

Run: ``python tests/fuzz/fuzz_tpm_parsers.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from the real vectors.
The property: a parser either returns or raises ParseError; anything else (another
exception, a crash in the TSS) is a bug. ``fuzz_one`` is importable so that the unit
suite can run the same property without atheris (tests/unit/test_fuzz_smoke_tpm.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import certify, parse

# The first input byte picks the parser, so one corpus covers them all.
PARSERS: tuple[Callable[[bytes], object], ...] = (
    parse.parse_quote_attest,
    parse.parse_signature,
    parse.parse_tpm2b_public,
    parse.parse_tpmt_public,
    certify.parse_certify_attest,
)


def fuzz_one(data: bytes) -> None:
    """One fuzz input: selector byte, then the bytes for that parser."""
    if not data:
        return
    parser = PARSERS[data[0] % len(PARSERS)]
    try:
        result = parser(data[1:])
    except ParseError:
        return
    if isinstance(result, parse.TpmPublic):
        # The name is derived from parsed fields; it must be computable too.
        assert len(result.name) == 2 + parse.HASH_SIZES[result.name_algorithm]


def seed_inputs() -> Iterator[bytes]:
    """Valid inputs from the shared vectors, each prefixed with its parser's selector."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    tpm = testvectors_root() / "tpm"
    patterns = [("*.attest", 0), ("*.sig", 1), ("*.tpm2b_public", 2), ("*.tpmt", 3)]
    for pattern, selector in patterns:
        for path in sorted(tpm.rglob(pattern)):
            yield bytes([selector]) + path.read_bytes()


def main() -> None:
    # The TSS logs a warning for every malformed structure; at fuzzing speed that
    # drowns libFuzzer's own output.
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("tpm", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
