"""The TDX CC event log (ACPI CCEL): replay into RTMR0-3 and compare with the quote.

The log is a TCG crypto-agile event log (TCG_PCR_EVENT2, SHA-384) whose "PCR"
index is the CC measurement register index: 0 is MRTD (built by the TDX module,
never extended by the log), 1..4 are RTMR0..3 (UEFI spec 2.10, 38.4.1 and the
TDX guest-hypervisor interface). It is parsed and replayed by the TPM event-log
code (``tpm.eventlog`` / ``tpm.replay``), bank ``sha384``; every RTMR starts at
zero. Events may be interpreted only after :func:`replay_ccel` matched all four
RTMRs of an authenticated quote.

The ACPI CCEL area (LAML bytes at LASA) is a fixed-size region: firmware writes
events from its start and leaves the rest erased (0xFF in OVMF/TDVF, 0x00 in
others). :func:`trim_log_area` finds the end of the last event with the parser
itself: the area's uniform tail is cut and the first prefix at or after that
point that parses completely is the log.

One adaptation: TDVF writes the Spec ID header event (EV_NO_ACTION) with index
1, while the TPM parser wants it in PCR0. An EV_NO_ACTION event is never
extended, so :func:`parse_ccel_log` rewrites that one index to 0 before parsing;
nothing else is changed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from verifier.evidence.errors import ParseError
from verifier.evidence.tdx.authenticate import AuthenticatedQuote
from verifier.evidence.tpm.eventlog import EventLog, parse_event_log
from verifier.evidence.tpm.replay import ReplayError, replay
from verifier.verdict import Reason

__all__ = [
    "CHECK_CCEL_REPLAY",
    "CcelTable",
    "parse_ccel_log",
    "parse_ccel_table",
    "replay_ccel",
    "trim_log_area",
]

CHECK_CCEL_REPLAY = "tdx.ccel.replay"
RTMR_COUNT = 4
CC_TYPE_TDX = 2
_TABLE = struct.Struct("<4sIBB6s8sI4sI BBH QQ".replace(" ", ""))
# The last event's data may itself end in bytes equal to the padding; 4 KiB of
# retries bounds the extra parses (each at most MAX_LOG_SIZE) a hostile log costs.
MAX_PADDING_LIKE_TAIL = 4096
# Index 1, type EV_NO_ACTION (3): how TDVF writes the Spec ID header event.
_TDVF_SPEC_ID_HEADER = struct.pack("<II", 1, 3)


@dataclass(frozen=True, slots=True)
class CcelTable:
    """The 56-byte ACPI CCEL table: CC type and subtype, log area length and address."""

    cc_type: int
    cc_subtype: int
    log_area_length: int
    log_area_address: int


def parse_ccel_table(data: bytes) -> CcelTable:
    """The ACPI CCEL table: signature, length 56, checksum, CC type TDX; ParseError only."""
    if len(data) != _TABLE.size:
        raise ParseError(f"CCEL table: {len(data)} bytes, expected {_TABLE.size}")
    fields = _TABLE.unpack(data)
    signature, length, cc_type, subtype, lam, lasa = (
        fields[0],
        fields[1],
        fields[9],
        fields[10],
        fields[12],
        fields[13],
    )
    if signature != b"CCEL" or length != _TABLE.size:
        raise ParseError("CCEL table: not a CCEL table of 56 bytes", code="bad_magic")
    if sum(data) % 256:
        raise ParseError("CCEL table: checksum does not add up to zero")
    if cc_type != CC_TYPE_TDX:
        raise ParseError(f"CCEL table: CC type {cc_type} is not TDX")
    return CcelTable(cc_type, subtype, lam, lasa)


def _spec_id_in_pcr0(area: bytes) -> bytes:
    if len(area) >= 8 and area[:8] == _TDVF_SPEC_ID_HEADER:
        return b"\x00\x00\x00\x00" + area[4:]
    return area


def parse_ccel_log(area: bytes) -> EventLog:
    """The CC event log of a CCEL log area (trimmed, Spec ID index adapted); ParseError only."""
    return parse_event_log(trim_log_area(_spec_id_in_pcr0(area)))


def trim_log_area(area: bytes) -> bytes:
    """The event log inside a CCEL log area (module docstring); ParseError only."""
    if not area:
        raise ParseError("CCEL: empty log area", code="empty")
    pad = area[-1]
    if pad not in (0x00, 0xFF):
        return area  # no erased tail: the whole area must parse
    end = len(area.rstrip(bytes([pad])))
    last_error: ParseError | None = None
    for candidate in range(end, min(len(area), end + MAX_PADDING_LIKE_TAIL) + 1):
        try:
            parse_event_log(area[:candidate])
        except ParseError as exc:
            last_error = exc
            continue
        return area[:candidate]
    raise last_error or ParseError("CCEL: no event log in the area")


def replay_ccel(log: EventLog, quote: AuthenticatedQuote) -> list[Reason]:
    """[] if the log's SHA-384 replay equals RTMR0-3 of the quote, else the reasons.

    Checks: the log extends only indexes 1..4 (``tdx.ccel.bad_index``); it
    replays in sha384 (``tdx.ccel.replay_failed``); each RTMR, also those the log
    never extends (then zero), equals the quote's (``tdx.ccel.rtmr_mismatch``).
    """
    try:
        replayed = replay(log, bank="sha384")
    except ReplayError as exc:
        return [Reason("tdx.ccel.replay_failed", f"{exc.code}: {exc}")]
    bad = sorted(index for index in replayed if not 1 <= index <= RTMR_COUNT)
    if bad:
        return [Reason("tdx.ccel.bad_index", f"log extends CC MR index {bad}")]
    reasons = []
    for rtmr, quoted in enumerate(quote.quote.body.rtmrs):
        value = replayed.get(rtmr + 1, bytes(48))
        if value != quoted:
            reasons.append(
                Reason("tdx.ccel.rtmr_mismatch", f"RTMR{rtmr} replays to {value.hex()[:16]}...")
            )
    return reasons
