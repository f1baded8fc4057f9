"""What a matching replay does not prove: event data and log structure.

Replay binds digests, in order, per PCR. It does not bind an event's type, its data
(except where the data is what was hashed) or the interleaving of PCRs, so a log
can replay perfectly and still lie: the swtpm vectors' ``event-type-tampered``,
``event-data-tampered`` and ``post-separator-injection`` variants do exactly that.
Run these checks on a log whose replay in ``bank`` matched the quoted PCRs.

:func:`check_events` reports every finding (never just the first), in log order:

1. ``tpm.eventlog.sha1_only``: the log carries SHA-1 digests only (a SHA-1 legacy log,
   or a Spec ID declaring nothing else); a reference must opt in to accept it.
2. For each extended event (EV_NO_ACTION and Windows' PCR 0xFFFFFFFF events are
   never extended and never interpreted):

   a. ``tpm.eventlog.missing_digest``: no digest in ``bank``;
   b. data against digest, per type (event_data.py):
      ``tpm.eventlog.digest_mismatch`` (separators, actions, S-CRTM version, GPT),
      ``tpm.eventlog.variable_digest_mismatch``, ``tpm.eventlog.ipl_digest_mismatch``,
      ``tpm.eventlog.malformed_event`` (a structure the PFP defines does not frame);
   c. in PCRs 0-7, the firmware's (PFP 3.3.4):

      * ``tpm.eventlog.separator_duplicate``: a second EV_SEPARATOR in a PCR;
      * ``tpm.eventlog.separator_error``: separator data FFFFFFFF, which firmware
        writes when pre-boot measurement failed (PFP, EV_SEPARATOR);
      * ``tpm.eventlog.separator_lookalike``: an EV_SEPARATOR whose data is neither
        value, or another event type carrying separator data and digest (a
        separator whose type was rewritten: the type is not measured);
      * ``tpm.eventlog.event_after_separator``: an event after its PCR's separator
        that the PFP does not place there. Allowed: PCR4
        EV_EFI_BOOT_SERVICES_APPLICATION (images the OS loader loads, PFP 3.3.4.5),
        PCR5 EV_EFI_GPT_EVENT and the Exit Boot Services EV_EFI_ACTIONs (PFP
        3.3.4.6), PCR7 EV_EFI_VARIABLE_AUTHORITY (images verified after the
        separator, PFP 3.3.4.8); nothing in PCRs 0-3 and 6. The boot manager reads
        the GPT, and shim loads grub and the kernel, only after ReadyToBoot, so
        every complete real log in the vectors has these; none has anything else
        there beyond what a named quirk permits;
      * ``tpm.eventlog.event_after_exit_boot_services``: anything after "Exit Boot
        Services Invocation" other than its "Returned with ..." companion;
      * PCR7 (Secure Boot policy): ``tpm.eventlog.unexpected_event_type`` for types
        the PFP does not put there, ``tpm.eventlog.uefi_debug_mode``,
        ``tpm.eventlog.duplicate_variable`` (a Secure Boot variable measured twice
        makes "its" value ambiguous), ``tpm.eventlog.malformed_event`` for a
        SecureBoot value other than empty/00/01 or a PK/KEK/db/dbx that is not
        a sequence of EFI_SIGNATURE_LISTs.

3. ``tpm.eventlog.separator_missing``: a PCR among 0-7 without a separator.
4. ``tpm.eventlog.quirk.<id>``: one per vendor quirk the log needed (event_quirks.py),
   naming its events. Only a reference that allows the quirk accepts it.

PCRs 8 and above have no separator and the OS extends them at any time, so no
structural rule here can close them. Their completeness is the reference's job:
boot_facts.py lists every PCR8/PCR9/PCR12 event it could not account for and every
PCR9 file digest, and boot_reference.py fails on each one a reference relies on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.efi_variables import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    UefiVariable,
    parse_signature_lists,
    parse_uefi_variable_prefix,
)
from verifier.evidence.tpm.event_data import check_event_data, measures_data
from verifier.evidence.tpm.event_quirks import AFTER_SEPARATOR_QUIRKS, Quirk, quirk_code
from verifier.evidence.tpm.event_types import EventType as Ev
from verifier.evidence.tpm.event_types import event_type_name
from verifier.evidence.tpm.eventlog import PCR_NOT_EXTENDED, Event, EventLog
from verifier.verdict import Reason

__all__ = [
    "EBS_INVOCATION",
    "EBS_RETURNED",
    "SECURE_BOOT",
    "SEPARATOR_DATA",
    "SIGNATURE_DATABASES",
    "check_events",
    "secure_boot_variable_problem",
]

FIRMWARE_PCRS = range(8)
SEPARATOR_DATA = bytes(4)
_SEPARATOR_ERROR = b"\xff" * 4
EBS_INVOCATION = b"Exit Boot Services Invocation"
EBS_RETURNED = (
    b"Exit Boot Services Returned with Success",
    b"Exit Boot Services Returned with Failure",
)
_ALLOWED_AFTER_SEPARATOR = {
    (4, Ev.EV_EFI_BOOT_SERVICES_APPLICATION),
    (5, Ev.EV_EFI_GPT_EVENT),
    (7, Ev.EV_EFI_VARIABLE_AUTHORITY),
}
_PCR7_TYPES = frozenset(
    {
        Ev.EV_SEPARATOR,
        Ev.EV_EFI_ACTION,
        Ev.EV_EFI_VARIABLE_DRIVER_CONFIG,
        Ev.EV_EFI_VARIABLE_AUTHORITY,
        Ev.EV_EFI_SPDM_DEVICE_POLICY,  # PFP 1.06 places SPDM device policy in PCR7
        Ev.EV_EFI_SPDM_DEVICE_AUTHORITY,
    }
)
# (vendor GUID, name) of the Secure Boot configuration (UEFI spec, Secure Boot).
SECURE_BOOT = (EFI_GLOBAL_VARIABLE, "SecureBoot")
SIGNATURE_DATABASES = (
    (EFI_GLOBAL_VARIABLE, "PK"),
    (EFI_GLOBAL_VARIABLE, "KEK"),
    (EFI_IMAGE_SECURITY_DATABASE, "db"),
    (EFI_IMAGE_SECURITY_DATABASE, "dbx"),
)
_MISMATCH_CODES: dict[int, str] = {
    Ev.EV_EFI_VARIABLE_DRIVER_CONFIG: "tpm.eventlog.variable_digest_mismatch",
    Ev.EV_EFI_VARIABLE_BOOT: "tpm.eventlog.variable_digest_mismatch",
    Ev.EV_EFI_VARIABLE_BOOT2: "tpm.eventlog.variable_digest_mismatch",
    Ev.EV_EFI_VARIABLE_AUTHORITY: "tpm.eventlog.variable_digest_mismatch",
    Ev.EV_IPL: "tpm.eventlog.ipl_digest_mismatch",
}


def _where(event: Event) -> str:
    return f"event {event.index} (PCR{event.pcr} {event_type_name(event.event_type)})"


def secure_boot_variable_problem(variable: UefiVariable) -> str | None:
    """Why a measured Secure Boot configuration variable cannot be read, or None."""
    if variable.key == SECURE_BOOT:
        # Empty: the variable does not exist (no Secure Boot support); else one byte.
        if variable.value not in (b"", b"\x00", b"\x01"):
            return f"SecureBoot value {variable.value.hex()!r}"
    elif variable.key in SIGNATURE_DATABASES:
        try:
            parse_signature_lists(variable.value)
        except ParseError as exc:
            return f"{variable.name}: {exc}"
    return None


class _Walk:
    """The per-log state of the structural checks."""

    def __init__(self, bank: str) -> None:
        self.bank = bank
        self.reasons: list[Reason] = []
        self.separators: dict[int, int] = {}  # PCR -> index of its first separator
        self.ebs_invoked = False
        self.pcr7_variables: set[tuple[str, str]] = set()
        self.quirks: dict[str, tuple[Quirk, list[int]]] = {}

    def add(self, code: str, event: Event, detail: str) -> None:
        self.reasons.append(Reason(code, f"{_where(event)}: {detail}"))

    def quirk(self, quirk: Quirk, event: Event) -> None:
        self.quirks.setdefault(quirk.id, (quirk, []))[1].append(event.index)

    def event(self, event: Event) -> None:
        data = check_event_data(event, self.bank)
        if data.status == "no_digest":
            self.add("tpm.eventlog.missing_digest", event, data.detail)
            return
        if data.status == "mismatch":
            code = _MISMATCH_CODES.get(event.event_type, "tpm.eventlog.digest_mismatch")
            self.add(code, event, data.detail)
        elif data.status == "malformed":
            self.add("tpm.eventlog.malformed_event", event, data.detail)
        elif data.quirk is not None:
            self.quirk(data.quirk, event)
        if event.pcr in FIRMWARE_PCRS:
            self.firmware_event(event, trusted=data.trusted)

    def firmware_event(self, event: Event, *, trusted: bool) -> None:
        pcr, kind = event.pcr, event.event_type
        if self.ebs_invoked and not (
            pcr == 5 and kind == Ev.EV_EFI_ACTION and event.data in EBS_RETURNED
        ):
            self.add("tpm.eventlog.event_after_exit_boot_services", event, "measured after EBS")
        if kind == Ev.EV_SEPARATOR:
            self.separator(event)
        else:
            if event.data in (SEPARATOR_DATA, _SEPARATOR_ERROR) and measures_data(event, self.bank):
                self.add("tpm.eventlog.separator_lookalike", event, "carries separator data")
            if pcr in self.separators:
                self.after_separator(event)
        if kind == Ev.EV_EFI_ACTION and pcr == 5 and trusted and event.data == EBS_INVOCATION:
            self.ebs_invoked = True
        if pcr == 7:
            self.pcr7(event, trusted=trusted)

    def separator(self, event: Event) -> None:
        if event.pcr in self.separators:
            first = self.separators[event.pcr]
            self.add(
                "tpm.eventlog.separator_duplicate", event, f"PCR{event.pcr} separated at {first}"
            )
            return
        self.separators[event.pcr] = event.index
        if event.data == _SEPARATOR_ERROR:
            self.add(
                "tpm.eventlog.separator_error", event, "firmware signalled a measurement error"
            )
        elif event.data != SEPARATOR_DATA:
            self.add("tpm.eventlog.separator_lookalike", event, f"data {event.data[:16].hex()!r}")

    def after_separator(self, event: Event) -> None:
        pcr, kind = event.pcr, event.event_type
        if (pcr, kind) in _ALLOWED_AFTER_SEPARATOR:
            return
        if (
            pcr == 5
            and kind == Ev.EV_EFI_ACTION
            and (event.data == EBS_INVOCATION or event.data in EBS_RETURNED)
        ):
            return
        quirk = AFTER_SEPARATOR_QUIRKS.get((pcr, kind))
        if quirk is not None:
            self.quirk(quirk, event)
            return
        self.add("tpm.eventlog.event_after_separator", event, f"after PCR{pcr}'s separator")

    def pcr7(self, event: Event, *, trusted: bool) -> None:
        kind = event.event_type
        if kind not in _PCR7_TYPES:
            self.add("tpm.eventlog.unexpected_event_type", event, "not a PCR7 event type")
        elif kind == Ev.EV_EFI_ACTION and event.data == b"UEFI Debug Mode":
            self.add("tpm.eventlog.uefi_debug_mode", event, "a UEFI debugger was enabled")
        elif kind == Ev.EV_EFI_VARIABLE_DRIVER_CONFIG and trusted and 7 not in self.separators:
            # After the separator the event is reported above; only the pre-boot
            # configuration is a candidate for "the" value.
            variable, _ = parse_uefi_variable_prefix(event.data)
            if variable.key in self.pcr7_variables:
                self.add("tpm.eventlog.duplicate_variable", event, f"{variable.name} again")
            self.pcr7_variables.add(variable.key)
            problem = secure_boot_variable_problem(variable)
            if problem is not None:
                self.add("tpm.eventlog.malformed_event", event, problem)


def _extended(events: Iterable[Event]) -> Iterable[Event]:
    return (e for e in events if e.event_type != Ev.EV_NO_ACTION and e.pcr != PCR_NOT_EXTENDED)


def check_events(log: EventLog, bank: str) -> list[Reason]:
    """Every finding of the checks listed in the module docstring, in that order.

    ``bank`` is the bank whose replay matched the quote; it must be one the log
    declares and hashlib computes (ValueError otherwise: a caller's mistake).
    """
    if bank not in log.banks:
        raise ValueError(f"the log has no {bank} bank (has {log.banks})")
    try:
        hashlib.new(bank)
    except ValueError as exc:
        raise ValueError(f"cannot compute {bank}") from exc
    walk = _Walk(bank)
    if log.banks == ("sha1",):
        walk.reasons.append(
            Reason("tpm.eventlog.sha1_only", f"{log.format} log, SHA-1 digests only")
        )
    for event in _extended(log.events):
        walk.event(event)
    for pcr in FIRMWARE_PCRS:
        if pcr not in walk.separators:
            walk.reasons.append(
                Reason("tpm.eventlog.separator_missing", f"PCR{pcr} has no separator")
            )
    for quirk, indices in walk.quirks.values():
        events = ", ".join(str(i) for i in indices)
        walk.reasons.append(Reason(quirk_code(quirk.id), f"events {events}: {quirk.permits}"))
    return walk.reasons
