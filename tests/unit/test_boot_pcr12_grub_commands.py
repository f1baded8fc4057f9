"""A wrong kernel command line cannot pass as a Windows event or behind a GRUB command.

The review's two attacks, each on a real log re-encoded with eventlog_encode.py;
the "quote" is the rewritten log's own replay, which is what a host that really
extended those digests reports:

* PCR12 (systemd-boot >= 251, systemd-stub): boot with a command line holding one
  character that is not printable (a tab, which Linux splits on), retype its
  event EV_IPL -> EV_EVENT_TAG (the type is not hashed), extend PCR12 with the
  approved line afterwards. Only Windows' exact forms are excused now (wbcl.py);
  an unprintable line logged honestly is a command line to appraise.
* GRUB: ``chainloader <approved kernel> <bad arguments>`` measures no
  ``kernel_cmdline``; root extends PCR8 afterwards with the approved
  ``linux``/``kernel_cmdline`` strings. Other loaders' commands are refused, and a
  ``linux`` command must have its measured command line (boot_commands.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from tests.vectors import testvectors_root, vectors_dir
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.boot_commands import loader_words
from verifier.evidence.tpm.boot_facts import BootFacts, extract_boot_facts
from verifier.evidence.tpm.boot_reference import (
    appraise_boot,
    load_boot_reference,
    reference_from_facts,
)
from verifier.evidence.tpm.efi_events import parse_grub_string
from verifier.evidence.tpm.event_checks import check_events
from verifier.evidence.tpm.event_types import EventType as Ev
from verifier.evidence.tpm.event_types import event_type_name
from verifier.evidence.tpm.eventlog import Event, EventLog, parse_event_log
from verifier.evidence.tpm.eventlog_encode import encode_event_log
from verifier.evidence.tpm.eventlog_model import new_event
from verifier.evidence.tpm.replay import replay
from verifier.evidence.tpm.wbcl import is_windows_boot_event, parse_sipa_events

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FEDORA_SD_BOOT = "tpm2-tools/event-sd-boot-fedora37.bin"  # systemd-boot, PCR12 load options
RHEL9_SECURE_BOOT = "keylime/binary_bios_measurements-secureboot"  # GRUB, Secure Boot on
WINDOWS = (
    "python3-uefi-eventlog/ideapad__ideapad1.bin",
    "python3-uefi-eventlog/thinkpad__p511.bin",
    "go-attestation/option_rom_eventlog",
)
GOOD_OPTIONS = " console=ttyS0 console=tty0 efi=debug "  # what the Fedora host booted with


def _read(name: str) -> EventLog:
    return parse_event_log(vectors_dir("tpm", *name.split("/")).read_bytes())


def _event(pcr: int, kind: int, data: bytes, *, measured: bytes | None = None) -> Event:
    """An event whose sha256 digest is of ``measured`` (default: of ``data``)."""
    digest = hashlib.sha256(data if measured is None else measured).digest()
    return new_event(0, pcr, kind, digests={"sha256": digest}, data=data, offset=0)


def _rewrite(log: EventLog, events: Iterable[Event]) -> EventLog:
    """The log with ``events``, re-encoded and parsed back as a verifier would."""
    numbered = tuple(dataclasses.replace(e, index=i) for i, e in enumerate(events))
    return parse_event_log(encode_event_log(EventLog(log.format, log.spec_id, numbered)))


def _facts(log: EventLog) -> BootFacts:
    return extract_boot_facts(log, "sha256", verified_pcrs=replay(log, bank="sha256"))


def _proposal(log: EventLog) -> dict[str, Any]:
    return reference_from_facts(_facts(log), checks=check_events(log, "sha256"))


def _codes(log: EventLog, reference: dict[str, Any]) -> list[str]:
    reasons = appraise_boot(
        _facts(log), check_events(log, "sha256"), load_boot_reference(reference)
    )
    return [r.code for r in reasons]


def _utf16z(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\x00\x00"


# --- PCR12: a command line is never excused as Windows' ---------------------------

# Each makes the old reader's UTF-16 decoding fail (isprintable, or not UTF-16 at all).
UNPRINTABLE = {
    "tab": _utf16z(" console=ttyS0 console=tty0 efi=debug\tinit=/bin/sh "),
    "newline": _utf16z(" console=ttyS0 console=tty0 efi=debug\ninit=/bin/sh "),
    "zero_width": _utf16z(" console=ttyS0 console=tty0 efi=debug\u200b init=/bin/sh "),
    "lone_surrogate": _utf16z(" console=ttyS0 init=/bin/sh")[:-2] + b"\x00\xd8\x00\x00",
}


def _pcr12_case() -> tuple[EventLog, dict[str, Any]]:
    log = _read(FEDORA_SD_BOOT)
    reference = _proposal(log)
    assert reference["kernel_cmdlines"] == [{"exact": GOOD_OPTIONS.strip()}]
    assert _codes(log, reference) == []
    return log, reference


@pytest.mark.parametrize("kind", [Ev.EV_EVENT_TAG, Ev.EV_SEPARATOR], ids=["tag", "separator"])
@pytest.mark.parametrize("bad", UNPRINTABLE.values(), ids=list(UNPRINTABLE))
def test_retyped_pcr12_command_line_plus_approved_one_is_rejected(bad: bytes, kind: int) -> None:
    """The review's attack: retyped, the bad line's digest is still H(data)."""
    log, reference = _pcr12_case()
    pcr12 = [e.index for e in log.events if e.pcr == 12]
    assert len(pcr12) == 2  # systemd-boot and systemd-stub both measure the options
    events = [_event(12, kind, bad) if e.pcr == 12 else e for e in log.events]
    attack = _rewrite(log, [*events, _event(12, Ev.EV_IPL, _utf16z(GOOD_OPTIONS))])
    facts = _facts(attack)
    assert facts.kernel_cmdlines == (GOOD_OPTIONS.strip(),)  # only the approved line...
    assert [(u.index, u.event_type) for u in facts.uninterpreted] == [
        (i, event_type_name(kind)) for i in pcr12
    ]
    assert _codes(attack, reference) == ["tpm.boot.uninterpreted_event"] * 2  # ...and no pass


@pytest.mark.parametrize("bad", UNPRINTABLE.values(), ids=list(UNPRINTABLE))
def test_unprintable_load_options_are_a_command_line_to_appraise(bad: bytes) -> None:
    log, reference = _pcr12_case()
    honest = _rewrite(
        log, [_event(12, e.event_type, bad) if e.pcr == 12 else e for e in log.events]
    )
    facts = _facts(honest)
    assert facts.uninterpreted == () and len(facts.kernel_cmdlines) == 2
    assert all("init=/bin/sh" in line for line in facts.kernel_cmdlines)
    assert _codes(honest, reference) == ["tpm.boot.kernel_cmdline_not_allowed"] * 2
    allowed = {**reference, "kernel_cmdlines": [{"exact": facts.kernel_cmdlines[0]}]}
    assert _codes(honest, allowed) == []  # appraised as what it is, not "not UTF-16"
    json.loads(facts.to_json())  # a lone surrogate is escaped, not carried raw


def test_real_windows_pcr12_events_are_excused_and_only_they() -> None:
    for name in WINDOWS:
        log = _read(name)
        windows = [
            e for e in log.events if e.pcr in (12, 13, 14) and e.event_type != Ev.EV_NO_ACTION
        ]
        # The thinkpad log declares SHA-1 but gives these events SHA-256 digests only.
        banks = [b for b in log.banks if all(b in e.digests for e in windows)]
        assert windows and banks, name
        for bank in banks:
            assert all(is_windows_boot_event(e, bank) for e in windows), (name, bank)
            facts = extract_boot_facts(log, bank, verified_pcrs=replay(log, bank=bank))
            assert facts.uninterpreted == (), (name, bank)
        assert all(parse_sipa_events(e.data) for e in windows if e.event_type == Ev.EV_EVENT_TAG)
    tag = next(
        e for e in _read(WINDOWS[0]).events if e.pcr == 12 and e.event_type == Ev.EV_EVENT_TAG
    )
    separator = next(e for e in _read(WINDOWS[0]).events if e.pcr == 12 and e.data == b"WBCL")
    # One mutation each, with the digest kept H(data): none is Windows' form.
    for data in (tag.data + b"\x00", tag.data[:-1], struct.pack("<II", 1, 1) + tag.data):
        assert not is_windows_boot_event(_event(12, Ev.EV_EVENT_TAG, data), "sha256")
    assert not is_windows_boot_event(_event(12, Ev.EV_SEPARATOR, b"WBCX"), "sha256")
    assert not is_windows_boot_event(_event(12, Ev.EV_SEPARATOR, b"\x00" * 4), "sha256")
    assert not is_windows_boot_event(_event(12, Ev.EV_EVENT_TAG, tag.data, measured=b""), "sha256")
    assert not is_windows_boot_event(_event(12, Ev.EV_IPL, tag.data), "sha256")
    assert is_windows_boot_event(_event(12, Ev.EV_SEPARATOR, separator.data), "sha256")


def test_a_utf16_string_that_parses_as_sipa_is_still_not_excused() -> None:
    """One record of type 0x00410041 holding 65538 bytes: also a NUL-free UTF-16 string."""
    data = _utf16z("AA" + "\x02\x01" + "A" * 32768)
    assert parse_sipa_events(data) == 1
    assert not is_windows_boot_event(_event(12, Ev.EV_EVENT_TAG, data), "sha256")


# --- GRUB: commands that boot something --------------------------------------------


def _grub(prefix: bytes, text: bytes) -> Event:
    """A GRUB PCR8 string: GRUB hashes the text without prefix or NUL."""
    return _event(8, Ev.EV_IPL, prefix + text + b"\x00", measured=text)


def _grub_case() -> tuple[EventLog, dict[str, Any], Event, Event]:
    log = _read(RHEL9_SECURE_BOOT)
    reference = _proposal(log)
    assert {"kernel_digests", "initrd_digests", "boot_file_digests"} <= set(reference)
    assert _codes(log, reference) == []
    linux = next(e for e in log.events if e.pcr == 8 and e.data.startswith(b"grub_cmd: linux "))
    cmdline = next(e for e in log.events if e.pcr == 8 and e.data.startswith(b"kernel_cmdline: "))
    return log, reference, linux, cmdline


def _approved(linux: Event, cmdline: Event) -> tuple[bytes, bytes]:
    return linux.data[len(b"grub_cmd: ") : -1], cmdline.data[len(b"kernel_cmdline: ") : -1]


@pytest.mark.parametrize(
    "loader",
    [
        b"chainloader {kernel} root=/dev/mapper/rhel_rhel--9-root ro init=/bin/sh",
        b"multiboot2 {kernel} init=/bin/sh",
        b"module2 {kernel} init=/bin/sh",
        b"kfreebsd {kernel}",
        b"knetbsd {kernel}",
        b"kopenbsd {kernel}",
        b"appleloader",
        b"xnu_kernel64 {kernel}",
        b"ntldr {kernel}",
        b"legacy_kernel {kernel} {kernel} init=/bin/sh",
        b"devicetree (hd0,gpt2)/evil.dtb",
        b"acpi (hd0,gpt2)/evil.aml",
        b"loadbios (hd0,gpt2)/bios.bin (hd0,gpt2)/int10.bin",
    ],
    ids=lambda loader: loader.split()[0].decode(),
)
@pytest.mark.parametrize("bang", [b"", b"! ", b"! ! "], ids=["plain", "negated", "twice"])
def test_other_loader_plus_forged_linux_strings_is_rejected(loader: bytes, bang: bytes) -> None:
    """The review's attack: the approved kernel booted by another loader. A leading
    ``!`` (GRUB inverts the exit status and runs the rest) changes nothing."""
    log, reference, linux, cmdline = _grub_case()
    approved_linux, approved_cmdline = _approved(linux, cmdline)
    command = bang + loader.replace(b"{kernel}", approved_cmdline.split(b" ")[0])
    events: list[Event] = []
    for event in log.events:
        if event.index == linux.index:
            events.append(_grub(b"grub_cmd: ", command))  # what GRUB really ran
        elif event.index != cmdline.index:  # no Linux loader, no kernel_cmdline
            events.append(event)
    forged = (_grub(b"grub_cmd: ", approved_linux), _grub(b"kernel_cmdline: ", approved_cmdline))
    attack = _rewrite(log, [*events, *forged])
    assert command.decode() in _facts(attack).grub_commands
    assert _codes(attack, reference) == ["tpm.boot.boot_command_not_allowed"]


@pytest.mark.parametrize(
    "bad_args",
    [
        lambda args: args + b" init=/bin/sh",  # added
        lambda args: args.rsplit(b" ", 1)[0],  # dropped (console=ttyS0)
        lambda args: args.replace(b" ro ", b" rw "),  # changed
    ],
    ids=["added", "dropped", "changed"],
)
def test_linux_command_without_its_measured_command_line_is_rejected(bad_args: Any) -> None:
    """A GRUB that measured no kernel_cmdline for its linux command: root forges one."""
    log, reference, linux, cmdline = _grub_case()
    approved_linux, approved_cmdline = _approved(linux, cmdline)
    bad_linux = b"linux " + bad_args(approved_linux[len(b"linux ") :])
    events = [
        _grub(b"grub_cmd: ", bad_linux) if e.index == linux.index else e
        for e in log.events
        if e.index != cmdline.index
    ]
    attack = _rewrite(log, [*events, _grub(b"kernel_cmdline: ", approved_cmdline)])
    assert _facts(attack).kernel_cmdlines == (approved_cmdline.decode(),)
    assert _codes(attack, reference) == ["tpm.boot.kernel_cmdline_mismatch"]
    # The same linux command with the command line GRUB measures for it: only that
    # line's own appraisal speaks.
    honest = _rewrite(
        log,
        [
            _grub(b"kernel_cmdline: ", bad_linux[len(b"linux ") :])
            if e.index == cmdline.index
            else _grub(b"grub_cmd: ", bad_linux)
            if e.index == linux.index
            else e
            for e in log.events
        ],
    )
    assert _codes(honest, reference) == ["tpm.boot.kernel_cmdline_not_allowed"]


def _grub_logs() -> Sequence[tuple[str, EventLog]]:
    manifest = json.loads((testvectors_root() / "tpm" / "manifest.json").read_text())
    logs = []
    for entry in manifest["logs"]:
        try:
            log = _read(entry["file"])
        except ParseError:  # the logs that do not parse are another test's
            continue
        if any(
            e.pcr == 8 and e.data.startswith((b"grub_cmd: linux", b"grub_cmd linux"))
            for e in log.events
        ):
            logs.append((entry["file"], log))
    return logs


def test_real_grub_logs_measure_each_linux_command_word_for_word() -> None:
    """What the comparison rests on: every real GRUB log's linux command and
    kernel_cmdline agree exactly; only the synthetic swtpm logs measure more."""
    exact, extended = set(), set()
    for name, log in _grub_logs():
        strings = []
        for event in log.events:
            if event.pcr == 8:
                try:
                    strings.append(parse_grub_string(event.data))
                except ParseError:
                    continue
        lines = [" ".join(loader_words(s.text)) for s in strings if s.kind == "kernel_cmdline"]
        for s in strings:
            verb, _, rest = s.text.partition(" ")
            if s.kind == "command" and verb in ("linux", "linuxefi", "linux16"):
                if rest in lines:
                    exact.add(name)
                else:
                    assert any(line.startswith(rest + " ") for line in lines), name
                    extended.add(name)
    assert len(exact) == 26  # every real GRUB log with a linux command
    assert extended == {
        "swtpm-ecc-sha256-loc3/eventlog.bin",
        "swtpm-rsa-sha1sha256-loc0/eventlog.bin",
        "swtpm-rsa-sha256sha384-hcrtm-sboff/eventlog.bin",
    }


def test_loader_words_undo_grub_quoting() -> None:
    assert loader_words('/vmlinuz root=/dev/sda1 "a b" c\\"d e\\\\f') == [
        "/vmlinuz",
        "root=/dev/sda1",
        "a b",
        'c"d',
        "e\\f",
    ]
    assert loader_words("") == [] and loader_words('""') == [""]


def test_a_relabelled_command_line_with_a_quoted_kernel_path_is_appraised() -> None:
    """Third review: ``! linux "(hd0,gpt2)/vm x" ... init=/bin/sh`` hides behind its
    ``!``, and GRUB quotes the path with a space in the kernel_cmdline it measures;
    relabelled ``grub_cmd: `` that string began with ``"`` and passed for a command.
    Root then extends the approved linux and kernel_cmdline strings after boot."""
    log, reference, linux, cmdline = _grub_case()
    approved_linux, approved_cmdline = _approved(linux, cmdline)
    path, args = approved_cmdline.split(b" ", 1)
    evil = b"(hd0,gpt2)/vm x"
    bad_args = args + b" init=/bin/sh"
    events: list[Event] = []
    for event in log.events:
        if event.index == linux.index:
            events.append(_grub(b"grub_cmd: ", b"! linux " + evil + b" " + bad_args))
        elif event.index == cmdline.index:  # measured as kernel_cmdline, sent relabelled
            events.append(_grub(b"grub_cmd: ", b'"' + evil + b'" ' + bad_args))
        else:
            events.append(event)
    forged = (_grub(b"grub_cmd: ", approved_linux), _grub(b"kernel_cmdline: ", approved_cmdline))
    attack = _rewrite(log, [*events, *forged])
    facts = _facts(attack)
    assert b'"'.decode() + evil.decode() + '" ' + bad_args.decode() in facts.kernel_cmdlines
    assert "tpm.boot.kernel_cmdline_not_allowed" in _codes(attack, reference)
    assert path.startswith(b"(hd0")  # the real log's kernel path, as the attack assumes


@pytest.mark.parametrize(
    "command",
    [b"rmmod tpm", b"! rmmod tpm", b"write_dword 0xfed40000 0", b"outb 0x70 0", b"wrmsr 0x1 0"],
    ids=["rmmod", "negated-rmmod", "write", "out", "wrmsr"],
)
def test_commands_that_stop_measuring_or_poke_hardware_are_refused(command: bytes) -> None:
    """Fourth review: ``rmmod tpm`` unloads GRUB's measuring hook, so what follows (an
    approved kernel with any arguments, any initrd) is never measured; root extends
    the approved strings after boot. Refused even by a reference without an allow-list."""
    log, reference, linux, cmdline = _grub_case()
    approved_linux, approved_cmdline = _approved(linux, cmdline)
    kept = [e for e in log.events if e.index not in (linux.index, cmdline.index)]
    forged = (_grub(b"grub_cmd: ", approved_linux), _grub(b"kernel_cmdline: ", approved_cmdline))
    attack = _rewrite(log, [*kept, _grub(b"grub_cmd: ", command), *forged])
    without_allow_list = {k: v for k, v in reference.items() if k != "grub_command_verbs"}
    for ref in (reference, without_allow_list):
        assert _codes(attack, ref) == ["tpm.boot.boot_command_not_allowed"]


def test_the_proposal_allows_only_the_commands_its_boot_ran() -> None:
    log, reference, _, _ = _grub_case()
    verbs = reference["grub_command_verbs"]
    assert {"linux", "initrd", "insmod", "set"} <= set(verbs) and "rmmod" not in verbs
    # A command the known-good boot never ran, though on no deny list: refused.
    extra = _rewrite(log, [*log.events, _grub(b"grub_cmd: ", b"videoinfo")])
    assert _codes(extra, reference) == ["tpm.boot.boot_command_not_allowed"]
    assert "videoinfo" not in verbs


def test_an_initrd_that_places_a_file_by_name_is_refused() -> None:
    """``initrd newc:init:(hd0,gpt2)/approved.img`` puts an approved file's bytes at
    /init of the initramfs: PCR9 sees an approved digest, the placement is the attack."""
    log, reference, _, _ = _grub_case()
    placed = _rewrite(log, [*log.events, _grub(b"grub_cmd: ", b"initrd newc:init:(hd0,gpt2)/a")])
    assert _codes(placed, reference) == ["tpm.boot.boot_command_not_allowed"]


def test_a_block_list_kernel_path_reads_as_a_command_line() -> None:
    """GRUB opens a kernel by sectors as ``2048+16384``: its kernel_cmdline, relabelled
    ``grub_cmd: ``, is still a command line to appraise, not a command."""
    log, reference, _, _ = _grub_case()
    relabelled = _grub(b"grub_cmd: ", b"2048+16384 root=/dev/sda1 init=/bin/sh")
    facts = _facts(_rewrite(log, [*log.events, relabelled]))
    assert "2048+16384 root=/dev/sda1 init=/bin/sh" in facts.kernel_cmdlines
    assert "tpm.boot.kernel_cmdline_not_allowed" in _codes(
        _rewrite(log, [*log.events, relabelled]), reference
    )
