"""The parsed form of a UEFI measured-boot event log (see :mod:`.eventlog`).

Frozen dataclasses: a parsed log is evidence to reason about, never to edit. Events
are built by :func:`new_event`, slot by slot, on the per-event path of every log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from verifier.evidence.tpm.parse_common import slot_setters

__all__ = ["Event", "EventLog", "Format", "SpecId", "SpecIdAlgorithm", "new_event"]

Format = Literal["sha1-legacy", "crypto-agile"]


@dataclass(frozen=True)
class SpecIdAlgorithm:
    """One ``digestSizes`` entry of the Spec ID event."""

    alg_id: int
    name: str | None  # None: an algorithm this module does not know
    size: int


@dataclass(frozen=True)
class SpecId:
    """The ``TCG_EfiSpecIDEvent`` that introduces a crypto-agile log."""

    platform_class: int
    spec_version: tuple[int, int, int]  # major, minor, errata
    uintn_size: int
    algorithms: tuple[SpecIdAlgorithm, ...]
    vendor_info: bytes

    @property
    def banks(self) -> tuple[str, ...]:
        """Names of the declared algorithms this module knows, in declared order."""
        return tuple(a.name for a in self.algorithms if a.name is not None)


@dataclass(frozen=True, slots=True)
class Event:
    """One event. ``digests`` maps algorithm name -> digest (known algorithms only)."""

    index: int  # position in the log, the Spec ID event being 0
    pcr: int
    event_type: int
    digests: Mapping[str, bytes]
    data: bytes
    offset: int  # byte offset of the event in the log, for error reports


@dataclass(frozen=True)
class EventLog:
    """A parsed event log. ``spec_id`` is None exactly for SHA-1 legacy logs."""

    format: Format
    spec_id: SpecId | None
    events: tuple[Event, ...]

    @property
    def banks(self) -> tuple[str, ...]:
        """The known digest algorithms the log declares (the candidates for replay)."""
        if self.spec_id is None:
            return ("sha1",)
        return self.spec_id.banks


# Event(...) slot by slot: __init__ of a frozen dataclass (object.__setattr__ per
# field) is half the cost of reading an event. slot_setters checks the fields.
_SET_INDEX, _SET_PCR, _SET_TYPE, _SET_DIGESTS, _SET_DATA, _SET_OFFSET = slot_setters(
    Event, ("index", "pcr", "event_type", "digests", "data", "offset")
)


def new_event(
    index: int, pcr: int, event_type: int, *, digests: Mapping[str, bytes], data: bytes, offset: int
) -> Event:
    event: Event = object.__new__(Event)
    _SET_INDEX(event, index)
    _SET_PCR(event, pcr)
    _SET_TYPE(event, event_type)
    _SET_DIGESTS(event, digests)
    _SET_DATA(event, data)
    _SET_OFFSET(event, offset)
    return event
