"""Event-data and structure checks over every real log, and one-mutation tables.

Every parsed real log gives exactly the findings in FINDINGS (the vendor quirks it
needs, or the real defects of partial fixtures); the swtpm broken variants give the
reasons their expected.json describes; and one change to a clean log gives exactly
one named reason (or the named pair when one change breaks two rules).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import struct
from collections.abc import Callable
from typing import Any

import pytest

from tests.vectors import TPM_SWTPM_SETS, vectors_dir
from tests.vectors import testvectors_root as _vectors_root
from verifier.evidence.tpm.event_checks import check_events
from verifier.evidence.tpm.event_data import check_event_data
from verifier.evidence.tpm.event_quirks import QUIRKS, quirk_code
from verifier.evidence.tpm.event_types import EventType as Ev
from verifier.evidence.tpm.eventlog import Event, EventLog, parse_event_log
from verifier.evidence.tpm.replay import ReplayError, replay


def _manifest_logs() -> list[dict[str, Any]]:
    path = _vectors_root() / "tpm" / "manifest.json"
    if not path.exists():
        return []
    logs: list[dict[str, Any]] = json.loads(path.read_text())["logs"]
    return [e for e in logs if e["parse"] == "ok" and e["format"] != "empty"]


PARSED = _manifest_logs()
SHA1_ONLY = "tpm.eventlog.sha1_only"
PCR1_LATE = quirk_code("pcr1_config_after_separator")
PCR2_LATE = quirk_code("pcr2_driver_after_separator")
SHIM = quirk_code("shim_authority_padding")
SD_BOOT = quirk_code("systemd_boot_truncated_nul")
NO_SEPARATORS = ["tpm.eventlog.separator_missing"] * 8
NO_SEPARATORS_0_6 = ["tpm.eventlog.separator_missing"] * 7

# Log -> the exact findings in its replay bank (sha256 where present, else sha1).
FINDINGS: dict[str, list[str]] = {
    "go-attestation/coreos_36_shielded_vm_no_secure_boot_eventlog": [],
    # AMI-style firmware (Intel Boot Guard laptop): Boot####/BootOrder after PCR1's separator.
    "go-attestation/crypto_agile_eventlog": [PCR1_LATE],
    "go-attestation/ebs_event_missing_eventlog": [SHA1_ONLY],
    "go-attestation/option_rom_eventlog": [SHA1_ONLY],
    # A 15-event excerpt: only PCR7 has its separator; old shim's padded authority events.
    "go-attestation/sb_cert_eventlog": [*NO_SEPARATORS_0_6, SHIM],
    # A lone StartupLocality event in SHA-1 format: no Spec ID, nothing measured.
    "go-attestation/short_no_action_eventlog": [SHA1_ONLY, *NO_SEPARATORS],
    # Windows' WBCL export: SHA-1 only, and only PCR7 (of 0-7) carries a separator.
    "go-attestation/windows_gcp_shielded_vm/eventlog.bin": [SHA1_ONLY, *NO_SEPARATORS_0_6],
    # COS 85's shim predates rhboot/shim 8a27a48.
    "go-tpm-tools/attestations/gce-cos-85-no-nonce/eventlog.bin": [SHIM],
    "go-tpm-tools/attestations/gce-cos-85-nonce9009/eventlog.bin": [SHIM],
    # AMI-style PCR1 ordering, and systemd-boot's truncated UTF-16 terminator in PCR8.
    "go-tpm-tools/eventlogs/arch-linux-workstation.bin": [PCR1_LATE, SD_BOOT],
    "go-tpm-tools/eventlogs/confidential-gke-debug-251000_eventlog.bin": [],
    "go-tpm-tools/eventlogs/cos-101-amd-sev.bin": [],
    "go-tpm-tools/eventlogs/cos-85-amd-sev.bin": [SHIM],
    "go-tpm-tools/eventlogs/debian-10.bin": [SHA1_ONLY, SHIM],
    "go-tpm-tools/eventlogs/eventlogwithsp800155.bin": [],
    # Event 4 (EV_S_CRTM_CONTENTS) has digest H(00000000) but other data: no finding.
    "go-tpm-tools/eventlogs/glinux-alex.bin": [PCR1_LATE],
    "go-tpm-tools/eventlogs/ubuntu-1804-amd-sev.bin": [],
    "go-tpm-tools/eventlogs/ubuntu-2104-no-dbx.bin": [],
    "go-tpm-tools/eventlogs/ubuntu-2104-no-secure-boot.bin": [],
    # SMBIOS handoff table and platform config flags in PCR1 after its separator.
    "keylime/binary_bios_measurements": [PCR1_LATE],
    "keylime/binary_bios_measurements-secureboot": [],
    "keylime/mb_log.bin": [],
    "python3-uefi-eventlog/ideapad__ideapad1.bin": [],
    "python3-uefi-eventlog/inspur__inspur.bin": [PCR1_LATE],
    "python3-uefi-eventlog/intel_svr__intel_svr.bin": [],
    "python3-uefi-eventlog/puiterwijk__puiterwijk.bin": [],
    "python3-uefi-eventlog/rhcos__rhcos.bin": [],
    "python3-uefi-eventlog/rhel__bootlog-5.0.0-rhel-20210423T133156Z_8b0347a.bin": [SHIM],
    "python3-uefi-eventlog/sr645__rk049-s26.bin": [PCR1_LATE],
    "python3-uefi-eventlog/supermicro__201123-eventlog.bin": [PCR1_LATE],
    "python3-uefi-eventlog/thinkpad__p511.bin": [],
    "python3-uefi-eventlog/ubuntu_qemu__css-flex14vm4-bootlog.bin": [],
    # Lenovo: a vendor event (type 0x8401) and a driver in PCR2, SMBIOS in PCR1, late.
    "rust-keylime/uefi_log.bin": [PCR2_LATE, PCR1_LATE],
    "swtpm-ecc-sha256-loc3/eventlog.bin": [],
    "swtpm-rsa-sha1sha256-loc0/eventlog.bin": [],
    "swtpm-rsa-sha256sha384-hcrtm-sboff/eventlog.bin": [],
    "tpm2-tools/event-arch-linux.bin": [PCR1_LATE, SD_BOOT],
    "tpm2-tools/event-bootorder.bin": [],
    "tpm2-tools/event-moklisttrusted.bin": [],
    "tpm2-tools/event-postcode.bin": [PCR1_LATE, SHIM],
    "tpm2-tools/event-sd-boot-fedora37.bin": [],
    "tpm2-tools/event-uefi-sha1-log.bin": [SHA1_ONLY],
    # Two-event parser fixtures: no separators at all.
    "tpm2-tools/event-uefiaction.bin": NO_SEPARATORS,
    "tpm2-tools/event-uefiservices.bin": NO_SEPARATORS,
    "tpm2-tools/event-uefivar.bin": NO_SEPARATORS,
    "tpm2-tools/event.bin": NO_SEPARATORS,
    "tpm2-tss/binary_measurements_hcrtm.bin": [],
    "tpm2-tss/binary_measurements_pc_client.bin": [PCR1_LATE],
    "tpm2-tss/specid-vendordata.bin": NO_SEPARATORS,
}


def _read_log(name: str) -> EventLog:
    return parse_event_log(vectors_dir("tpm", *name.split("/")).read_bytes())


def _bank(log: EventLog) -> str:
    return "sha256" if "sha256" in log.banks else "sha1"


def _codes(log: EventLog, bank: str | None = None) -> list[str]:
    return [r.code for r in check_events(log, bank or _bank(log))]


def test_table_covers_every_parsed_log() -> None:
    vectors_dir("tpm")
    assert sorted(FINDINGS) == sorted(e["file"] for e in PARSED)


@pytest.mark.parametrize("entry", PARSED, ids=[e["file"] for e in PARSED])
def test_real_log_findings(entry: dict[str, Any]) -> None:
    log = _read_log(entry["file"])
    assert _codes(log) == FINDINGS[entry["file"]]


@pytest.mark.parametrize("entry", PARSED, ids=[e["file"] for e in PARSED])
def test_findings_do_not_depend_on_the_bank(entry: dict[str, Any]) -> None:
    log = _read_log(entry["file"])
    for bank in log.banks:
        try:
            replay(log, bank=bank)
        except (ReplayError, ValueError):
            continue  # a bank replay refuses is never checked
        assert _codes(log, bank) == FINDINGS[entry["file"]], bank


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
def test_quirks_name_the_logs_that_need_them(quirk: str) -> None:
    vectors_dir("tpm")
    needing = sorted(name for name, codes in FINDINGS.items() if quirk_code(quirk) in codes)
    patterns = QUIRKS[quirk].seen_in
    assert all(any(fnmatch.fnmatch(n, p) for p in patterns) for n in needing)
    assert all(any(fnmatch.fnmatch(n, p) for n in needing) for p in patterns)


def test_quirk_reason_names_its_events() -> None:
    reasons = check_events(_read_log("go-tpm-tools/eventlogs/cos-85-amd-sev.bin"), "sha256")
    assert [str(r) for r in reasons] == [
        f"{SHIM}: events 24, 42: {QUIRKS['shim_authority_padding'].permits}"
    ]


def test_variable_conventions_are_named() -> None:
    log = _read_log("go-tpm-tools/eventlogs/cos-101-amd-sev.bin")
    seen = {
        (Ev(e.event_type).name, check_event_data(e, "sha256").convention)
        for e in log.events
        if e.event_type in (Ev.EV_EFI_VARIABLE_BOOT, Ev.EV_EFI_VARIABLE_DRIVER_CONFIG)
    }
    assert seen == {
        ("EV_EFI_VARIABLE_BOOT", "variable_data"),
        ("EV_EFI_VARIABLE_DRIVER_CONFIG", "structure"),
    }


def test_bank_must_be_declared_and_computable() -> None:
    log = _read_log("tpm2-tss/binary_measurements_hcrtm.bin")
    with pytest.raises(ValueError, match="no sha384"):
        check_events(log, "sha384")
    assert "sm3_256" in log.banks
    with pytest.raises(ValueError, match="cannot compute"):
        check_events(log, "sm3_256")


# --- The swtpm broken variants --------------------------------------------------

VARIANT_FINDINGS = {
    "flipped-digest-in-log": [],  # replay's job (PCR4 mismatch), not the checks'
    "event-type-tampered": ["tpm.eventlog.event_after_separator"],
    "event-data-tampered": ["tpm.eventlog.ipl_digest_mismatch"],
    "post-separator-injection": [
        "tpm.eventlog.event_after_exit_boot_services",
        "tpm.eventlog.event_after_separator",
    ],
}


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
@pytest.mark.parametrize("variant", sorted(VARIANT_FINDINGS))
def test_swtpm_variants(name: str, variant: str) -> None:
    log = parse_event_log(
        vectors_dir("tpm", name, "variants", variant, "eventlog.bin").read_bytes()
    )
    expected = json.loads(
        vectors_dir("tpm", name, "variants", variant, "expected.json").read_text()
    )
    for bank in log.banks:
        reasons = check_events(log, bank)
        assert [r.code for r in reasons] == VARIANT_FINDINGS[variant]
        if "altered_event_index" in expected and reasons:
            assert f"event {expected['altered_event_index']} " in reasons[0].detail


# --- One change to a clean log, one named reason --------------------------------

CLEAN = "swtpm-rsa-sha1sha256-loc0/eventlog.bin"
Mutation = Callable[[list[Event]], list[Event]]


def _rehash(event: Event, data: bytes, *, hashed: bytes | None = None) -> Event:
    """``event`` with new data and digests over ``hashed`` (default: the data)."""
    source = data if hashed is None else hashed
    digests = {bank: hashlib.new(bank, source).digest() for bank in event.digests}
    return dataclasses.replace(event, data=data, digests=digests)


def _find(events: list[Event], pcr: int, kind: int, nth: int = 0) -> int:
    return [i for i, e in enumerate(events) if e.pcr == pcr and e.event_type == kind][nth]


def _variable(name: bytes, value: bytes, guid: bytes = bytes(16)) -> bytes:
    return guid + struct.pack("<QQ", len(name) // 2, len(value)) + name + value


def _replace(pcr: int, kind: int, make: Callable[[Event], Event], nth: int = 0) -> Mutation:
    def mutate(events: list[Event]) -> list[Event]:
        i = _find(events, pcr, kind, nth)
        return [*events[:i], make(events[i]), *events[i + 1 :]]

    return mutate


def _move_after(pcr: int, kind: int, anchor: tuple[int, int], nth: int = 0) -> Mutation:
    def mutate(events: list[Event]) -> list[Event]:
        moved = events.pop(_find(events, pcr, kind, nth))
        at = _find(events, *anchor) + 1
        return [*events[:at], moved, *events[at:]]

    return mutate


def _insert_after(anchor: tuple[int, int], make: Callable[[Event], Event]) -> Mutation:
    def mutate(events: list[Event]) -> list[Event]:
        at = _find(events, *anchor)
        return [*events[: at + 1], make(events[at]), *events[at + 1 :]]

    return mutate


def _delete(pcr: int, kind: int) -> Mutation:
    def mutate(events: list[Event]) -> list[Event]:
        del events[_find(events, pcr, kind)]
        return events

    return mutate


def _flip_value(event: Event) -> Event:
    return dataclasses.replace(event, data=event.data[:-1] + bytes([event.data[-1] ^ 1]))


SEP, VAR, AUTH = Ev.EV_SEPARATOR, Ev.EV_EFI_VARIABLE_DRIVER_CONFIG, Ev.EV_EFI_VARIABLE_AUTHORITY
ACTION, BOOT_VAR, APP = (
    Ev.EV_EFI_ACTION,
    Ev.EV_EFI_VARIABLE_BOOT,
    Ev.EV_EFI_BOOT_SERVICES_APPLICATION,
)
MUTATIONS: dict[str, tuple[Mutation, list[str]]] = {
    "separator data 01000000 (digest matches)": (
        _replace(4, SEP, lambda e: _rehash(e, b"\x01\x00\x00\x00")),
        ["tpm.eventlog.separator_lookalike"],
    ),
    "separator data ffffffff (the error value)": (
        _replace(4, SEP, lambda e: _rehash(e, b"\xff" * 4)),
        ["tpm.eventlog.separator_error"],
    ),
    "separator data changed, digest not": (
        _replace(4, SEP, lambda e: dataclasses.replace(e, data=b"\x01\x00\x00\x00")),
        ["tpm.eventlog.digest_mismatch", "tpm.eventlog.separator_lookalike"],
    ),
    "separator duplicated": (
        _insert_after((3, SEP), lambda e: e),
        ["tpm.eventlog.separator_duplicate"],
    ),
    "separator removed": (_delete(6, SEP), ["tpm.eventlog.separator_missing"]),
    "separator retyped as EV_POST_CODE": (
        _replace(2, SEP, lambda e: dataclasses.replace(e, event_type=Ev.EV_POST_CODE)),
        ["tpm.eventlog.separator_lookalike", "tpm.eventlog.separator_missing"],
    ),
    "PCR0 event with separator data before the separator": (
        _insert_after(
            (0, Ev.EV_S_CRTM_VERSION),
            lambda e: _rehash(dataclasses.replace(e, event_type=Ev.EV_POST_CODE), bytes(4)),
        ),
        ["tpm.eventlog.separator_lookalike"],
    ),
    "PK moved after PCR7's separator": (
        _move_after(7, VAR, (7, SEP), nth=1),
        ["tpm.eventlog.event_after_separator"],
    ),
    "S-CRTM version moved after PCR0's separator": (
        _move_after(0, Ev.EV_S_CRTM_VERSION, (0, SEP)),
        ["tpm.eventlog.event_after_separator"],
    ),
    "BootOrder moved after PCR1's separator (a named quirk)": (
        _move_after(1, BOOT_VAR, (1, SEP)),
        [PCR1_LATE],
    ),
    "'Calling EFI Application' moved after PCR4's separator": (
        _move_after(4, ACTION, (4, SEP)),
        ["tpm.eventlog.event_after_separator"],
    ),
    "EFI application after Exit Boot Services": (
        _move_after(4, APP, (5, ACTION)),
        ["tpm.eventlog.event_after_exit_boot_services"],
    ),
    "db variable data altered": (
        _replace(7, VAR, _flip_value, nth=3),
        ["tpm.eventlog.variable_digest_mismatch"],
    ),
    "db digest over VariableData only": (
        _replace(7, VAR, lambda e: _rehash(e, e.data, hashed=e.data[-100:]), nth=3),
        ["tpm.eventlog.variable_digest_mismatch"],
    ),
    "BootOrder digest over VariableData only (accepted convention)": (
        _replace(1, BOOT_VAR, lambda e: _rehash(e, e.data, hashed=e.data[-4:])),
        [],
    ),
    "SecureBoot measured twice": (
        _insert_after((7, VAR), lambda e: e),
        ["tpm.eventlog.duplicate_variable"],
    ),
    "SecureBoot value 02": (
        _replace(7, VAR, lambda e: _rehash(e, e.data[:-1] + b"\x02")),
        ["tpm.eventlog.malformed_event"],
    ),
    "db not an EFI_SIGNATURE_LIST": (
        _replace(7, VAR, lambda e: _rehash(e, e.data[:-1]), nth=3),
        ["tpm.eventlog.malformed_event"],
    ),
    "authority with shim's 6 padding bytes": (
        _replace(
            7, AUTH, lambda e: _rehash(e, e.data + bytes(5) + b"\xaf", hashed=e.data + bytes(5))
        ),
        [SHIM],
    ),
    "authority with 5 stray bytes": (
        _replace(7, AUTH, lambda e: _rehash(e, e.data + bytes(5), hashed=e.data + bytes(4))),
        ["tpm.eventlog.malformed_event"],
    ),
    "UEFI debugger enabled": (
        _insert_after(
            (7, VAR),
            lambda e: _rehash(dataclasses.replace(e, event_type=ACTION), b"UEFI Debug Mode"),
        ),
        ["tpm.eventlog.uefi_debug_mode"],
    ),
    "EV_POST_CODE in PCR7": (
        _insert_after((7, VAR), lambda e: dataclasses.replace(e, event_type=Ev.EV_POST_CODE)),
        ["tpm.eventlog.unexpected_event_type"],
    ),
    "EV_EFI_ACTION text altered": (
        _replace(4, ACTION, lambda e: dataclasses.replace(e, data=e.data.lower())),
        ["tpm.eventlog.digest_mismatch"],
    ),
    "EV_EFI_ACTION not ASCII": (
        _replace(4, ACTION, lambda e: _rehash(e, b"Calling \xff")),
        ["tpm.eventlog.malformed_event"],
    ),
    "GPT truncated (digest matches)": (
        _replace(5, Ev.EV_EFI_GPT_EVENT, lambda e: _rehash(e, e.data[:-1])),
        ["tpm.eventlog.malformed_event"],
    ),
    "GRUB command altered": (
        _replace(8, Ev.EV_IPL, lambda e: dataclasses.replace(e, data=b"grub_cmd: set timeout=5\0")),
        ["tpm.eventlog.ipl_digest_mismatch"],
    ),
    "digest missing in the bank": (
        _replace(4, ACTION, lambda e: dataclasses.replace(e, digests={"sha1": e.digests["sha1"]})),
        ["tpm.eventlog.missing_digest"],
    ),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_one_mutation(name: str) -> None:
    log = _read_log(CLEAN)
    assert _codes(log) == []
    mutate, expected = MUTATIONS[name]
    events = mutate(list(log.events))
    renumbered = tuple(dataclasses.replace(e, index=i) for i, e in enumerate(events))
    assert _codes(dataclasses.replace(log, events=renumbered), "sha256") == expected
