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
from collections.abc import Callable
from types import ModuleType

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import wire
from verifier.evidence.tpm.parse_attest import ClockInfo, QuoteInfo, pcr_selection
from verifier.evidence.tpm.parse_common import HASH_ALGS, MAX_ATTEST_SIZE, MAX_SIGNATURE_SIZE
from verifier.evidence.tpm.parse_signatures import TpmSignature

__all__ = ["active", "parse_quote_and_signature"]

_module: ModuleType | None
try:
    from verifier.evidence.tpm import _quote_native as _module
except ImportError:  # built without a C compiler: the Python readers only
    _module = None
# The bounds and hashes the C reader enforces must be the Python readers': a build
# with others (stale, or a bound changed on one side only) would accept what they
# refuse, so it is not used.
_READER_BOUNDS = {
    "MAX_ATTEST_SIZE": MAX_ATTEST_SIZE,
    "MAX_SIGNATURE_SIZE": MAX_SIGNATURE_SIZE,
    "MAX_TPM2B_NAME": wire.MAX_TPM2B_NAME,
    "MAX_TPM2B_DATA": wire.MAX_TPM2B_DATA,
    "MAX_TPM2B_DIGEST": wire.MAX_TPM2B_DIGEST,
    "MAX_TPM2B_PUBLIC_KEY_RSA": wire.MAX_TPM2B_PUBLIC_KEY_RSA,
    "MAX_TPM2B_ECC_PARAMETER": wire.MAX_TPM2B_ECC_PARAMETER,
    "NUM_PCR_BANKS": wire.NUM_PCR_BANKS,
    "PCR_SELECT_MAX": wire.PCR_SELECT_MAX,
}


def _matches_readers(module: ModuleType) -> bool:
    return all(
        getattr(module, name, None) == value for name, value in _READER_BOUNDS.items()
    ) and set(getattr(module, "HASH_ALGS", ())) == set(HASH_ALGS)


if _module is not None and not _matches_readers(_module):
    _module = None
if os.environ.get("WEIGHTGATE_QUOTE_NATIVE", "1") == "0":
    _module = None

_quote: Callable[[bytes, bytes], tuple[QuoteInfo, TpmSignature] | None] | None = None
if _module is not None:
    # The classes the C reader makes, checked against its field lists (TypeError at
    # import if a class no longer matches them: a programming error, not evidence).
    _module.configure(QuoteInfo, ClockInfo, TpmSignature, pcr_selection, ParseError)
    _quote = _module.quote


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
    return _quote(attest, signature)
