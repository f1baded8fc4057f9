"""Does an event's data hash to its digest? Per event type, as the spec defines it.

Replay binds digests only; the data beside them is a claim until it is hashed and
compared. :func:`check_event_data` does that for the types whose digest the PC
Client PFP (or the boot loader) defines over the logged data, and names the
hashing convention that matched, so that exactly the accepted conventions are
accepted and callers can see which one:

* EV_SEPARATOR, EV_ACTION, EV_EFI_ACTION, EV_S_CRTM_VERSION: ``data`` (PFP
  event descriptions; actions are ASCII strings);
* EV_EFI_GPT_EVENT: ``data``, and the UEFI_GPT_DATA must frame;
* EV_EFI_VARIABLE_DRIVER_CONFIG / _AUTHORITY: ``structure``, the whole
  UEFI_VARIABLE_DATA (PFP, PCR[1] and PCR[7] variables); EV_EFI_VARIABLE_BOOT /
  _BOOT2: ``structure`` or ``variable_data`` (EDK2 and most firmware hash only VariableData for boot
  variables; 302 of the 453 boot-variable events in the shared vectors do);
* EV_IPL in PCR8 from GRUB: ``grub`` (the string without prefix and NUL) or
  ``grub_legacy`` (Fedora's older patch, see efi_events.py); UTF-16 load options
  from systemd-boot in PCR8 or PCR12: ``utf16`` (the data as logged).

Two quirks (event_quirks.py) are recognised here and reported as such. Every other
event type is ``unchecked``: its data must not be read as fact.

``verified`` binds the bytes that were hashed, nothing else: not the event type,
not GRUB's prefix (``kernel_cmdline: `` and ``grub_cmd: `` hash the same text), and
not a PCR9 file name (the digest is of the file). boot_facts.py reads a GRUB
string's role from its text for that reason, and appraisal counts every PCR9
digest whatever its name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.efi_events import decode_utf16_text, parse_gpt_data, parse_grub_string
from verifier.evidence.tpm.efi_variables import parse_uefi_variable_prefix
from verifier.evidence.tpm.event_quirks import (
    SHIM_AUTHORITY_PADDING,
    SYSTEMD_BOOT_TRUNCATED_NUL,
    Quirk,
)
from verifier.evidence.tpm.event_types import EventType as Ev
from verifier.evidence.tpm.eventlog import Event

__all__ = ["DataCheck", "check_event_data", "measures_data"]

Status = Literal["verified", "quirk", "mismatch", "malformed", "unchecked", "no_digest"]

_PLAIN = frozenset(
    {Ev.EV_SEPARATOR, Ev.EV_ACTION, Ev.EV_EFI_ACTION, Ev.EV_S_CRTM_VERSION, Ev.EV_EFI_GPT_EVENT}
)
_ACTIONS = frozenset({Ev.EV_ACTION, Ev.EV_EFI_ACTION})
_BOOT_VARIABLES = frozenset({Ev.EV_EFI_VARIABLE_BOOT, Ev.EV_EFI_VARIABLE_BOOT2})
_VARIABLES = _BOOT_VARIABLES | {Ev.EV_EFI_VARIABLE_DRIVER_CONFIG, Ev.EV_EFI_VARIABLE_AUTHORITY}
# What old shim leaves after VariableData in every log that shows the bug (7 logs,
# 13 events): its size arithmetic used the padded sizeof(UEFI_VARIABLE_DATA).
_SHIM_PADDING = 6
_GRUB_PCR = 8
_SYSTEMD_BOOT_PCRS = (8, 12)  # load options: PCR8 before systemd v251, PCR12 since


@dataclass(frozen=True, slots=True)
class DataCheck:
    """Outcome for one event: ``verified`` and ``quirk`` mean its data may be read."""

    status: Status
    convention: str = ""
    quirk: Quirk | None = None
    detail: str = ""

    @property
    def trusted(self) -> bool:
        return self.status in ("verified", "quirk")


def _h(bank: str, data: bytes) -> bytes:
    return hashlib.new(bank, data).digest()


def measures_data(event: Event, bank: str) -> bool:
    """Whether the event's ``bank`` digest is the hash of its data exactly as logged
    (no convention, no quirk: for callers that accept only that form)."""
    return event.digests.get(bank) == _h(bank, event.data)


def check_event_data(event: Event, bank: str) -> DataCheck:
    """Hash ``event``'s data the way its type defines and compare with its digest."""
    digest = event.digests.get(bank)
    if digest is None:
        return DataCheck("no_digest", detail=f"no {bank} digest")
    kind = event.event_type
    try:
        if kind in _PLAIN:
            return _check_plain(event, bank, digest)
        if kind in _VARIABLES:
            return _check_variable(event, bank, digest)
        if kind == Ev.EV_IPL and event.pcr in _SYSTEMD_BOOT_PCRS:
            return _check_ipl(event, bank, digest)
    except ParseError as exc:
        return DataCheck("malformed", detail=str(exc))
    return DataCheck("unchecked")


def _check_plain(event: Event, bank: str, digest: bytes) -> DataCheck:
    if event.event_type in _ACTIONS and not (
        event.data.isascii() and event.data.decode().isprintable()
    ):
        raise ParseError("action data is not a printable ASCII string")
    if event.event_type == Ev.EV_EFI_GPT_EVENT:
        parse_gpt_data(event.data)
    if digest == _h(bank, event.data):
        return DataCheck("verified", "data")
    return DataCheck("mismatch", detail=f"digest is not {bank}(data)")


def _check_variable(event: Event, bank: str, digest: bytes) -> DataCheck:
    variable, end = parse_uefi_variable_prefix(event.data)
    trailing = len(event.data) - end
    name = f"variable {variable.name!r}"
    if trailing:
        if (
            event.event_type == Ev.EV_EFI_VARIABLE_AUTHORITY
            and trailing == _SHIM_PADDING
            and digest == _h(bank, event.data[:-1])
        ):
            return DataCheck("quirk", "structure", SHIM_AUTHORITY_PADDING, name)
        raise ParseError(f"{name}: {trailing} bytes after VariableData")
    if digest == _h(bank, event.data):
        return DataCheck("verified", "structure", detail=name)
    if event.event_type in _BOOT_VARIABLES and digest == _h(bank, variable.value):
        return DataCheck("verified", "variable_data", detail=name)
    return DataCheck("mismatch", detail=f"{name}: digest is neither convention's")


def _check_ipl(event: Event, bank: str, digest: bytes) -> DataCheck:
    if event.pcr == _GRUB_PCR:
        try:
            grub = parse_grub_string(event.data)
        except ParseError as exc:
            if exc.code != "unknown":
                raise
        else:
            convention = "grub_legacy" if grub.legacy else "grub"
            if digest == _h(bank, grub.measured):
                return DataCheck("verified", convention, detail=grub.kind)
            return DataCheck("mismatch", detail=f"GRUB {grub.kind}: digest is not {bank}(text)")
    if len(event.data) % 2:
        # Odd length: only systemd-boot's truncated terminator explains it.
        try:
            decode_utf16_text(event.data + b"\x00")
        except ParseError:
            return DataCheck("unchecked")
        if event.pcr == _GRUB_PCR and digest == _h(bank, event.data + b"\x00"):
            return DataCheck("quirk", "utf16", SYSTEMD_BOOT_TRUNCATED_NUL, "load options")
        return DataCheck("mismatch", detail="UTF-16 load options: digest mismatch")
    try:
        decode_utf16_text(event.data)
    except ParseError:
        return DataCheck("unchecked")
    if digest == _h(bank, event.data):
        return DataCheck("verified", "utf16", detail="load options")
    return DataCheck("mismatch", detail=f"UTF-16 load options: digest is not {bank}(data)")
