"""Boot facts from every real log, checked against manifest.json and expected.json.

Plus: facts come only from verified PCRs and verified data, the JSON form, and
hypothesis round-trips of the UEFI_VARIABLE_DATA / EFI_SIGNATURE_LIST parsers
through encoders written here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.vectors import TPM_SWTPM_SETS, vectors_dir
from tests.vectors import testvectors_root as _vectors_root
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import efi_events, efi_variables
from verifier.evidence.tpm.boot_facts import BootFacts, extract_boot_facts
from verifier.evidence.tpm.efi_variables import (
    EFI_CERT_SHA256,
    EFI_CERT_X509,
    SignatureEntry,
    UefiVariable,
    parse_signature_lists,
    parse_uefi_variable,
)
from verifier.evidence.tpm.event_types import EventType as Ev
from verifier.evidence.tpm.eventlog import EventLog, parse_event_log
from verifier.evidence.tpm.replay import ReplayError, replay
from verifier.evidence.tpm.signature_db import SignatureDatabase

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _manifest_logs() -> list[dict[str, Any]]:
    path = _vectors_root() / "tpm" / "manifest.json"
    if not path.exists():
        return []
    logs: list[dict[str, Any]] = json.loads(path.read_text())["logs"]
    return [e for e in logs if e["parse"] == "ok" and e["format"] != "empty"]


PARSED = _manifest_logs()


def _read_log(name: str) -> EventLog:
    return parse_event_log(vectors_dir("tpm", *name.split("/")).read_bytes())


def _facts(name: str, bank: str | None = None, pcrs: set[int] | None = None) -> BootFacts:
    log = _read_log(name)
    bank = bank or ("sha256" if "sha256" in log.banks else "sha1")
    if pcrs is None:
        try:
            pcrs = set(replay(log, bank=bank))
        except ReplayError:
            pcrs = set(range(24))
    return extract_boot_facts(log, bank, verified_pcrs=pcrs)


def _counts(database: SignatureDatabase | None) -> dict[str, int] | None:
    if database is None:
        return None
    return {
        "x509": len(database.certificates),
        "sha256": len(database.sha256),
        "other": len(database.other),
    }


# manifest.json's SecureBoot_var: the byte, "len=0" for an empty variable, None if absent.
SECURE_BOOT = {"enabled": 1, "disabled": 0, "absent": "len=0", None: None}


@pytest.mark.parametrize("entry", PARSED, ids=[e["file"] for e in PARSED])
def test_secure_boot_matches_manifest(entry: dict[str, Any]) -> None:
    facts = _facts(entry["file"])
    assert {
        "SecureBoot_var": SECURE_BOOT[facts.secure_boot],
        "PK": _counts(facts.pk),
        "KEK": _counts(facts.kek),
        "db": _counts(facts.db),
        "dbx": _counts(facts.dbx),
        "authority_events": len(facts.authorities),
    } == entry["secure_boot"]


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_swtpm_facts_match_expected(name: str) -> None:
    expected = json.loads(vectors_dir("tpm", name, "expected.json").read_text())
    sb = expected["secure_boot"]
    apps = expected["efi_apps_pcr4_in_order"]
    for bank in _read_log(f"{name}/eventlog.bin").banks:
        facts = _facts(f"{name}/eventlog.bin", bank)
        assert facts.secure_boot == ("enabled" if sb["SecureBoot"] else "disabled")
        assert facts.pk is not None and facts.db is not None and facts.dbx is not None
        assert [c.sha256 for c in facts.pk.certificates] == [sb["pk_der_sha256"]]
        assert [c.sha256 for c in facts.db.certificates] == [sb["db_der_sha256"]]
        assert list(facts.dbx.sha256) == sb["dbx_sha256_entries"]
        order = [n for n in ("shim", "grub", "kernel") if n in apps]
        assert [a.digest for a in facts.boot_applications] == [apps[n][bank] for n in order]
        assert facts.boot_applications[0].path_hint == "\\EFI\\debian\\shimx64.efi"
        assert facts.bootloader == "grub"
        assert facts.kernel_cmdlines == (expected["kernel_cmdline"],)
        assert [f.digest for f in facts.kernels] == [expected["kernel_digest"][bank]]
        assert [f.digest for f in facts.initrds] == [expected["initrd_digest"][bank]]
        assert facts.initrds[0].path == "/initrd.img-6.1.0-synthetic"
        assert facts.firmware_versions == ("swtpm-synthetic-fw 1.00",)
        assert facts.exit_boot_services


def test_certificates_have_fingerprints_and_subjects() -> None:
    facts = _facts("go-tpm-tools/eventlogs/cos-101-amd-sev.bin")
    assert facts.pk is not None and facts.db is not None
    (pk,) = facts.pk.certificates
    assert pk.subject is not None and "UEFI Platform Key" in pk.subject
    assert len(pk.sha256) == 64 and pk.owner
    # The authority that verified grub is the db certificate, as EFI_SIGNATURE_DATA.
    db_fps = {c.sha256 for c in facts.db.certificates}
    assert any(a.certificate and a.certificate.sha256 in db_fps for a in facts.authorities)


@pytest.mark.parametrize(
    ("name", "bootloader", "cmdline"),
    [
        (
            "go-tpm-tools/eventlogs/arch-linux-workstation.bin",
            "systemd-boot",
            "initrd=\\intel-ucode.img initrd=\\initramfs-linux-lts.img "
            "cryptdevice=UUID=5465369a-996d-42ca-9ad4-91d0082e0b34:cryptroot "
            "root=/dev/mapper/cryptroot rw intel_iommu=on iommu=pt l1tf=off",
        ),
        (
            "tpm2-tools/event-sd-boot-fedora37.bin",
            "systemd-boot",
            "console=ttyS0 console=tty0 efi=debug",
        ),
        (
            "go-tpm-tools/eventlogs/ubuntu-1804-amd-sev.bin",
            "grub",
            "/boot/vmlinuz-5.4.0-1046-gcp root=LABEL=cloudimg-rootfs ro console=ttyS0",
        ),
        ("go-tpm-tools/eventlogs/glinux-alex.bin", None, None),
    ],
)
def test_bootloader_and_cmdline(name: str, bootloader: str | None, cmdline: str | None) -> None:
    facts = _facts(name)
    assert facts.bootloader == bootloader
    assert set(facts.kernel_cmdlines) == ({cmdline} if cmdline else set())


def test_linux_efi_stub_initrd_tag() -> None:
    facts = _facts("tpm2-tools/event-sd-boot-fedora37.bin")
    assert [f.path for f in facts.initrds] == ["linux-efi-stub:initrd"]
    assert facts.kernel_cmdlines == ("console=ttyS0 console=tty0 efi=debug",) * 2


@pytest.mark.parametrize(
    ("name", "versions"),
    [
        ("go-tpm-tools/eventlogs/cos-101-amd-sev.bin", ("GCE Virtual Firmware v1",)),
        ("tpm2-tss/binary_measurements_hcrtm.bin", ("Dhyana2.05.43.29.0003",)),
        ("go-tpm-tools/eventlogs/glinux-alex.bin", ("hex:1efb6b540c1d5540a4ad4ef4bf17b83a",)),
        ("keylime/mb_log.bin", ("",)),
        ("tpm2-tools/event.bin", ()),
    ],
)
def test_firmware_versions(name: str, versions: tuple[str, ...]) -> None:
    assert _facts(name).firmware_versions == versions


def test_firmware_blobs() -> None:
    facts = _facts("python3-uefi-eventlog/thinkpad__p511.bin")
    assert len(facts.firmware_blobs) == 5
    assert all(b.description_hint is None for b in facts.firmware_blobs)


def test_only_verified_pcrs_give_facts() -> None:
    name = "swtpm-rsa-sha1sha256-loc0/eventlog.bin"
    full = _facts(name)
    without_7 = _facts(name, "sha256", set(range(24)) - {7})
    assert without_7.secure_boot is None and without_7.db is None and not without_7.authorities
    assert without_7.boot_applications == full.boot_applications
    without_8 = _facts(name, "sha256", set(range(24)) - {8})
    assert without_8.kernel_cmdlines == () and without_8.bootloader is None
    assert without_8.kernels == ()  # the kernel path came from a PCR8 command
    assert _facts(name, "sha256", set()).boot_applications == ()


def test_tampered_data_is_not_a_fact() -> None:
    base = vectors_dir("tpm", "swtpm-rsa-sha1sha256-loc0", "variants")
    tampered = parse_event_log((base / "event-data-tampered" / "eventlog.bin").read_bytes())
    facts = extract_boot_facts(tampered, "sha256", verified_pcrs=range(24))
    assert facts.kernel_cmdlines == ()  # the altered PCR8 string does not hash to its digest
    retyped = parse_event_log((base / "event-type-tampered" / "eventlog.bin").read_bytes())
    facts = extract_boot_facts(retyped, "sha256", verified_pcrs=range(24))
    assert len(facts.boot_applications) == 2  # grub's event no longer claims to be one


def test_post_separator_variable_is_not_the_secure_boot_state() -> None:
    base = vectors_dir("tpm", "swtpm-rsa-sha256sha384-hcrtm-sboff", "variants")
    log = parse_event_log((base / "post-separator-injection" / "eventlog.bin").read_bytes())
    last = log.events[-1]
    assert last.pcr == 7 and last.event_type == Ev.EV_EFI_VARIABLE_DRIVER_CONFIG
    assert parse_uefi_variable(last.data).value == b"\x01"  # the forged "enabled"
    assert extract_boot_facts(log, "sha256", verified_pcrs=range(24)).secure_boot == "disabled"


def test_json_is_canonical_and_complete() -> None:
    facts = _facts("go-tpm-tools/eventlogs/cos-101-amd-sev.bin")
    text = facts.to_json()
    assert text == _facts("go-tpm-tools/eventlogs/cos-101-amd-sev.bin").to_json()
    doc = json.loads(text)
    assert doc == json.loads(json.dumps(facts.to_dict()))
    assert doc["secure_boot"] == "enabled" and doc["bank"] == "sha256"
    assert doc["pk"]["certificates"][0]["sha256"] == facts.pk.certificates[0].sha256  # type: ignore[union-attr]
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.secure_boot = "disabled"  # type: ignore[misc]


def test_unknown_bank_is_refused() -> None:
    with pytest.raises(ValueError, match="no sha384"):
        extract_boot_facts(_read_log("tpm2-tools/event-bootorder.bin"), "sha384", verified_pcrs=[0])


# --- Parsers: encoders here, round trips, and what they refuse --------------------


def _guid(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


def encode_variable(variable: UefiVariable) -> bytes:
    name = variable.name.encode("utf-16-le")
    header = _guid(variable.guid) + struct.pack("<QQ", len(name) // 2, len(variable.value))
    return header + name + variable.value


def encode_signature_lists(entries: list[SignatureEntry]) -> bytes:
    """One EFI_SIGNATURE_LIST per run of entries sharing a type and a size."""
    out = b""
    i = 0
    while i < len(entries):
        run = [entries[i]]
        while (
            i + len(run) < len(entries)
            and entries[i + len(run)].signature_type == run[0].signature_type
            and len(entries[i + len(run)].data) == len(run[0].data)
        ):
            run.append(entries[i + len(run)])
        size = 16 + len(run[0].data)
        body = b"".join(_guid(e.owner) + e.data for e in run)
        out += _guid(run[0].signature_type) + struct.pack("<III", 28 + len(body), 0, size) + body
        i += len(run)
    return out


guids = st.uuids().map(str)
names = st.text(
    st.characters(codec="utf-16", exclude_characters="\x00", exclude_categories=["Cs"]),
    max_size=20,
)


@given(st.builds(UefiVariable, guid=guids, name=names, value=st.binary(max_size=200)))
def test_variable_round_trip(variable: UefiVariable) -> None:
    assert parse_uefi_variable(encode_variable(variable)) == variable


entries = st.one_of(
    st.builds(SignatureEntry, st.just(EFI_CERT_SHA256), guids, st.binary(min_size=32, max_size=32)),
    st.builds(SignatureEntry, st.just(EFI_CERT_X509), guids, st.binary(min_size=1, max_size=64)),
    st.builds(SignatureEntry, guids, guids, st.binary(min_size=1, max_size=40)),
)


@given(st.lists(entries, max_size=8))
def test_signature_list_round_trip(values: list[SignatureEntry]) -> None:
    assert list(parse_signature_lists(encode_signature_lists(values))) == values


@pytest.mark.parametrize("entry", PARSED, ids=[e["file"] for e in PARSED])
def test_real_variables_reencode_exactly(entry: dict[str, Any]) -> None:
    for event in _read_log(entry["file"]).events:
        if event.event_type in (Ev.EV_EFI_VARIABLE_DRIVER_CONFIG, Ev.EV_EFI_VARIABLE_BOOT):
            assert encode_variable(parse_uefi_variable(event.data)) == event.data


def _sha256_list(count: int, size: int = 48) -> bytes:
    return (
        _guid(EFI_CERT_SHA256)
        + struct.pack("<III", 28 + count * size, 0, size)
        + bytes(count * size)
    )


@pytest.mark.parametrize(
    ("parser", "data", "code"),
    [
        (parse_uefi_variable, bytes(31), "truncated"),
        (parse_uefi_variable, bytes(16) + struct.pack("<QQ", 2**63, 0), "truncated"),
        (parse_uefi_variable, bytes(16) + struct.pack("<QQ", 0, 2**64 - 1), "truncated"),
        (parse_uefi_variable, bytes(16) + struct.pack("<QQ", 0, 1) + b"ab", "malformed"),
        (parse_uefi_variable, bytes(16) + struct.pack("<QQ", 1, 0) + b"\x00\xd8", "malformed"),
        (parse_uefi_variable, bytes(16) + struct.pack("<QQ", 2, 0) + b"a\x00\x00\x00", None),
        (parse_signature_lists, _sha256_list(2)[:-1], "truncated"),
        (parse_signature_lists, _sha256_list(1, size=40), "malformed"),
        (parse_signature_lists, _sha256_list(0, size=16), "malformed"),
        (parse_signature_lists, _sha256_list(1) + b"\x00", "truncated"),
        (efi_events.parse_gpt_data, b"EFI PART" + bytes(92), "malformed"),
        (efi_events.parse_gpt_data, b"NOT PART" + bytes(92), "bad_magic"),
        (
            efi_events.parse_image_load_path,
            struct.pack("<QQQQ", 0, 0, 0, 9) + bytes(8),
            "malformed",
        ),
        (
            efi_events.parse_image_load_path,
            struct.pack("<QQQQ", 0, 0, 0, 4) + b"\x04\x04\x02\x00",
            "malformed",
        ),
        (efi_events.parse_firmware_blob, bytes(17), "malformed"),
        (efi_events.parse_firmware_blob2, b"\x02\xff\xfe" + bytes(16), "malformed"),
        (efi_events.parse_grub_string, b"grub_cmd: ls", "malformed"),
        (efi_events.parse_grub_string, b"linux /vmlinuz\x00", "unknown"),
        (efi_events.decode_utf16_text, b"a\x00b", "malformed"),
    ],
)
def test_parsers_refuse(parser: Any, data: bytes, code: str | None) -> None:
    if code is None:  # a UnicodeNameLength that counts the NUL is accepted
        assert parser(data).name == "a"
        return
    with pytest.raises(ParseError) as info:
        parser(data)
    assert info.value.code == code


def test_image_load_path_joins_file_nodes() -> None:
    def node(text: str) -> bytes:
        raw = (text + "\x00").encode("utf-16-le")
        return struct.pack("<BBH", 4, 4, 4 + len(raw)) + raw

    path = node("\\EFI\\boot") + node("grubx64.efi") + b"\x7f\xff\x04\x00"
    data = struct.pack("<QQQQ", 1, 2, 3, len(path)) + path
    assert efi_events.parse_image_load_path(data) == "\\EFI\\boot\\grubx64.efi"


def test_sha256_fingerprint_is_of_the_der() -> None:
    facts = _facts("swtpm-ecc-sha256-loc3/eventlog.bin")
    log = _read_log("swtpm-ecc-sha256-loc3/eventlog.bin")
    pk_event = next(
        e for e in log.events if e.pcr == 7 and parse_uefi_variable(e.data).name == "PK"
    )
    (entry,) = parse_signature_lists(parse_uefi_variable(pk_event.data).value)
    assert facts.pk is not None
    assert facts.pk.certificates[0].sha256 == hashlib.sha256(entry.data).hexdigest()
    assert efi_variables.format_guid(_guid(EFI_CERT_X509)) == EFI_CERT_X509


def test_only_the_first_secure_boot_variable_counts() -> None:
    log = _read_log("swtpm-rsa-sha1sha256-loc0/eventlog.bin")
    events = list(log.events)
    i = next(n for n, e in enumerate(events) if e.event_type == Ev.EV_EFI_VARIABLE_DRIVER_CONFIG)

    def with_value(value: bytes) -> Any:
        data = events[i].data[:-1] + value
        digests = {b: hashlib.new(b, data).digest() for b in events[i].digests}
        return dataclasses.replace(events[i], data=data, digests=digests)

    # An unreadable first value, then a second "enabled": the repeat must not count.
    events[i : i + 1] = [with_value(b"\x02"), with_value(b"\x01")]
    renumbered = tuple(dataclasses.replace(e, index=n) for n, e in enumerate(events))
    facts = extract_boot_facts(
        dataclasses.replace(log, events=renumbered), "sha256", verified_pcrs=range(24)
    )
    assert facts.secure_boot is None
