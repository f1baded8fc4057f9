"""Facts about a boot, read from the events of a replayed measured-boot log.

Call :func:`extract_boot_facts` only on a log whose replay in ``bank`` matched the
quoted PCRs, with those PCRs as ``verified_pcrs``: other PCRs' events are ignored.
Only data bound to its digest (event_data.py: verified, or an accepted quirk)
becomes a fact; where that cannot be shown the fact is absent, never guessed. Run
:func:`~verifier.evidence.tpm.event_checks.check_events` too: the structural
findings (an event after a separator, a duplicate variable, ...) are its job, and
appraisal needs both.

What is read, from where:

* ``secure_boot``: the SecureBoot variable (PCR7 EV_EFI_VARIABLE_DRIVER_CONFIG
  before PCR7's separator): ``enabled`` (01), ``disabled`` (00), ``absent``
  (measured empty: no Secure Boot support), None (not measured or unreadable);
* ``pk``/``kek``/``db``/``dbx``: the same variables' EFI_SIGNATURE_LISTs: X.509
  certificates (SHA-256 of the DER, subject), SHA-256 hashes, other entries;
* ``authorities``: PCR7 EV_EFI_VARIABLE_AUTHORITY (what verified each image);
* ``boot_applications``: PCR4 EV_EFI_BOOT_SERVICES_APPLICATION digests in log
  order (shim, grub, kernel...). ``path_hint`` comes from the device path, which
  no digest covers: a hint for people, never for policy;
* ``bootloader``, ``kernel_cmdlines``, ``grub_commands``: GRUB's PCR8 strings (the
  commands that boot something are appraised by boot_commands.py), or
  systemd-boot's UTF-16 load options (PCR8 before v251, PCR12 since; printable or
  not: a tab or a lone surrogate makes a line to appraise, not "not UTF-16"). GRUB does not
  hash a string's ``kernel_cmdline: ``/``grub_cmd: `` prefix, so the label cannot
  say what a string is: one labelled ``kernel_cmdline``/``module_cmdline`` or whose
  first word is a path or quoted (boot_commands.is_command_line) is a command
  line; the rest are ``grub_commands``;
* ``kernels``/``initrds``: the PCR9 digest of each file a verified GRUB
  ``linux``/``initrd`` command names, and the Linux EFI stub's tagged initrd event.
  PCR9 event *data* (the file name) is not covered by its digest, so the pairing
  of a digest with a name is a claim; with Secure Boot on, prefer the kernel's
  PCR4 digest in ``boot_applications``;
* ``boot_files``: every PCR9 file measurement (GRUB's EV_IPL, the EFI stub's
  initrd tag) with the path as logged, a hint no digest covers;
* ``uninterpreted``: every other event in PCR8, PCR9 or PCR12 (another type, a
  string that is neither GRUB's nor UTF-16 load options, another PCR9 tag), except
  an EV_IPL whose data mismatches its digest (check_events reports it) and Windows
  Boot Manager's PCR12 events in their exact forms (wbcl.py: a "WBCL" separator,
  complete SIPA records, never a UTF-16 string);
* ``firmware_versions``: PCR0 EV_S_CRTM_VERSION; ``firmware_blobs``: PCR0
  EV_EFI_PLATFORM_FIRMWARE_BLOB(2) digests (descriptions are hints);
* ``drivers``: every PCR2 event but its separator (UEFI drivers, option ROMs,
  firmware blobs), whatever its logged type: the type is not hashed, so a retyped
  driver must still count (a separator's data is checked against its digest).

Why PCR8, PCR9 and PCR12 are read deny-by-default: the OS can extend them at any
time (no separator closes them), and the log is the host's claim, which only has
to replay PCR by PCR. Root can disguise the event that measured a bad command line
or kernel (garble its prefix, change its type, rename its file: none is hashed),
extend the PCR with the approved value and log that. Only each PCR's own order is
bound, not the order across PCRs, so "after GRUB" or "before the separator" proves
nothing either. Appraisal (boot_reference.py) therefore sees every event of these
PCRs: ``uninterpreted`` and ``boot_files`` leave none out.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any, Literal

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.boot_commands import is_command_line, named_paths
from verifier.evidence.tpm.efi_events import (
    decode_crtm_version,
    decode_utf16_string,
    parse_firmware_blob2,
    parse_grub_string,
    parse_image_load_path,
)
from verifier.evidence.tpm.efi_variables import parse_signature_lists, parse_uefi_variable_prefix
from verifier.evidence.tpm.event_checks import EBS_INVOCATION, SECURE_BOOT, SIGNATURE_DATABASES
from verifier.evidence.tpm.event_data import check_event_data, measures_data
from verifier.evidence.tpm.event_types import EventType as Ev
from verifier.evidence.tpm.event_types import event_type_name
from verifier.evidence.tpm.eventlog import Event, EventLog
from verifier.evidence.tpm.signature_db import (
    Authority,
    SignatureDatabase,
    authority,
    signature_database,
)
from verifier.evidence.tpm.wbcl import is_windows_boot_event

__all__ = [
    "DRIVER_PCR",
    "FILE_PCR",
    "BootApplication",
    "BootFacts",
    "BootFile",
    "MeasuredBlob",
    "MeasuredDriver",
    "MeasuredFile",
    "UninterpretedEvent",
    "extract_boot_facts",
]

SecureBoot = Literal["enabled", "disabled", "absent"]
Bootloader = Literal["grub", "systemd-boot"]
_SECURE_BOOT: dict[bytes, SecureBoot] = {b"\x01": "enabled", b"\x00": "disabled", b"": "absent"}
# TCG_PCClientTaggedEvent the Linux EFI stub measures its initrd with (PCR9).
_LINUX_INITRD_TAG = 0x8F3B22EC
_TAG_HEADER = struct.Struct("<II")
_EFI_STUB_INITRD = "linux-efi-stub:initrd"
# PCRs the OS extends after boot and facts are read from: GRUB's strings (8), its
# files (9), systemd-boot's load options (8 before v251, 12 since).
_STRING_PCRS = (8, 12)
FILE_PCR = 9
DRIVER_PCR = 2  # UEFI drivers and option ROMs (PFP: "UEFI driver and application code")
_WINDOWS_PCR = 12  # Windows Boot Manager's boot configuration log (WBCL) events
# What the Linux kernel's command-line parser skips (isspace): systemd-boot pads
# its load options with spaces.
_KERNEL_SPACE = " \t\n\v\f\r"


@dataclass(frozen=True, slots=True)
class BootApplication:
    digest: str
    path_hint: str | None


@dataclass(frozen=True, slots=True)
class MeasuredFile:
    path: str
    digest: str


@dataclass(frozen=True, slots=True)
class BootFile:
    """One PCR9 file measurement: ``path`` is as logged and bound by nothing."""

    index: int
    path: str
    digest: str


@dataclass(frozen=True, slots=True)
class UninterpretedEvent:
    """An event in PCR8, PCR9 or PCR12 that facts could not account for."""

    index: int
    pcr: int
    event_type: str
    why: str


@dataclass(frozen=True, slots=True)
class MeasuredDriver:
    """One PCR2 event (not its separator); ``event_type`` is as logged, not measured."""

    index: int
    event_type: str
    digest: str


@dataclass(frozen=True, slots=True)
class MeasuredBlob:
    digest: str
    description_hint: str | None


@dataclass(frozen=True)
class BootFacts:
    """What the log shows about one boot (see the module docstring for sources)."""

    bank: str
    log_format: str
    sha1_only: bool
    verified_pcrs: tuple[int, ...]
    secure_boot: SecureBoot | None
    pk: SignatureDatabase | None
    kek: SignatureDatabase | None
    db: SignatureDatabase | None
    dbx: SignatureDatabase | None
    authorities: tuple[Authority, ...]
    boot_applications: tuple[BootApplication, ...]
    exit_boot_services: bool
    bootloader: Bootloader | None
    kernel_cmdlines: tuple[str, ...]
    grub_commands: tuple[str, ...]
    kernels: tuple[MeasuredFile, ...]
    initrds: tuple[MeasuredFile, ...]
    firmware_versions: tuple[str, ...]
    firmware_blobs: tuple[MeasuredBlob, ...]
    boot_files: tuple[BootFile, ...] = ()
    uninterpreted: tuple[UninterpretedEvent, ...] = ()
    drivers: tuple[MeasuredDriver, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists, digests are lowercase hex)."""
        return asdict(self)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no insignificant whitespace."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


class _Reader:
    """Collects facts from trusted events, one PCR's rules at a time."""

    def __init__(self, bank: str) -> None:
        self.bank = bank
        self.separated: set[int] = set()
        self.secure_boot: SecureBoot | None = None
        self.seen_variables: set[tuple[str, str]] = set()
        self.databases: dict[tuple[str, str], SignatureDatabase] = {}
        self.authorities: list[Authority] = []
        self.apps: list[BootApplication] = []
        self.ebs = False
        self.bootloader: Bootloader | None = None
        self.cmdlines: list[str] = []
        self.grub_commands: list[str] = []
        self.pcr9: list[tuple[str | None, str, Event]] = []
        self.boot_files: list[BootFile] = []
        self.uninterpreted: list[UninterpretedEvent] = []
        self.versions: list[str] = []
        self.blobs: list[MeasuredBlob] = []
        self.drivers: list[MeasuredDriver] = []

    def read(self, event: Event) -> None:
        digest = event.digests.get(self.bank)
        if digest is None:
            return
        data = check_event_data(event, self.bank)
        trusted = data.trusted
        pcr, kind = event.pcr, event.event_type
        # OS-extended PCRs first: every event there is accounted for (module docstring).
        if pcr in _STRING_PCRS:
            self.os_string(event, data.status)
        elif pcr == FILE_PCR:
            self.os_file(event, digest.hex())
        elif kind == Ev.EV_SEPARATOR:
            self.separated.add(pcr)
        elif pcr == DRIVER_PCR:  # before or after the separator (check_events' concern)
            self.drivers.append(MeasuredDriver(event.index, event_type_name(kind), digest.hex()))
        elif pcr == 0 and pcr not in self.separated:
            self.firmware(event, digest.hex(), trusted=trusted)
        elif pcr == 4 and kind == Ev.EV_EFI_BOOT_SERVICES_APPLICATION and not self.ebs:
            self.apps.append(BootApplication(digest.hex(), _path_hint(event.data)))
        elif pcr == 5 and kind == Ev.EV_EFI_ACTION and trusted and event.data == EBS_INVOCATION:
            self.ebs = True
        elif pcr == 7 and trusted:
            self.secure_boot_config(event)

    def skip(self, event: Event, why: str) -> None:
        self.uninterpreted.append(
            UninterpretedEvent(event.index, event.pcr, event_type_name(event.event_type), why)
        )

    def os_string(self, event: Event, status: str) -> None:
        if event.event_type == Ev.EV_IPL:
            if status in ("mismatch", "malformed"):
                return  # check_events reports it (ipl_digest_mismatch, malformed_event)
            if status in ("verified", "quirk") and self.load_options(event):
                return
            # event_data.py takes only printable UTF-16 for load options; bound
            # unprintable ones are command lines all the same (module docstring).
            bound = measures_data(event, self.bank)
            if not (status == "unchecked" and bound and self.utf16_options(event.data)):
                self.skip(event, "neither a GRUB string nor UTF-16 load options")
        elif not (event.pcr == _WINDOWS_PCR and is_windows_boot_event(event, self.bank)):
            self.skip(event, f"not an event type (or Windows form) PCR{event.pcr} facts read")

    def os_file(self, event: Event, digest: str) -> None:
        if event.event_type == Ev.EV_IPL:
            self.pcr9.append((_pcr9_name(event), digest, event))
            path = event.data.removesuffix(b"\x00").decode("utf-8", "backslashreplace")
            self.boot_files.append(BootFile(event.index, path, digest))
        elif _is_initrd_tag(event):
            self.pcr9.append((None, digest, event))
            self.boot_files.append(BootFile(event.index, _EFI_STUB_INITRD, digest))
        else:
            self.skip(event, "neither a GRUB file nor the EFI stub's initrd tag")

    def firmware(self, event: Event, digest: str, *, trusted: bool) -> None:
        if event.event_type == Ev.EV_S_CRTM_VERSION and trusted:
            self.versions.append(decode_crtm_version(event.data))
        elif event.event_type == Ev.EV_EFI_PLATFORM_FIRMWARE_BLOB:
            self.blobs.append(MeasuredBlob(digest, None))
        elif event.event_type == Ev.EV_EFI_PLATFORM_FIRMWARE_BLOB2:
            try:
                description: str | None = parse_firmware_blob2(event.data).description
            except ParseError:
                description = None
            self.blobs.append(MeasuredBlob(digest, description))

    def secure_boot_config(self, event: Event) -> None:
        if event.event_type == Ev.EV_EFI_VARIABLE_AUTHORITY:
            self.authorities.append(authority(event))
            return
        if event.event_type != Ev.EV_EFI_VARIABLE_DRIVER_CONFIG or 7 in self.separated:
            return
        variable, _ = parse_uefi_variable_prefix(event.data)
        # Only the first measurement of a variable counts, readable or not: a repeat
        # (which check_events reports) must not stand in for it.
        if variable.key in self.seen_variables:
            return
        self.seen_variables.add(variable.key)
        if variable.key == SECURE_BOOT:
            self.secure_boot = _SECURE_BOOT.get(variable.value)
        elif variable.key in SIGNATURE_DATABASES:
            try:
                self.databases[variable.key] = signature_database(
                    parse_signature_lists(variable.value)
                )
            except ParseError:
                return

    def load_options(self, event: Event) -> bool:
        """Read a trusted PCR8/PCR12 EV_IPL; False if it is no string facts know."""
        try:
            grub = parse_grub_string(event.data)
        except ParseError:
            # Trusted and not GRUB's: systemd-boot's UTF-16 load options (event_data.py),
            # the odd-length form being the truncated-terminator quirk.
            return self.utf16_options(event.data + b"\x00" * (len(event.data) % 2))
        self.bootloader = self.bootloader or "grub"
        # The prefix is not hashed: the text, not the label, says what it is.
        if grub.kind != "command" or is_command_line(grub.text):
            self.cmdlines.append(grub.text)
        else:
            self.grub_commands.append(grub.text)
        return True

    def utf16_options(self, data: bytes) -> bool:
        try:
            text = decode_utf16_string(data)
        except ParseError:
            return False
        self.bootloader = self.bootloader or "systemd-boot"
        self.cmdlines.append(text.strip(_KERNEL_SPACE))
        return True

    def named_files(self, *, kernel: bool) -> tuple[MeasuredFile, ...]:
        """PCR9 digests of the files GRUB's verified ``linux``/``initrd`` commands name."""
        paths = named_paths(self.grub_commands, kernel=kernel)
        found = [MeasuredFile(name, digest) for name, digest, _ in self.pcr9 if name in paths]
        if not kernel:
            found += [
                MeasuredFile(_EFI_STUB_INITRD, digest)
                for _, digest, event in self.pcr9
                if _is_initrd_tag(event)
            ]
        return tuple(found)


def _path_hint(data: bytes) -> str | None:
    try:
        return parse_image_load_path(data)
    except ParseError:
        return None


def _pcr9_name(event: Event) -> str | None:
    if event.event_type != Ev.EV_IPL or not event.data.endswith(b"\x00"):
        return None
    try:
        return event.data[:-1].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _is_initrd_tag(event: Event) -> bool:
    if event.event_type != Ev.EV_EVENT_TAG or len(event.data) < _TAG_HEADER.size:
        return False
    tag, size = _TAG_HEADER.unpack_from(event.data)
    return bool(tag == _LINUX_INITRD_TAG and size == len(event.data) - _TAG_HEADER.size)


def extract_boot_facts(log: EventLog, bank: str, *, verified_pcrs: Collection[int]) -> BootFacts:
    """The facts of the module docstring, from ``log``'s events in ``verified_pcrs``.

    Precondition (not checkable here): the log's replay in ``bank`` matched the
    quoted value of every PCR in ``verified_pcrs``.
    """
    if bank not in log.banks:
        raise ValueError(f"the log has no {bank} bank (has {log.banks})")
    verified = frozenset(verified_pcrs)
    reader = _Reader(bank)
    for event in log.events:
        if event.pcr in verified and event.event_type != Ev.EV_NO_ACTION:
            reader.read(event)
    databases = [reader.databases.get(key) for key in SIGNATURE_DATABASES]
    return BootFacts(
        bank=bank,
        log_format=log.format,
        sha1_only=log.banks == ("sha1",),
        verified_pcrs=tuple(sorted(verified)),
        secure_boot=reader.secure_boot,
        pk=databases[0],
        kek=databases[1],
        db=databases[2],
        dbx=databases[3],
        authorities=tuple(reader.authorities),
        boot_applications=tuple(reader.apps),
        exit_boot_services=reader.ebs,
        bootloader=reader.bootloader,
        kernel_cmdlines=tuple(reader.cmdlines),
        grub_commands=tuple(reader.grub_commands),
        kernels=reader.named_files(kernel=True),
        initrds=reader.named_files(kernel=False),
        firmware_versions=tuple(reader.versions),
        firmware_blobs=tuple(reader.blobs),
        boot_files=tuple(reader.boot_files),
        uninterpreted=tuple(reader.uninterpreted),
        drivers=tuple(reader.drivers),
    )
