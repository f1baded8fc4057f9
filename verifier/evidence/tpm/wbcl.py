"""Windows Boot Manager's PCR12 events (its boot configuration log, WBCL), by exact form.

PCR12 is where systemd-boot >= 251 and systemd-stub measure the kernel command
line, and an event's type is not hashed: root can retype the event that measured
a bad command line, extend PCR12 with the approved one and log that. So a PCR12
event is excused as Windows' only in the forms the real Windows logs in the
shared vectors carry (ideapad, thinkpad, go-attestation's option-ROM and GCE
Windows logs: 31 EV_EVENT_TAGs and 12 separators in PCR12-14), with its digest
H(data):

* EV_SEPARATOR whose data is exactly ``WBCL``;
* EV_EVENT_TAG whose data parses completely as SIPA event records: u32 type, u32
  size, ``size`` bytes (the TCG_PCClientTaggedEvent layout), where a type with
  SIPAEVENTTYPE_AGGREGATION set holds more such records, which must parse
  completely too;

and never an event whose data is a NUL-terminated UTF-16 string
(efi_events.is_utf16_string, printable or not), which is what a retyped command
line is. (Nor could one parse as SIPA below 64 KiB: in a string with no NUL code
unit before its end, the first record's size field is at least 0x10001.)
"""

from __future__ import annotations

import struct

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.efi_events import is_utf16_string
from verifier.evidence.tpm.event_data import measures_data
from verifier.evidence.tpm.event_types import EventType as Ev
from verifier.evidence.tpm.eventlog import Event

__all__ = ["WBCL_SEPARATOR", "is_windows_boot_event", "parse_sipa_events"]

WBCL_SEPARATOR = b"WBCL"
_SIPA_HEADER = struct.Struct("<II")  # SIPA event type, size of its data
_SIPA_AGGREGATION = 0x40000000  # SIPAEVENTTYPE_AGGREGATION: the data is more records
# Bounds the recursion; the real logs nest three deep (trust boundary, loaded
# module aggregation, its fields).
_MAX_NESTING = 8


def parse_sipa_events(data: bytes, *, depth: int = 0) -> int:
    """How many SIPA records ``data`` holds, nested ones included; it must hold at
    least one and nothing else."""
    if depth >= _MAX_NESTING:
        raise ParseError(f"SIPA events nested deeper than {_MAX_NESTING}")
    if not data:
        raise ParseError("SIPA events: none", code="truncated")
    pos = count = 0
    while pos < len(data):
        if len(data) - pos < _SIPA_HEADER.size:
            raise ParseError(f"SIPA event at {pos}: truncated header", code="truncated")
        kind, size = _SIPA_HEADER.unpack_from(data, pos)
        pos += _SIPA_HEADER.size
        if size > len(data) - pos:
            raise ParseError(f"SIPA event {kind:#x}: {size} bytes, {len(data) - pos} left")
        if kind & _SIPA_AGGREGATION:
            count += parse_sipa_events(data[pos : pos + size], depth=depth + 1)
        pos += size
        count += 1
    return count


def is_windows_boot_event(event: Event, bank: str) -> bool:
    """Whether ``event`` is one of Windows Boot Manager's, in the forms above."""
    if not measures_data(event, bank):
        return False
    if event.event_type == Ev.EV_SEPARATOR:
        return event.data == WBCL_SEPARATOR
    if event.event_type != Ev.EV_EVENT_TAG or is_utf16_string(event.data):
        return False
    try:
        parse_sipa_events(event.data)
    except ParseError:
        return False
    return True
