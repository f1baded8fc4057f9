"""atheris harness: the C quote reader (``native_quote/quote.c``) against the Python readers.

Run: ``python tests/fuzz/fuzz_quote_native.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one with every quote of the shared
TPM vectors paired with every signature. An input is a quote's length (two bytes,
big-endian), the quote, then the signature. The properties:

* ``parse_quote_and_signature`` returns exactly ``(parse_quote_attest(quote),
  parse_signature(signature))`` (equal values of the same types) when both parse,
  and None when either raises ParseError;
* nothing but ParseError escapes the Python readers, and nothing at all escapes the
  C path (a ValueError, a KeyError from a field it should have refused, a crash).

``fuzz_one`` is importable (tests/unit/test_fuzz_smoke_quote_native.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import quote_native
from verifier.evidence.tpm.parse import parse_quote_attest, parse_signature


def split(data: bytes) -> tuple[bytes, bytes]:
    """(quote, signature) of one fuzz input."""
    length = int.from_bytes(data[:2], "big")
    return data[2 : 2 + length], data[2 + length :]


def join(quote: bytes, signature: bytes) -> bytes:
    return len(quote).to_bytes(2, "big") + quote + signature


def same(a: object, b: object) -> bool:
    """Equal, and of the same types all the way down (a bool is not an int here)."""
    if type(a) is not type(b):
        return False
    if is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    if isinstance(a, tuple):
        assert isinstance(b, tuple)
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, frozenset):
        return a == b and all(type(x) is int for x in a)
    return a == b


def fuzz_one(data: bytes) -> None:
    quote, signature = split(data)
    try:
        expected = (parse_quote_attest(quote), parse_signature(signature))
    except ParseError:
        expected = None
    got = quote_native.parse_quote_and_signature(quote, signature)
    if expected is None:
        assert got is None, (quote.hex(), signature.hex(), got)
    else:
        assert got is not None and same(got, expected), (quote.hex(), signature.hex(), got)


def seed_inputs() -> Iterator[bytes]:
    """Every quote of the shared TPM vectors with every signature."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    tpm = testvectors_root() / "tpm"
    quotes = sorted({p.read_bytes() for p in tpm.rglob("*.attest")})
    signatures = sorted({p.read_bytes() for p in tpm.rglob("*.sig")})
    for quote in quotes:
        if quote[4:6] == b"\x80\x18":
            for signature in signatures:
                yield join(quote, signature)


def main() -> None:
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    if not quote_native.active():
        sys.exit("fuzz_quote_native: the C quote module is not active (make setup builds it)")
    run("quote_native", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
