"""Parse a TPMS_ATTEST (untrusted bytes): its header, its clock, and a quote's body.

TPM2_Quote's TPMS_ATTEST is framed by the strict hand-written readers of
:mod:`.wire`, about 30 times faster than going through pytss, which remains their
test oracle (see the ``wire`` docstring for the measurements and the differential
test). Other attestation types (``certify``) are unmarshalled with tpm2-pytss
through :func:`unmarshal_attest`. Either way the TPM_GENERATED magic and the
attestation type are checked here, on the raw header, first.

Nothing here is authenticated: the results are claims, to be checked by
``authenticate``.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field
from typing import Any

from tpm2_pytss.types import TPMS_ATTEST

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import wire
from verifier.evidence.tpm.parse_common import (
    MAX_ATTEST_SIZE,
    as_bytes,
    hash_name,
    slot_setters,
    unmarshal_exact,
)

__all__ = [
    "SELECTION_CACHE_SIZE",
    "TPM_GENERATED_VALUE",
    "TPM_ST_ATTEST_QUOTE",
    "ClockInfo",
    "PcrSelection",
    "QuoteInfo",
    "attest_header",
    "parse_quote_attest",
    "pcr_selection",
    "read_clock_info",
    "unmarshal_attest",
]

TPM_GENERATED_VALUE = 0xFF544347
_ATTEST_HEADER = struct.Struct(">IH")  # magic, type
TPM_ST_ATTEST_QUOTE = 0x8018
_QUOTE_HEADER = _ATTEST_HEADER.pack(TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE)


@dataclass(frozen=True, slots=True)
class ClockInfo:
    """TPMS_CLOCK_INFO. Obfuscated by the TPM when the signing key is outside the
    endorsement and platform hierarchies, so only comparable across one AK."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True, slots=True)
class PcrSelection:
    """One TPMS_PCR_SELECTION: a bank and the PCR indices selected, ascending.

    ``pcr_set`` holds the same indices, for membership tests (derived, not compared).
    """

    hash_algorithm: str
    pcrs: tuple[int, ...]
    pcr_set: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pcr_set", frozenset(self.pcrs))


@dataclass(frozen=True, slots=True)
class QuoteInfo:
    """The fields of a TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE."""

    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_selection: tuple[PcrSelection, ...]
    pcr_digest: bytes


_CLOCK_CLOCK, _CLOCK_RESET, _CLOCK_RESTART, _CLOCK_SAFE = slot_setters(
    ClockInfo, ("clock", "reset_count", "restart_count", "safe")
)
_QUOTE_SIGNER, _QUOTE_EXTRA, _QUOTE_CLOCK, _QUOTE_FIRMWARE, _QUOTE_SELECTION, _QUOTE_DIGEST = (
    slot_setters(
        QuoteInfo,
        (
            "qualified_signer",
            "extra_data",
            "clock_info",
            "firmware_version",
            "pcr_selection",
            "pcr_digest",
        ),
    )
)


# _PCRS_SET[i][b]: the PCR indices that byte b at position i of a pcrSelect bitmap
# selects, ascending (a static table: 4 positions x 256 values).
_PCRS_SET: tuple[tuple[tuple[int, ...], ...], ...] = tuple(
    tuple(tuple(i * 8 + bit for bit in range(8) if value >> bit & 1) for value in range(256))
    for i in range(wire.PCR_SELECT_MAX)
)


# Distinct TPML_PCR_SELECTION encodings whose decoding is kept: a host quotes the
# same selection every time, and a fleet uses a handful; a bound keeps untrusted
# input from growing the cache.
SELECTION_CACHE_SIZE = 256


@functools.lru_cache(maxsize=SELECTION_CACHE_SIZE)
def pcr_selection(selection: bytes) -> tuple[PcrSelection, ...]:
    """Decode a framed TPML_PCR_SELECTION. A pure function of its bytes, and its
    result is immutable, so equal encodings share one decoded value (failures, which
    raise, are not cached). The C quote reader (``quote_native``) calls it too."""
    result: list[PcrSelection] = []
    seen: set[str] = set()
    for alg_id, bitmap in wire.read_pcr_selection(selection):
        bank = hash_name(alg_id, what="PCR selection")
        if bank in seen:
            # A bank listed twice would make "the value of sha256 PCR n" ambiguous
            # when mapping reported values onto the digest.
            raise ParseError(f"PCR selection: bank {bank} selected twice")
        seen.add(bank)
        pcrs: tuple[int, ...] = ()
        for byte_index, byte in enumerate(bitmap):
            pcrs += _PCRS_SET[byte_index][byte]
        result.append(PcrSelection(bank, pcrs))
    return tuple(result)


def unmarshal_attest(data: bytes, *, expected_type: int, type_name: str, type_code: str) -> Any:
    """Bound, check magic and type, then unmarshal a TPMS_ATTEST (exact, canonical).

    Magic and type are checked on the raw header, before the TSS, because the TSS
    does not check the magic and fails on unknown types with a generic error.
    """
    raw = attest_header(data, expected_type=expected_type, type_name=type_name, type_code=type_code)
    return unmarshal_exact(TPMS_ATTEST, raw, what="TPMS_ATTEST")


def attest_header(data: bytes, *, expected_type: int, type_name: str, type_code: str) -> bytes:
    """Bound a TPMS_ATTEST and check its magic and type; return it as bytes."""
    raw = as_bytes(data, what="TPMS_ATTEST", limit=MAX_ATTEST_SIZE)
    if len(raw) < 6:
        raise ParseError("TPMS_ATTEST: truncated header")
    magic, st = _ATTEST_HEADER.unpack_from(raw)
    if magic != TPM_GENERATED_VALUE:
        raise ParseError(f"TPMS_ATTEST: bad magic 0x{magic:08x}", code="bad_magic")
    if st != expected_type:
        raise ParseError(f"TPMS_ATTEST: type 0x{st:04x} is not a {type_name}", code=type_code)
    return raw


def read_clock_info(attest: Any) -> ClockInfo:
    """TPMS_CLOCK_INFO of an unmarshalled TPMS_ATTEST (``safe`` must be 0 or 1)."""
    clock = attest.clockInfo
    safe = int(clock.safe)
    if safe not in (0, 1):
        raise ParseError(f"TPMS_ATTEST: clockInfo.safe is {safe}, not a TPMI_YES_NO")
    return ClockInfo(
        clock=int(clock.clock),
        reset_count=int(clock.resetCount),
        restart_count=int(clock.restartCount),
        safe=safe == 1,
    )


def parse_quote_attest(data: bytes) -> QuoteInfo:
    """Parse a marshalled TPMS_ATTEST that must be a quote.

    ParseError codes: ``bad_magic`` (not TPM_GENERATED_VALUE: not produced by a
    TPM), ``not_a_quote`` (another attestation type), ``malformed`` otherwise.
    """
    # as_bytes() inline for the common case (exact bytes within the bound): the call
    # costs more than its checks; anything else goes through it and its errors.
    if type(data) is bytes and len(data) <= MAX_ATTEST_SIZE:
        raw = data
    else:
        raw = as_bytes(data, what="TPMS_ATTEST", limit=MAX_ATTEST_SIZE)
    if raw[:6] != _QUOTE_HEADER:
        # Truncated, bad magic or not a quote: attest_header raises the precise error.
        attest_header(
            raw, expected_type=TPM_ST_ATTEST_QUOTE, type_name="quote", type_code="not_a_quote"
        )
    signer, extra, clock, reset, restart, safe, firmware, selection, digest = wire.read_quote_body(
        raw
    )
    if safe not in (0, 1):
        raise ParseError(f"TPMS_ATTEST: clockInfo.safe is {safe}, not a TPMI_YES_NO")
    # QuoteInfo(signer, extra, ClockInfo(...), ...), slot by slot (slot_setters).
    clock_info: ClockInfo = object.__new__(ClockInfo)
    _CLOCK_CLOCK(clock_info, clock)
    _CLOCK_RESET(clock_info, reset)
    _CLOCK_RESTART(clock_info, restart)
    _CLOCK_SAFE(clock_info, safe == 1)
    info: QuoteInfo = object.__new__(QuoteInfo)
    _QUOTE_SIGNER(info, signer)
    _QUOTE_EXTRA(info, extra)
    _QUOTE_CLOCK(info, clock_info)
    _QUOTE_FIRMWARE(info, firmware)
    _QUOTE_SELECTION(info, pcr_selection(selection))
    _QUOTE_DIGEST(info, digest)
    return info
