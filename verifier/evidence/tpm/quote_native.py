"""A quote's TPMS_ATTEST and TPMT_SIGNATURE framed in one C call (``native_quote/quote.c``).

Why: on the per-quote path the Python readers (:mod:`.wire`) cost a few microseconds
each when measured alone, but they run right after an ECDSA verification of the
previous quote, whose tables push the interpreter's working set out of the CPU
caches, and there they take three to four times as long (``bench/tpm_verify.py``,
signature path with an ECC AK). One C call touches much less.

:func:`parse_quote_and_signature` returns exactly what :func:`parse_quote_attest`
and :func:`parse_signature` return, or None -- for anything the C reader does not
accept in full, and wherever the module is not built or is disabled -- and then the
caller runs those parsers, which name the fault. It never reports a fault itself.
``tests/unit/test_quote_native.py`` compares the two paths on every vector and on
generated and mutated inputs; ``tests/fuzz/fuzz_quote_native.py`` does so under
atheris.

``WEIGHTGATE_QUOTE_NATIVE=0`` in the environment turns the C path off (an operator's
escape hatch; read at import).
"""

from __future__ import annotations

import os
from types import ModuleType

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.parse_attest import QuoteInfo, quote_info
from verifier.evidence.tpm.parse_common import HASH_ALGS, MAX_ATTEST_SIZE, MAX_SIGNATURE_SIZE
from verifier.evidence.tpm.parse_signatures import SIG_SCHEMES, TpmSignature, tpm_signature

__all__ = ["active", "parse_quote_and_signature"]

_module: ModuleType | None
try:
    from verifier.evidence.tpm import _quote_native as _module
except ImportError:  # built without a C compiler: the Python readers only
    _module = None
if _module is not None and (
    _module.MAX_ATTEST_SIZE != MAX_ATTEST_SIZE or _module.MAX_SIGNATURE_SIZE != MAX_SIGNATURE_SIZE
):
    # A stale build with other bounds would accept what the readers refuse.
    _module = None
if os.environ.get("WEIGHTGATE_QUOTE_NATIVE", "1") == "0":
    _module = None

_quote = None if _module is None else _module.quote


def active() -> bool:
    """Whether the C path is in use."""
    return _quote is not None


def parse_quote_and_signature(
    attest: bytes, signature: bytes
) -> tuple[QuoteInfo, TpmSignature] | None:
    """``(parse_quote_attest(attest), parse_signature(signature))`` when both parse,
    or None: the caller must then run those parsers, which name the fault."""
    if _quote is None:
        return None
    fields = _quote(attest, signature)
    if fields is None:
        return None
    body, alg, hash_alg, sig = fields
    try:
        # The C reader has already checked what quote_info checks (safe, the banks),
        # so this does not raise for what it returns.
        info = quote_info(body)
    except ParseError:
        return None
    return info, tpm_signature(SIG_SCHEMES[alg], HASH_ALGS[hash_alg], sig)
