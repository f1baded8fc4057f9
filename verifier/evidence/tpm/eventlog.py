"""Parse a UEFI measured-boot event log (untrusted bytes) into frozen dataclasses.

Two formats exist (TCG PC Client Platform Firmware Profile, "PFP", section 10):

* **SHA-1 legacy**: a sequence of ``TCG_PCClientPCREvent`` (pcr u32, type u32,
  SHA-1 digest, size u32, data), as written by TPM 1.2-era firmware and still by
  some TPM 2.0 firmware (Windows Shielded VMs, Debian 10 on GCE).
* **crypto-agile**: the first event is still in the legacy format, an
  ``EV_NO_ACTION`` whose data is a ``TCG_EfiSpecIDEvent`` ("Spec ID Event03")
  declaring the digest algorithms and their sizes; every later event is a
  ``TCG_PCR_EVENT2`` carrying digests of the declared algorithms.

:func:`parse_event_log` checks, in order:

1. the log is not empty and at most :data:`MAX_LOG_SIZE` bytes;
2. the first event is read in the legacy format; if it is an ``EV_NO_ACTION`` whose
   data starts with the Spec ID signature, it must be in PCR0 with an all-zero
   digest and its structure is parsed strictly (known algorithms declare their real
   size, no algorithm twice, ``vendorInfoSize`` neither overruns the event nor
   leaves bytes after ``vendorInfo``), and the log is crypto-agile; otherwise it is
   SHA-1 legacy;
3. for every event: the header and data fit in the remaining bytes; the PCR index is
   0..23 or 0xFFFFFFFF (Windows logs non-extended events there); the data size is at
   most :data:`MAX_EVENT_DATA`; a crypto-agile event carries 1..n digests of
   declared algorithms, each at most once (digests of algorithms this module does
   not know are skipped by their declared size and not exposed); no second Spec ID;
4. at most :data:`MAX_EVENTS` events;
5. no bytes are left after the last event (see the note on padding below).

Padding: none of the real logs in the shared vectors (GCE, Lenovo, Supermicro,
Inspur, Intel, QEMU/OVMF, swtpm, Windows; 50 that parse) ends with padding: every
one ends exactly after its last event, and Linux exports ``binary_bios_measurements``
trimmed to the last event. Trailing bytes, zeros included, are therefore rejected
like any other trailing garbage rather than guessed at.

Nothing here is authenticated: digests are claims until a replay matches a quote,
and event data is a claim even then unless its digest is recomputed.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.eventlog_model import (
    Event,
    EventLog,
    SpecId,
    SpecIdAlgorithm,
    new_event,
)

__all__ = [
    "ALGORITHMS",
    "EV_EFI_HCRTM_EVENT",
    "EV_NO_ACTION",
    "EV_SEPARATOR",
    "MAX_EVENTS",
    "MAX_EVENT_DATA",
    "MAX_LOG_SIZE",
    "PCR_NOT_EXTENDED",
    "Event",
    "EventLog",
    "SpecIdAlgorithm",
    "parse_event_log",
]

# --- Limits (STYLE.md "limits with a reason") -------------------------------------
# The largest real log we have seen is 73 KB (option ROMs + Windows WBCL) and a
# current Linux securityfs log is typically 20-60 KB; a dbx with thousands of
# entries adds well under 1 MB. 16 MiB is generous for any firmware yet bounds the
# memory and hashing work a hostile agent can make us do.
MAX_LOG_SIZE = 16 * 1024 * 1024
# Real logs hold 1-204 events; firmware with many option ROMs or boot entries stays
# in the hundreds. 10,000 bounds the number of Python objects per log.
MAX_EVENTS = 10_000
# The biggest single events are the db/dbx EFI_VARIABLE_DATA (tens of KB). A 1 MiB
# event is already far beyond any UEFI variable store; bigger is not a boot log.
MAX_EVENT_DATA = 1024 * 1024
# TPM_ALG_IDs live in a 16-bit space but a TPM implements a handful of hashes; 16
# declared algorithms is more than any TPM allocates banks for.
MAX_ALGORITHMS = 16
# TPMU_HA's largest member is SHA-512 (64 bytes); an unknown algorithm declaring a
# bigger digest cannot be a TPM bank.
MAX_DIGEST_SIZE = 64

# --- Event types used by parsing and replay (PFP table 9) -------------------------
EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_EFI_HCRTM_EVENT = 0x80000010
# Windows logs events that were never extended (e.g. "Windows AIK") at this index.
PCR_NOT_EXTENDED = 0xFFFFFFFF
_MAX_PCR = 23  # PC Client TPMs have 24 PCRs

# TPM_ALG_ID -> (name, digest size). The names of the first four are hashlib's and
# those used everywhere else in the verifier; the others are known only so that a
# wrong declared size is caught.
ALGORITHMS: Mapping[int, tuple[str, int]] = MappingProxyType(
    {
        0x0004: ("sha1", 20),
        0x000B: ("sha256", 32),
        0x000C: ("sha384", 48),
        0x000D: ("sha512", 64),
        0x0012: ("sm3_256", 32),
        0x0027: ("sha3_256", 32),
        0x0028: ("sha3_384", 48),
        0x0029: ("sha3_512", 64),
    }
)

_SPEC_ID_SIGNATURE = b"Spec ID Event03\x00"
_SHA1_SIZE = 20
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_LEGACY_HEADER = struct.Struct("<II20sI")  # pcr, type, sha1 digest, data size
_EVENT2_HEADER = struct.Struct("<III")  # pcr, type, digest count
# signature, platformClass, minor, major, errata, uintnSize, numberOfAlgorithms
_SPEC_ID_HEADER = struct.Struct("<16sIBBBBI")
_ALG_ENTRY = struct.Struct("<HH")


class _FullDigests(NamedTuple):
    """An event with a digest of every declared algorithm in declared order (what
    firmware writes), framed by one struct call; others take the field-by-field read."""

    frame: struct.Struct
    digest_count: int
    alg_ids: tuple[int, ...]
    names: tuple[str, ...]


def _full_digests(spec: SpecId) -> _FullDigests | None:
    """None when ``spec`` declares an algorithm this module does not know."""
    names = tuple(a.name for a in spec.algorithms if a.name is not None)
    if len(names) != len(spec.algorithms):
        return None
    layout = "".join(f"H{a.size}s" for a in spec.algorithms)
    return _FullDigests(
        frame=struct.Struct(f"<III{layout}I"),
        digest_count=len(names),
        alg_ids=tuple(a.alg_id for a in spec.algorithms),
        names=names,
    )


def _fail(message: str, offset: int, code: str = "malformed") -> ParseError:
    return ParseError(f"event log: {message} at offset {offset}", code=code)


def _read_legacy(raw: bytes, offset: int, index: int) -> tuple[Event, int]:
    """A ``TCG_PCClientPCREvent`` at ``offset``; returns it and the next offset."""
    if len(raw) - offset < _LEGACY_HEADER.size:
        raise _fail("truncated event header", offset, "truncated")
    pcr, event_type, digest, size = _LEGACY_HEADER.unpack_from(raw, offset)
    start = offset + _LEGACY_HEADER.size
    data = _read_data(raw, start, size, offset)
    _check_pcr(pcr, offset)
    sha1 = MappingProxyType({"sha1": digest})
    event = new_event(index, pcr, event_type, digests=sha1, data=data, offset=offset)
    return event, start + size


def _read_data(raw: bytes, start: int, size: int, offset: int) -> bytes:
    # The size is compared with the bound and with what is left before slicing, so
    # that a hostile 4 GB size field costs nothing.
    if size > MAX_EVENT_DATA:
        raise _fail(f"event data size {size} exceeds {MAX_EVENT_DATA}", offset, "too_large")
    if size > len(raw) - start:
        raise _fail(f"event data size {size} exceeds the log", offset, "truncated")
    return raw[start : start + size]


def _check_pcr(pcr: int, offset: int) -> None:
    if pcr > _MAX_PCR and pcr != PCR_NOT_EXTENDED:
        raise _fail(f"PCR index {pcr} out of range", offset)


def _parse_spec_id(data: bytes, offset: int) -> SpecId:
    """The Spec ID event data, every byte accounted for."""
    if len(data) < _SPEC_ID_HEADER.size:
        raise _fail("truncated Spec ID event", offset, "truncated")
    _sig, platform_class, minor, major, errata, uintn, count = _SPEC_ID_HEADER.unpack_from(data)
    # Spec ID Event03 is defined by the PFP for TPM 2.0 (major 2); uintnSize is
    # 1 (UINT32) or 2 (UINT64).
    if major != 2:
        raise _fail(f"Spec ID version {major}.{minor} is not 2.x", offset)
    if uintn not in (1, 2):
        raise _fail(f"Spec ID uintnSize {uintn} is not 1 or 2", offset)
    if not 1 <= count <= MAX_ALGORITHMS:
        raise _fail(f"Spec ID declares {count} algorithms", offset)
    pos = _SPEC_ID_HEADER.size
    if len(data) - pos < count * _ALG_ENTRY.size + 1:
        raise _fail("truncated Spec ID algorithm list", offset, "truncated")
    algorithms: list[SpecIdAlgorithm] = []
    seen: set[int] = set()
    for _ in range(count):
        alg_id, size = _ALG_ENTRY.unpack_from(data, pos)
        pos += _ALG_ENTRY.size
        if alg_id in seen:
            raise _fail(f"Spec ID declares algorithm {alg_id:#06x} twice", offset)
        seen.add(alg_id)
        known = ALGORITHMS.get(alg_id)
        if known is not None and known[1] != size:
            raise _fail(f"Spec ID declares {known[0]} with size {size}", offset)
        # An unknown algorithm is acceptable only because its size lets us skip its
        # digests; a zero or oversized one would let us misframe every event.
        if not 1 <= size <= MAX_DIGEST_SIZE:
            raise _fail(f"Spec ID algorithm {alg_id:#06x} has size {size}", offset)
        algorithms.append(SpecIdAlgorithm(alg_id, known[0] if known else None, size))
    vendor_size = data[pos]
    pos += 1
    # tpm2-tools' specid-vendordata.bin fixture declares vendorInfo bytes that lie
    # outside the event; tpm2_eventlog then reads into the next event.
    if vendor_size != len(data) - pos:
        raise _fail(
            f"Spec ID vendorInfoSize {vendor_size} but {len(data) - pos} bytes remain in the event",
            offset,
        )
    return SpecId(
        platform_class=platform_class,
        spec_version=(major, minor, errata),
        uintn_size=uintn,
        algorithms=tuple(algorithms),
        vendor_info=data[pos:],
    )


def _is_spec_id(event: Event) -> bool:
    return event.event_type == EV_NO_ACTION and event.data.startswith(_SPEC_ID_SIGNATURE)


def _read_event2(
    raw: bytes,
    offset: int,
    index: int,
    sizes: Mapping[int, SpecIdAlgorithm],
    full: _FullDigests | None,
) -> tuple[Event, int]:
    """A ``TCG_PCR_EVENT2`` at ``offset``; returns it and the next offset.

    ``sizes``: the Spec ID's algorithms by id; ``full``: the framing of an event
    with every declared digest in order (both made once per log, not per event).
    """
    if full is not None and len(raw) - offset >= full.frame.size:
        fields = full.frame.unpack_from(raw, offset)
        # The checks below, for the one layout they pass with: every declared
        # algorithm once (the Spec ID refused duplicates), in order, all in the log.
        if fields[2] == full.digest_count and fields[3:-1:2] == full.alg_ids:
            pcr = fields[0]
            _check_pcr(pcr, offset)
            pos = offset + full.frame.size
            size = fields[-1]
            data = _read_data(raw, pos, size, offset)
            named = MappingProxyType(dict(zip(full.names, fields[4:-1:2], strict=True)))
            return new_event(
                index, pcr, fields[1], digests=named, data=data, offset=offset
            ), pos + size
    if len(raw) - offset < _EVENT2_HEADER.size:
        raise _fail("truncated event header", offset, "truncated")
    pcr, event_type, count = _EVENT2_HEADER.unpack_from(raw, offset)
    _check_pcr(pcr, offset)
    # PFP 10.2.2 wants one digest per declared algorithm, but real logs carry fewer:
    # Windows (ThinkPad P51) logs PCR11/12 events with sha256 only, and tpm2-tools'
    # fixtures declare four algorithms and log two. TPM2_PCR_Extend leaves the banks
    # it is not given untouched, so a subset is structurally valid; replay refuses a
    # bank that an extended event lacks (replay.py).
    if not 1 <= count <= len(sizes):
        raise _fail(f"{count} digests, Spec ID declares {len(sizes)}", offset)
    pos = offset + _EVENT2_HEADER.size
    digests: dict[str, bytes] = {}
    seen: set[int] = set()
    for _ in range(count):
        if len(raw) - pos < _U16.size:
            raise _fail("truncated digest list", offset, "truncated")
        (alg_id,) = _U16.unpack_from(raw, pos)
        alg = sizes.get(alg_id)
        if alg is None:
            raise _fail(f"digest of undeclared algorithm {alg_id:#06x}", offset)
        if alg_id in seen:
            raise _fail(f"two digests of algorithm {alg_id:#06x}", offset)
        seen.add(alg_id)
        pos += _U16.size
        if len(raw) - pos < alg.size:
            raise _fail("truncated digest", offset, "truncated")
        if alg.name is not None:
            digests[alg.name] = raw[pos : pos + alg.size]
        pos += alg.size
    if len(raw) - pos < _U32.size:
        raise _fail("truncated event size", offset, "truncated")
    (size,) = _U32.unpack_from(raw, pos)
    pos += _U32.size
    data = _read_data(raw, pos, size, offset)
    event = new_event(
        index, pcr, event_type, digests=MappingProxyType(digests), data=data, offset=offset
    )
    return event, pos + size


def parse_event_log(raw: bytes) -> EventLog:
    """Parse a whole event log; raises ParseError only (checks: module docstring)."""
    if not raw:
        raise ParseError("event log: empty", code="empty")
    if len(raw) > MAX_LOG_SIZE:
        raise ParseError(f"event log: {len(raw)} bytes exceeds {MAX_LOG_SIZE}", code="too_large")
    first, pos = _read_legacy(raw, 0, 0)
    spec: SpecId | None = None
    if _is_spec_id(first):
        if first.pcr != 0 or first.digests["sha1"] != bytes(_SHA1_SIZE):
            raise _fail("Spec ID event not in PCR0 with a zero digest", 0)
        spec = _parse_spec_id(first.data, 0)
    events = [first]
    sizes = {} if spec is None else {a.alg_id: a for a in spec.algorithms}
    full = None if spec is None else _full_digests(spec)
    while pos < len(raw):
        if len(events) >= MAX_EVENTS:
            raise _fail(f"more than {MAX_EVENTS} events", pos, "too_large")
        if spec is None:
            event, pos = _read_legacy(raw, pos, len(events))
        else:
            event, pos = _read_event2(raw, pos, len(events), sizes, full)
        # A second Spec ID would redefine the framing of what follows; no firmware
        # writes one, and accepting it would make the log ambiguous.
        if _is_spec_id(event):
            raise _fail("second Spec ID event", event.offset)
        events.append(event)
    return EventLog(
        format="sha1-legacy" if spec is None else "crypto-agile",
        spec_id=spec,
        events=tuple(events),
    )
