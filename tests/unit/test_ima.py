"""IMA measurement lists: parsing, replay and boot_aggregate against the shared vectors.

Sources of truth (tpm/PROVENANCE.md, "IMA" table and notes): the swtpm sets' PCR10
read from the TPM after the quote; elsewhere the self-replay values in
``manifest.json`` (computed by an independent parser); the ima-evm-utils pairs for
the two boot_aggregate rules. Then one-mutation tables, round trips (hypothesis) and
the incremental-replay contract.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vectors import TPM_SWTPM_SETS, read_pcrs_json, vectors_dir
from tests.vectors import testvectors_root as _vectors_root
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.eventlog import parse_event_log
from verifier.evidence.tpm.ima import ByteOrder, ImaEntry, ImaList, parse_binary
from verifier.evidence.tpm.ima_ascii import parse_ascii
from verifier.evidence.tpm.ima_encode import build_entry, encode_ascii, encode_binary
from verifier.evidence.tpm.ima_replay import (
    ImaReplayError,
    ImaReplayState,
    check_boot_aggregate,
    replay_entries,
    replay_ima,
    replay_until_quote,
    start_state,
)
from verifier.evidence.tpm.replay import replay

BANKS = ("sha1", "sha256", "sha384")


def _manifest_ima() -> list[dict[str, Any]]:
    path = _vectors_root() / "tpm" / "manifest.json"
    if not path.exists():
        return []
    logs: list[dict[str, Any]] = json.loads(path.read_text())["ima_logs"]
    return logs


IMA_LOGS = _manifest_ima()
PARSED = [e for e in IMA_LOGS if "parse_error" not in e]
# keylime's sm3_256/unknown fixtures carry 32-byte template hashes (a list exported
# per bank); every other list has the kernel's SHA-1 template hashes.
PER_BANK = {"keylime/ima/ima-log-sm3_256", "keylime/ima/ima-log-unknown"}


def _read(name: str) -> bytes:
    return vectors_dir("tpm", *name.split("/")).read_bytes()


def _template_hash_alg(name: str) -> str:
    return "sha256" if name in PER_BANK else "sha1"


def _parse(name: str, fmt: str) -> ImaList:
    parser = parse_ascii if fmt == "ascii" else parse_binary
    return parser(_read(name), template_hash_alg=_template_hash_alg(name))


@functools.cache
def _swtpm(name: str, fmt: str) -> tuple[ImaList, dict[str, dict[int, bytes]]]:
    base = vectors_dir("tpm", name)
    raw = (base / "ima" / f"{fmt}_runtime_measurements").read_bytes()
    parsed = parse_ascii(raw) if fmt == "ascii" else parse_binary(raw)
    return parsed, read_pcrs_json(base / "pcrs.json")


# --- every list in the vectors ------------------------------------------------------


@pytest.mark.parametrize("entry", PARSED, ids=lambda e: e["file"])
def test_every_list_parses(entry: dict[str, Any]) -> None:
    parsed = _parse(entry["file"], entry["format"])
    assert len(parsed.entries) == entry["entries"]
    assert sum(e.is_violation for e in parsed.entries) == entry["violations"]
    assert {e.template_name for e in parsed.entries} == set(entry["templates"])
    assert parsed.byte_order == "little"
    if entry["first_entry"]:
        first = parsed.entries[0]
        assert f"{first.digest_alg}:{(first.digest or b'').hex()}" == entry["first_entry"][0]
        assert first.name == entry["first_entry"][1]


@pytest.mark.parametrize(
    "entry", [e for e in IMA_LOGS if "parse_error" in e], ids=lambda e: e["file"]
)
def test_malformed_lists_are_rejected(entry: dict[str, Any]) -> None:
    # tpm2-tss' sml-* fixtures end with garbage the kernel never writes.
    with pytest.raises(ParseError) as info:
        _parse(entry["file"], entry["format"])
    assert info.value.code == "truncated"
    assert "entry" in str(info.value)


def test_tpm2_tss_lists_parse_once_the_garbage_is_cut() -> None:
    expected = json.loads(_read("tpm2-tss/sml-ima.expected.json"))["files"]
    for name, info in expected.items():
        if "template_hashes" not in info:
            continue
        raw = _read(f"tpm2-tss/{name}")[: -info["trailing_garbage_bytes"]]
        parsed = parse_binary(raw)
        assert [e.template_hash.hex() for e in parsed.entries] == info["template_hashes"]
        assert {e.template_name for e in parsed.entries} == {info["template"].split(" ")[0]}
        # Replay checks SHA-1(template data) == template hash for every entry; the
        # legacy 'ima' template hashes its name padded to 256 bytes.
        assert replay_ima(parsed.entries, banks=BANKS).count == info["entries"]


@pytest.mark.parametrize("entry", PARSED, ids=lambda e: e["file"])
def test_replay_equals_manifest(entry: dict[str, Any]) -> None:
    parsed = _parse(entry["file"], entry["format"])
    alg = _template_hash_alg(entry["file"])
    if entry["template_hash_problems"]:
        # "entry 1: template hash != sha1(template data)": the log lies.
        with pytest.raises(ImaReplayError) as info:
            replay_ima(parsed.entries, banks=BANKS, template_hash_alg=alg)
        assert info.value.code == "template_hash_mismatch"
        assert str(info.value).startswith("entry 1 ")
        return
    state = replay_ima(parsed.entries, banks=BANKS, template_hash_alg=alg)
    expected = entry["computed_pcr10_self_replay"]
    assert {bank: state.value(bank).hex() for bank in BANKS} == expected
    assert state.count == entry["entries"]


@pytest.mark.parametrize("fmt", ["ascii", "binary"])
@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_swtpm_replay_equals_tpm_pcr10(name: str, fmt: str) -> None:
    parsed, pcrs = _swtpm(name, fmt)
    state = replay_ima(parsed.entries, banks=pcrs)
    for bank, values in pcrs.items():
        assert state.value(bank, 10) == values[10], bank
    quoted = {bank: {10: values[10]} for bank, values in pcrs.items()}
    assert replay_until_quote(start_state(pcrs), parsed.entries, quoted).count == 6


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_ascii_and_binary_give_the_same_entries(name: str) -> None:
    ascii_list, _ = _swtpm(name, "ascii")
    binary_list, _ = _swtpm(name, "binary")
    assert ascii_list.entries == binary_list.entries
    assert [e.offset for e in ascii_list.entries] != [e.offset for e in binary_list.entries]


@pytest.mark.parametrize("entry", PARSED, ids=lambda e: e["file"])
def test_real_lists_round_trip(entry: dict[str, Any]) -> None:
    raw = _read(entry["file"])
    parsed = _parse(entry["file"], entry["format"])
    if entry["format"] == "ascii":
        assert encode_ascii(parsed.entries) == raw
    else:
        assert encode_binary(parsed.entries, byte_order=parsed.byte_order) == raw


# --- swtpm broken variants ----------------------------------------------------------


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_variant_tampered_entry_is_named(name: str) -> None:
    raw = _read(f"{name}/variants/ima-entry-tampered/ima/ascii_runtime_measurements")
    parsed = parse_ascii(raw)
    with pytest.raises(ImaReplayError) as info:
        replay_ima(parsed.entries, banks=("sha256",))
    assert info.value.code == "template_hash_mismatch"
    # expected.json counts lines from 1 ("IMA entry 3 (/usr/bin/sh)"); indices start at 0.
    assert "entry 2 ('/usr/bin/sh')" in str(info.value)


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_variant_truncated_list_does_not_reach_the_quote(name: str) -> None:
    raw = _read(f"{name}/variants/ima-truncated/ima/ascii_runtime_measurements")
    _, pcrs = _swtpm(name, "ascii")
    quoted = {bank: {10: values[10]} for bank, values in pcrs.items()}
    with pytest.raises(ImaReplayError) as info:
        replay_until_quote(start_state(pcrs), parse_ascii(raw).entries, quoted)
    assert info.value.code == "pcr_mismatch"


# --- boot_aggregate -----------------------------------------------------------------


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_swtpm_boot_aggregate_is_pcr0_9(name: str) -> None:
    parsed, pcrs = _swtpm(name, "binary")
    expected = json.loads(_read(f"{name}/expected.json"))["ima"]
    assert expected["boot_aggregate_rule"] == "sha256 bank PCR0-9"
    assert check_boot_aggregate(parsed.entries[0], pcrs["sha256"], "sha256") == "pcr0-9"
    # Dropping PCR8/9 leaves only the PCR0-7 rule, which does not match.
    pcr0_7 = {i: v for i, v in pcrs["sha256"].items() if i < 8}
    with pytest.raises(ImaReplayError) as info:
        check_boot_aggregate(parsed.entries[0], pcr0_7, "sha256")
    assert info.value.code == "boot_aggregate_mismatch"


def _replayed_boot_pcrs(log_name: str, bank: str) -> dict[int, bytes]:
    pcrs = replay(parse_event_log(_read(log_name)), bank=bank)
    zero = bytes(hashlib.new(bank).digest_size)
    return {i: pcrs.get(i, zero) for i in range(10)}


@pytest.mark.parametrize(
    ("log", "ima", "rule"),
    [
        (
            "sample-binary_bios_measurements-pcrs-8-9",
            "sample-ascii_runtime_measurements-pcrs-8-9",
            "pcr0-9",
        ),
        ("test_binary_bios_measurements", "test_ascii_runtime_measurements", "pcr0-7"),
    ],
)
def test_ima_evm_utils_boot_aggregate_rules(log: str, ima: str, rule: str) -> None:
    # Both rules occur in real kernels: PCR0-7 before Linux 5.8, PCR0-9 after.
    first = parse_ascii(_read(f"ima-evm-utils/{ima}")).entries[0]
    pcrs = _replayed_boot_pcrs(f"ima-evm-utils/{log}", "sha256")
    assert check_boot_aggregate(first, pcrs, "sha256") == rule
    with pytest.raises(ImaReplayError) as info:
        check_boot_aggregate(first, pcrs, "sha1")
    assert info.value.code == "boot_aggregate_bank"
    changed = {**pcrs, 0: bytes(32)}
    with pytest.raises(ImaReplayError) as info:
        check_boot_aggregate(first, changed, "sha256")
    assert info.value.code == "boot_aggregate_mismatch"


def test_ima_evm_utils_pcr10_belongs_to_a_longer_list() -> None:
    # PROVENANCE: the sample's PCR10 was read with the full list, not this 1-line file.
    parsed = parse_ascii(_read("ima-evm-utils/sample-ascii_runtime_measurements-pcrs-8-9"))
    pcrs = read_pcrs_json(
        vectors_dir("tpm", "ima-evm-utils", "sample-binary_bios_measurements-pcrs-8-9.pcrs.json")
    )
    with pytest.raises(ImaReplayError) as info:
        replay_until_quote(start_state(["sha1"]), parsed.entries, {"sha1": {10: pcrs["sha1"][10]}})
    assert info.value.code == "pcr_mismatch"


def test_zero_boot_aggregate_means_no_tpm() -> None:
    first = parse_ascii(_read("rust-keylime/ascii_runtime_measurements")).entries[0]
    pcrs = {i: bytes(20) for i in range(10)}
    with pytest.raises(ImaReplayError) as info:
        check_boot_aggregate(first, pcrs, "sha1")
    assert info.value.code == "boot_aggregate_no_tpm"


def test_boot_aggregate_must_be_entry_zero() -> None:
    parsed, pcrs = _swtpm(TPM_SWTPM_SETS[0], "binary")
    for entry in (parsed.entries[1], replace(parsed.entries[0], index=1)):
        with pytest.raises(ImaReplayError) as info:
            check_boot_aggregate(entry, pcrs["sha256"], "sha256")
        assert info.value.code == "boot_aggregate_missing"


# --- incremental replay -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ascii", "binary"])
@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_incremental_equals_full_at_every_split(name: str, fmt: str) -> None:
    parsed, pcrs = _swtpm(name, fmt)
    raw = encode_ascii(parsed.entries) if fmt == "ascii" else encode_binary(parsed.entries)
    full = replay_ima(parsed.entries, banks=pcrs)
    offsets = [e.offset for e in parsed.entries] + [len(raw)]
    parser = parse_ascii if fmt == "ascii" else parse_binary
    for k, cut in enumerate(offsets):
        # The agent sends the bytes after the last accepted entry; the verifier
        # parses them with their absolute index and continues its stored state.
        head = replay_ima(parser(raw[:cut]).entries, banks=pcrs)
        tail = parser(raw[cut:], first_index=k).entries
        assert replay_entries(head, tail) == full


def test_incremental_equals_full_on_a_long_real_list() -> None:
    entries = parse_ascii(_read("rust-keylime/ascii_runtime_measurements")).entries
    full = replay_ima(entries, banks=("sha1", "sha256"))
    state = start_state(("sha1", "sha256"))
    for k in range(len(entries) + 1):
        assert replay_entries(state, entries[k:]) == full
        if k < len(entries):
            state = replay_entries(state, entries[k : k + 1])
    assert state == full


def test_incremental_refuses_gaps_and_overlaps() -> None:
    parsed, pcrs = _swtpm(TPM_SWTPM_SETS[0], "binary")
    head = replay_ima(parsed.entries[:3], banks=pcrs)
    for chunk in (parsed.entries[4:], parsed.entries[2:]):
        with pytest.raises(ImaReplayError) as info:
            replay_entries(head, chunk)
        assert info.value.code == "out_of_order"
    # Entries parsed without their absolute index do not continue a state either.
    raw = encode_binary(parsed.entries[3:])
    with pytest.raises(ImaReplayError):
        replay_entries(head, parse_binary(raw).entries)
    assert replay_entries(head, parse_binary(raw, first_index=3).entries).count == 6


def test_replay_until_quote_stops_at_the_quoted_prefix() -> None:
    parsed, pcrs = _swtpm(TPM_SWTPM_SETS[0], "binary")
    quoted = {bank: {10: values[10]} for bank, values in pcrs.items()}
    # The list grew after the quote: two more measurements.
    extra = [_entry(6, "/usr/bin/later"), _entry(7, "/usr/bin/later2")]
    state = replay_until_quote(start_state(pcrs), [*parsed.entries, *extra], quoted)
    assert state.count == 6
    # The next round continues from there with the entries not yet accepted.
    later = replay_entries(state, extra)
    assert later.count == 8
    assert replay_until_quote(later, [], {b: {10: later.value(b)} for b in pcrs}) == later


# --- one-mutation tables ------------------------------------------------------------


def _swtpm_binary() -> bytes:
    return _read(f"{TPM_SWTPM_SETS[0]}/ima/binary_runtime_measurements")


def test_flipped_template_hash_byte_is_named() -> None:
    raw = bytearray(_swtpm_binary())
    parsed = parse_binary(bytes(raw))
    for entry in parsed.entries:
        if entry.is_violation:
            continue
        mutated = bytearray(raw)
        mutated[entry.offset + 4 + 7] ^= 0x01
        with pytest.raises(ImaReplayError) as info:
            replay_ima(parse_binary(bytes(mutated)).entries, banks=("sha1",))
        assert info.value.code == "template_hash_mismatch"
        assert str(info.value).startswith(f"entry {entry.index} ")


def test_flipped_path_byte_is_named() -> None:
    parsed = parse_binary(_swtpm_binary())
    entry = parsed.entries[2]
    raw = bytearray(_swtpm_binary())
    name_at = entry.offset + len(encode_binary([entry])) - 2  # last path byte before NUL
    raw[name_at] ^= 0x01
    with pytest.raises(ImaReplayError) as info:
        replay_ima(parse_binary(bytes(raw)).entries, banks=("sha256",))
    assert info.value.code == "template_hash_mismatch"
    assert "entry 2 " in str(info.value)


def test_every_truncation_is_an_error_or_a_prefix() -> None:
    raw = _swtpm_binary()
    parsed = parse_binary(raw)
    boundaries = {e.offset: e.index for e in parsed.entries}
    for n in range(len(raw)):
        if n in boundaries:
            assert parse_binary(raw[:n]).entries == parsed.entries[: boundaries[n]]
            continue
        with pytest.raises(ParseError) as info:
            parse_binary(raw[:n])
        assert info.value.code in {"truncated", "bad_field"}, n


def _u32_at(raw: bytes, at: int, delta: int) -> bytes:
    (value,) = struct.unpack_from("<I", raw, at)
    return raw[:at] + struct.pack("<I", (value + delta) % 2**32) + raw[at + 4 :]


@pytest.mark.parametrize(
    ("where", "delta", "code"),
    [
        ("pcr", 14, "bad_pcr"),  # PCR 24
        ("name_len", 1, "too_large"),  # "ima-ng6": the data length shifts by a byte
        ("name_len", -1, "truncated"),  # "ima-n", then "g6\0\0" as the data length
        ("name_len", 2**31, "malformed"),
        ("data_len", 1, "bad_field"),  # eats the next entry's first byte
        ("data_len", -1, "bad_field"),
        ("data_len", 2**31, "too_large"),
        ("field_len", 1, "bad_field"),
        ("field_len", -1, "bad_field"),
        ("field_len", 2**31, "bad_field"),
    ],
)
def test_wrong_length_fields(where: str, delta: int, code: str) -> None:
    raw = _swtpm_binary()
    entry = parse_binary(raw).entries[1]
    name_at = entry.offset + 24
    at = {
        "pcr": entry.offset,
        "name_len": name_at,
        "data_len": name_at + 4 + len("ima-ng"),
        "field_len": name_at + 4 + len("ima-ng") + 4,
    }[where]
    with pytest.raises(ParseError) as info:
        parse_binary(_u32_at(raw, at, delta))
    assert info.value.code == code
    assert "entry 1 at offset" in str(info.value) or "entry 2 at offset" in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda raw: raw + b"\x00", "truncated"),
        (lambda raw: raw[:-1], "truncated"),
        (lambda raw: raw.replace(b"sha256:\x00", b"sha256;\x00", 1), "bad_field"),
        (lambda raw: raw.replace(b"boot_aggregate\x00", b"boot\x00aggregate", 1), "bad_field"),
        (lambda raw: raw.replace(b"ima-ng", b"ima-n\x01", 1), "malformed"),
        (lambda raw: b"\xff" * 4 + raw[4:], "bad_pcr"),
        # Name length reads the same both ways and is too big; the PCR fits neither.
        (
            lambda raw: b"\x01\x02\x03\x04" + raw[4:24] + b"\x01\x00\x00\x01" + raw[28:],
            "byte_order",
        ),
    ],
    ids=["trailing", "short", "no-alg-sep", "nul-in-name", "unprintable", "pcr", "order"],
)
def test_binary_one_mutation(mutate: Any, code: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_binary(mutate(_swtpm_binary()))
    assert info.value.code == code


_ASCII_LINE = (
    b"10 986833fe9c184aa35e8272ed92d5e88b8645ea2b ima-ng sha256:" + b"ab" * 32 + b" /init\n"
)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (_ASCII_LINE[:-1], "truncated"),
        (b"\n" + _ASCII_LINE, "bad_line"),
        (_ASCII_LINE.replace(b"986833fe", b"986833FE"), "bad_line"),
        (_ASCII_LINE.replace(b"986833fe", b"986833f"), "bad_line"),
        (_ASCII_LINE.replace(b"sha256:ab", b"sha256:a b"), "bad_line"),
        (_ASCII_LINE.replace(b"sha256:", b"sha256-"), "bad_line"),
        (_ASCII_LINE.replace(b"sha256:" + b"ab" * 32, b"sha256:" + b"ab" * 31), "bad_line"),
        (_ASCII_LINE.replace(b"ima-ng", b"ima-xx"), "unknown_template"),
        (b"24" + _ASCII_LINE[2:], "bad_line"),
        (b"0" + _ASCII_LINE[1:], "bad_line"),
        (b"9" + _ASCII_LINE[2:], "bad_line"),
        (_ASCII_LINE.replace(b" /init", b"/init"), "bad_line"),
        (_ASCII_LINE.replace(b"ima-ng sha256:" + b"ab" * 32 + b" /init", b"ima-sig x"), "bad_line"),
    ],
)
def test_ascii_one_mutation(raw: bytes, code: str) -> None:
    parse_ascii(_ASCII_LINE)  # the unmutated line is valid
    with pytest.raises(ParseError) as info:
        parse_ascii(raw)
    assert info.value.code == code
    assert "entry 0 at offset 0" in str(info.value)


def test_ascii_single_digit_pcr_is_printed_as_the_kernel_does() -> None:
    line = b" 9" + _ASCII_LINE[2:]
    (entry,) = parse_ascii(line).entries
    assert entry.pcr == 9
    assert encode_ascii([entry]) == line


def test_unknown_template_is_kept_raw_and_still_replays() -> None:
    data = b"\x04\x00\x00\x00abcd"
    entry = ImaEntry(0, 10, hashlib.sha1(data).digest(), "my-tmpl", data, None, None, None)
    raw = encode_binary([entry])
    (parsed,) = parse_binary(raw).entries
    assert parsed == entry
    assert (
        replay_ima([parsed], banks=("sha256",)).value("sha256")
        == hashlib.sha256(bytes(32) + hashlib.sha256(data).digest()).digest()
    )
    with pytest.raises(ValueError, match="no ASCII form"):
        encode_ascii([parsed])


def test_violation_extends_ff() -> None:
    parsed, _ = _swtpm(TPM_SWTPM_SETS[0], "binary")
    violation = parsed.entries[4]
    assert violation.is_violation
    state = replay_entries(replay_ima(parsed.entries[:4], banks=("sha384",)), [violation])
    before = replay_ima(parsed.entries[:4], banks=("sha384",)).value("sha384")
    assert state.value("sha384") == hashlib.sha384(before + b"\xff" * 48).digest()


# --- byte order ---------------------------------------------------------------------


def _entry(
    index: int, name: str, *, byte_order: Any = "little", template: str = "ima-ng"
) -> ImaEntry:
    alg = "sha1" if template == "ima" else "sha256"
    digest = hashlib.new(alg, name.encode()).digest()
    draft = build_entry(
        index,
        10,
        bytes(20),
        template,
        digest_alg=alg,
        digest=digest,
        name=name,
        signature=b"" if template == "ima-sig" else None,
        byte_order=byte_order,
    )
    return replace(draft, template_hash=hashlib.sha1(draft.hashed_data()).digest())


def test_big_endian_list_is_detected() -> None:
    # A big-endian host without ima_canonical_fmt writes every u32 big-endian, the
    # field lengths the template hash covers included.
    templates = ("ima-ng", "ima-sig", "ima")
    entries = [
        _entry(i, f"/bin/x{i}", byte_order="big", template=t) for i, t in enumerate(templates)
    ]
    raw = encode_binary(entries, byte_order="big")
    parsed = parse_binary(raw)
    assert parsed.byte_order == "big"
    assert parsed.entries == tuple(entries)
    assert replay_ima(parsed.entries, banks=("sha1",)).count == 3
    assert parse_ascii(encode_ascii(entries), byte_order="big").entries == tuple(entries)
    little = parse_binary(encode_binary([_entry(0, "/bin/x")]))
    assert little.byte_order == "little"


# --- round trips (hypothesis) -------------------------------------------------------

_names = st.binary(min_size=1, max_size=300).filter(lambda b: b"\0" not in b and b"\n" not in b)
_algs = st.sampled_from(["sha1", "sha256", "sha384", "sha512", "sm3", "md5", "weird_alg-1"])


@st.composite
def _entries(draw: st.DrawFn) -> tuple[Any, list[ImaEntry]]:
    byte_order: ByteOrder = draw(st.sampled_from(["little", "big"]))
    out: list[ImaEntry] = []
    for index in range(draw(st.integers(0, 6))):
        template = draw(st.sampled_from(["ima", "ima-ng", "ima-sig", "ima-buf"]))
        alg = "sha1" if template == "ima" else draw(_algs)
        size = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64, "sm3": 32, "md5": 16}
        digest = draw(st.binary(min_size=size.get(alg, 0), max_size=size.get(alg, 64)))
        name = draw(_names)
        if template == "ima":
            name = name[:255]
        entry = build_entry(
            index,
            draw(st.integers(0, 23)),
            bytes(20),
            template,
            digest_alg=alg,
            digest=digest,
            name=name.decode("utf-8", "surrogateescape"),
            signature=draw(st.binary(max_size=80)) if template == "ima-sig" else None,
            buffer=draw(st.binary(max_size=80)) if template == "ima-buf" else None,
            byte_order=byte_order,
        )
        violation = draw(st.booleans())
        th = bytes(20) if violation else hashlib.sha1(entry.hashed_data()).digest()
        out.append(replace(entry, template_hash=th))
    return byte_order, out


@settings(max_examples=300, deadline=None)
@given(drawn=_entries())
def test_binary_round_trip(drawn: tuple[Any, list[ImaEntry]]) -> None:
    order, entries = drawn
    raw = encode_binary(entries, byte_order=order)
    parsed = parse_binary(raw, byte_order=order)
    assert parsed.entries == tuple(entries)
    assert encode_binary(parsed.entries, byte_order=order) == raw
    replay_ima(parsed.entries, banks=("sha1", "sha256"))  # hashes are consistent


@settings(max_examples=300, deadline=None)
@given(drawn=_entries())
def test_ascii_round_trip(drawn: tuple[Any, list[ImaEntry]]) -> None:
    order, entries = drawn
    raw = encode_ascii(entries)
    parsed = parse_ascii(raw, byte_order=order)
    assert parsed.entries == tuple(entries)
    assert encode_ascii(parsed.entries) == raw


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.binary(max_size=64), max_size=5),
    name=st.text(alphabet="abcdefghij-|", min_size=1, max_size=20).filter(
        lambda n: n not in ("ima", "ima-ng", "ima-sig", "ima-buf")
    ),
)
def test_unknown_template_round_trip(data: list[bytes], name: str) -> None:
    entries = [
        ImaEntry(i, 10, hashlib.sha1(d).digest(), name, d, None, None, None)
        for i, d in enumerate(data)
    ]
    assert parse_binary(encode_binary(entries)).entries == tuple(entries)


def test_limits_are_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    from verifier.evidence.tpm import ima  # noqa: PLC0415 - patched below

    raw = _swtpm_binary()
    monkeypatch.setattr(ima, "MAX_ENTRIES", 5)
    with pytest.raises(ParseError) as info:
        parse_binary(raw)
    assert info.value.code == "too_large"
    monkeypatch.setattr(ima, "MAX_LIST_SIZE", len(raw) - 1)
    with pytest.raises(ParseError) as info:
        parse_binary(raw)
    assert info.value.code == "too_large"


def test_unsupported_banks_and_arguments() -> None:
    with pytest.raises(ImaReplayError) as info:
        start_state(["md4-bank"])
    assert info.value.code == "unsupported_bank"
    with pytest.raises(ImaReplayError):
        start_state([])
    with pytest.raises(ParseError) as perr:
        parse_binary(b"", template_hash_alg="md5")
    assert perr.value.code == "bad_argument"
    assert parse_binary(b"").entries == ()
    assert parse_ascii(b"").entries == ()


def test_vectors_root_exists_or_skips() -> None:
    assert isinstance(vectors_dir("tpm"), Path)


def test_state_round_trips_through_plain_data() -> None:
    # What a verifier stores per host: the count and the running values per bank.
    parsed, pcrs = _swtpm(TPM_SWTPM_SETS[0], "binary")
    state = replay_ima(parsed.entries[:3], banks=pcrs)
    stored = json.dumps(
        {b: {str(p): v.hex() for p, v in vs.items()} for b, vs in state.pcrs.items()}
    )
    values = {
        b: {int(p): bytes.fromhex(v) for p, v in vs.items()} for b, vs in json.loads(stored).items()
    }
    restored = ImaReplayState(state.count, values)
    assert restored == state
    assert replay_entries(restored, parsed.entries[3:]) == replay_ima(parsed.entries, banks=pcrs)


@pytest.mark.parametrize(
    ("count", "pcrs"),
    [
        (-1, {"sha1": {}}),
        (0, {}),
        (1, {"sha1": {10: bytes(32)}}),
        (1, {"sha1": {24: bytes(20)}}),
        (1, {"md4-bank": {}}),
    ],
)
def test_bad_states_are_refused(count: int, pcrs: dict[str, dict[int, bytes]]) -> None:
    with pytest.raises(ImaReplayError) as info:
        ImaReplayState(count, pcrs)
    assert info.value.code in {"bad_state", "unsupported_bank"}
