"""The IMA bulk paths agree with the one-entry-at-a-time code they speed up.

Parsing (ASCII and binary), replay, replay_until_quote and appraisal each have a
bulk path (column-wise, C-level loops) and fall back to the per-entry code for
anything the bulk path does not cover. The references are that per-entry code,
driven the way the modules drove it before the bulk paths existed
(``tests/fuzz/fuzz_ima.py``); every comparison includes offsets, error codes and
messages. Generated lists mix every template, PCR, digest algorithm, violations of
both kernel conventions, names of any bytes, and one-byte corruptions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_ima import (
    appraise_one_by_one,
    ascii_one_by_one,
    binary_one_by_one,
    outcome,
    replay_one_by_one,
)
from verifier.evidence.tpm import ima_ascii
from verifier.evidence.tpm.ima import HASH_SIZES, ImaEntry, new_entry, parse_binary
from verifier.evidence.tpm.ima_ascii import parse_ascii
from verifier.evidence.tpm.ima_encode import build_entry, encode_ascii, encode_binary
from verifier.evidence.tpm.ima_policy import appraise_ima, load_runtime_policy
from verifier.evidence.tpm.ima_replay import (
    ImaReplayError,
    ImaReplayState,
    replay_entries,
    replay_until_quote,
    start_state,
)

_DIGEST_ALGS = ["sha256", "sha256", "sha1", "sha512", "md5", "sm3", "sha3-256", "weird_alg-1"]
_TEMPLATES = ["ima-ng", "ima-ng", "ima-ng", "ima-sig", "ima-buf", "ima"]
_PCRS = [10, 10, 10, 10, 0, 9, 11, 23]


# --- generated entries and lists ------------------------------------------------------


@st.composite
def _entry(
    draw: st.DrawFn, index: int, *, byte_order: Any = "little", hash_size: int = 20
) -> ImaEntry:
    template = draw(st.sampled_from(_TEMPLATES))
    violation = draw(st.integers(0, 9)) == 0
    alg = "sha1" if template == "ima" else draw(st.sampled_from(_DIGEST_ALGS))
    size = HASH_SIZES.get(alg, draw(st.integers(0, 64)))
    digest = draw(st.binary(min_size=size, max_size=size))
    if violation and template != "ima" and draw(st.booleans()):
        digest = bytes(20)  # kernels before 5.18: 20 zero bytes whatever the algorithm
    name = draw(st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\0" not in b))
    entry = build_entry(
        index,
        draw(st.sampled_from(_PCRS)),
        bytes(hash_size),
        template,
        digest_alg=alg,
        digest=digest,
        name=name[:255].decode("utf-8", "surrogateescape"),
        signature=draw(st.binary(max_size=12)) if template == "ima-sig" else None,
        buffer=draw(st.binary(max_size=12)) if template == "ima-buf" else None,
        byte_order=byte_order,
    )
    if violation:
        return entry
    hashed = hashlib.new("sha1" if hash_size == 20 else "sha256", entry.hashed_data()).digest()
    return dataclasses.replace(entry, template_hash=hashed)


@st.composite
def _entries(draw: st.DrawFn, *, byte_order: Any = "little", hash_size: int = 20) -> list[ImaEntry]:
    count = draw(st.integers(0, 14))
    # Mostly one shape, as real lists are: repeat a drawn entry with other names.
    first = [draw(_entry(i, byte_order=byte_order, hash_size=hash_size)) for i in range(count)]
    if count and draw(st.booleans()):
        base = first[0]
        first = [
            dataclasses.replace(first[i] if i % 4 == 3 else base, index=i) for i in range(count)
        ]
    return first


def _mutate(draw: st.DrawFn, raw: bytes, alphabet: bytes) -> bytes:
    if not raw or draw(st.integers(0, 2)) != 0:
        return raw
    at = draw(st.integers(0, len(raw) - 1))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return raw[:at] + bytes([draw(st.sampled_from(alphabet))]) + raw[at + 1 :]
    if kind == 1:
        return raw[:at] + raw[at + 1 :]
    if kind == 2:
        return raw[:at] + bytes([draw(st.sampled_from(alphabet))]) + raw[at:]
    return raw[:at]


_ASCII_NOISE = b" 0123456789abcdefABCDEF:-_\n\0\t\xff\xc3imangsh"


@st.composite
def _ascii_lists(draw: st.DrawFn) -> tuple[bytes, str]:
    hash_alg = draw(st.sampled_from(["sha1", "sha1", "sha256"]))
    entries = draw(_entries(hash_size=20 if hash_alg == "sha1" else 32))
    raw = encode_ascii(entries)
    return _mutate(draw, raw, _ASCII_NOISE), hash_alg


# --- ASCII ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    drawn=_ascii_lists(),
    chunk=st.sampled_from([1, 2, 3, 2048]),
    order=st.sampled_from(["little", "big"]),
)
def test_ascii_bulk_equals_line_by_line(drawn: tuple[bytes, str], chunk: int, order: Any) -> None:
    raw, hash_alg = drawn
    args = {"template_hash_alg": hash_alg, "first_index": 3, "byte_order": order}
    with mock.patch.object(ima_ascii, "_CHUNK", chunk):
        assert outcome(lambda: parse_ascii(raw, **args)) == outcome(
            lambda: ascii_one_by_one(raw, **args)
        )


def _long_ascii(count: int) -> list[bytes]:
    entries = []
    for i in range(count):
        name = f"/usr/lib/x{i}.so" if i % 97 else f"/odd name {i}\xff"
        entry = build_entry(
            i,
            10,
            b"",
            "ima-ng",
            digest_alg="sha256",
            digest=hashlib.sha256(name.encode()).digest(),
            name=name,
        )
        entries.append(
            dataclasses.replace(entry, template_hash=hashlib.sha1(entry.template_data).digest())
        )
    return encode_ascii(entries).splitlines(keepends=True)


_BAD_LINES = {
    "uppercase hash": lambda line: line[:3] + line[3:10].upper() + line[10:],
    "short digest": lambda line: line.replace(b"sha256:", b"sha256:0", 1),
    "unknown template": lambda line: line.replace(b"ima-ng", b"ima-xy", 1),
    "NUL in name": lambda line: line[:-2] + b"\0\n",
    "other algorithm": lambda line: line.replace(b"sha256:", b"sha1:", 1)[:-40] + b" /p\n",
    "violation, old kernel": lambda line: (
        b"10 " + b"0" * 40 + b" ima-ng sha256:" + b"0" * 40 + b" /v\n"
    ),
    "ima-buf": lambda line: line[:44] + b"ima-buf sha256:" + b"a" * 64 + b" kexec-cmdline 6869\n",
    "PCR 11": lambda line: b"11" + line[2:],
}


@pytest.mark.parametrize("change", sorted(_BAD_LINES))
@pytest.mark.parametrize("where", [0, 1, 2046, 2047, 2048, 2049, 4095, 4999])
def test_long_list_with_one_odd_line(change: str, where: int) -> None:
    # Lines in several bulk chunks: an odd line (an error or another shape) anywhere.
    lines = _long_ascii(5000)
    lines[where] = _BAD_LINES[change](lines[where])
    raw = b"".join(lines)
    assert outcome(lambda: parse_ascii(raw, first_index=7)) == outcome(
        lambda: ascii_one_by_one(raw, first_index=7)
    )


def test_long_list_errors_name_the_first_bad_line() -> None:
    lines = _long_ascii(5000)
    lines[3000] = b"garbage\n"
    lines[4000] = lines[4000].upper()
    raw = b"".join(lines)
    result = outcome(lambda: parse_ascii(raw))
    assert result == outcome(lambda: ascii_one_by_one(raw))
    assert result[2] == "bad_line"
    assert "entry 3000 at offset" in result[3]


def test_ascii_limits_count_every_line() -> None:
    raw = b"".join(_long_ascii(10))
    with mock.patch.object(ima_ascii, "MAX_ENTRIES", 4):
        result = outcome(lambda: parse_ascii(raw))
    assert result[2] == "too_large"
    assert "entry 4 at offset" in result[3]
    with mock.patch.object(ima_ascii, "MAX_ENTRIES", 10):
        assert len(parse_ascii(raw).entries) == 10
        assert outcome(lambda: parse_ascii(raw + b"1"))[2] == "too_large"
    assert outcome(lambda: parse_ascii(raw + b"1"))[2] == "truncated"


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.binary(max_size=30), max_size=8), sep=st.sampled_from([b"\n", b"\0"]))
def test_joined_names_decode_like_each_name(names: list[bytes], sep: bytes) -> None:
    # What both bulk parsers rely on to decode every name with one call.
    names = [n.replace(sep, b"") for n in names]
    joined = sep.join(names).decode("utf-8", "surrogateescape").split(sep.decode())
    each = [n.decode("utf-8", "surrogateescape") for n in names]
    assert joined == (each or [""])


# --- binary ---------------------------------------------------------------------------

_BINARY_NOISE = bytes(range(0, 256, 7)) + b"\0\xff:ima-ng"


@settings(max_examples=300, deadline=None)
@given(data=st.data(), order=st.sampled_from(["little", "big"]))
def test_binary_bulk_equals_entry_by_entry(data: st.DataObject, order: Any) -> None:
    hash_alg = data.draw(st.sampled_from(["sha1", "sha1", "sha256"]))
    entries = data.draw(_entries(byte_order=order, hash_size=20 if hash_alg == "sha1" else 32))
    raw = data.draw(st.just(encode_binary(entries, byte_order=order)))
    raw = _mutate(data.draw, raw, _BINARY_NOISE)
    args = {"template_hash_alg": hash_alg, "first_index": 2}
    assert outcome(lambda: parse_binary(raw, **args)) == outcome(
        lambda: binary_one_by_one(raw, **args)
    )


@pytest.mark.parametrize("where", [0, 1, 500, 1998, 1999])
@pytest.mark.parametrize("change", ["flip", "name_nul", "truncate", "other_alg"])
def test_long_binary_list_with_one_odd_entry(where: int, change: str) -> None:
    lines = _long_ascii(2000)
    entries = list(parse_ascii(b"".join(lines)).entries)
    target = entries[where]
    if change == "other_alg":
        entries[where] = build_entry(
            where,
            10,
            target.template_hash,
            "ima-ng",
            digest_alg="sha1",
            digest=bytes(20),
            name="/x",
        )
    raw = bytearray(encode_binary(entries))
    start = parse_binary(bytes(raw)).entries[where].offset
    if change == "flip":
        raw[start + 40] ^= 0x10  # inside the d-ng field's length or label
    elif change == "name_nul":
        raw[start + len(encode_binary([entries[where]])) - 3] = 0
    elif change == "truncate":
        del raw[start + 30 :]
    raw_bytes = bytes(raw)
    assert outcome(lambda: parse_binary(raw_bytes)) == outcome(lambda: binary_one_by_one(raw_bytes))


# --- replay ---------------------------------------------------------------------------


@st.composite
def _replay_case(draw: st.DrawFn) -> tuple[Any, ...]:
    hash_alg = draw(st.sampled_from(["sha1", "sha1", "sha256"]))
    size = 20 if hash_alg == "sha1" else 32
    start = draw(st.sampled_from([0, 0, 5]))
    entries: list[ImaEntry] = []
    one_pcr = draw(st.integers(0, 3)) != 0  # what the bulk path takes; else one by one
    for i in range(draw(st.integers(0, 10))):
        entry = draw(_entry(start + i, hash_size=size))
        if one_pcr:
            entry = dataclasses.replace(entry, pcr=10)
        kind = draw(st.integers(0, 19))
        if kind == 0:  # a log that lies
            entry = dataclasses.replace(entry, template_hash=b"\x01" * size)
        elif kind == 1:  # all zero, of another size: a violation all the same
            entry = dataclasses.replace(
                entry, template_hash=bytes(draw(st.sampled_from([0, 20, 32])))
            )
        elif kind == 2:  # out of order
            entry = dataclasses.replace(entry, index=entry.index + draw(st.sampled_from([-1, 1])))
        entries.append(entry)
    banks = draw(
        st.sampled_from([("sha1",), ("sha256",), ("sha1", "sha256"), ("sha384", "sha256")])
    )
    if start:
        values = {b: {10: hashlib.new(b, b"before").digest()} for b in banks}
        state = ImaReplayState(start, values)
    else:
        state = start_state(banks)
    return hash_alg, state, entries, banks


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_replay_case(), data=st.data())
def test_replay_bulk_equals_entry_by_entry(case: tuple[Any, ...], data: st.DataObject) -> None:
    hash_alg, state, entries, banks = case
    full = outcome(lambda: replay_entries(state, entries, template_hash_alg=hash_alg))
    assert full == outcome(lambda: replay_one_by_one(state, entries, template_hash_alg=hash_alg))
    # Quote the state after some prefix (or a value no prefix reaches).
    cut = data.draw(st.integers(0, len(entries)))
    prefix = outcome(lambda: replay_one_by_one(state, entries[:cut], template_hash_alg=hash_alg))
    if prefix[0] == "ok":
        quoted_banks = data.draw(st.lists(st.sampled_from(banks), min_size=1, unique=True))
        quoted = {b: {10: prefix[1].value(b)} for b in quoted_banks}
        if data.draw(st.booleans()):
            quoted[quoted_banks[0]][11] = prefix[1].value(quoted_banks[0], 11)
    else:
        quoted = {banks[0]: {10: hashlib.new(banks[0], b"nothing").digest()}}
    until = outcome(lambda: replay_until_quote(state, entries, quoted, template_hash_alg=hash_alg))
    expected = outcome(
        lambda: replay_one_by_one(state, entries, quoted, template_hash_alg=hash_alg)
    )
    if expected == ("ok", None):
        assert until[:3] == ("error", "ImaReplayError", "pcr_mismatch")
    else:
        assert until == expected


def test_replay_until_quote_message_after_bulk_replay() -> None:
    lines = _long_ascii(300)
    entries = parse_ascii(b"".join(lines)).entries
    quoted = {"sha256": {10: b"\x07" * 32}}
    with pytest.raises(ImaReplayError) as info:
        replay_until_quote(start_state(["sha1", "sha256"]), entries, quoted)
    end = replay_entries(start_state(["sha1", "sha256"]), entries)
    assert str(info.value) == (
        "no prefix of entries 0..299 matches the quote (sha256 PCR10: replayed "
        f"{end.value('sha256').hex()} quoted {'07' * 32})"
    )


# --- appraisal ------------------------------------------------------------------------

_PATHS = ["/usr/bin/a", "/usr/bin/b", "/tmp/x", "boot_aggregate", ".ima", "kexec-cmdline"]


@st.composite
def _appraise_case(draw: st.DrawFn) -> list[ImaEntry]:
    entries = []
    for i in range(draw(st.integers(0, 12))):
        template = draw(st.sampled_from([*_TEMPLATES, "my-tmpl"]))
        if template == "my-tmpl":
            entries.append(ImaEntry(i, 10, b"\x01" * 20, template, b"", None, None, None))
            continue
        alg = "sha1" if template == "ima" else draw(st.sampled_from(["sha256", "sha1"]))
        digest = bytes([draw(st.integers(0, 2))]) * HASH_SIZES[alg]
        name = draw(st.sampled_from(_PATHS))
        buffer = bytes([draw(st.integers(0, 2))]) if template == "ima-buf" else None
        if buffer is not None and draw(st.booleans()):
            digest = hashlib.new(alg, buffer).digest()
        entry = build_entry(
            i,
            10,
            b"\x02" * 20,
            template,
            digest_alg=alg,
            digest=digest,
            name=name,
            signature=b"\x03\x02" if template == "ima-sig" else None,
            buffer=buffer,
        )
        if draw(st.integers(0, 5)) == 0:
            entry = dataclasses.replace(entry, template_hash=bytes(20))
        entries.append(entry)
    return entries


_POLICY = load_runtime_policy(
    json.dumps(
        {
            "version": 1,
            "digests": {
                "/usr/bin/a": ["sha256:" + "00" * 32, "sha1:" + "01" * 20],
                "/usr/bin/b": ["sha256:" + "01" * 32],
                "boot_aggregate": ["sha256:" + "02" * 32],
            },
            "excludes": ["/tmp/.*"],
            "keyrings": {".ima": ["sha256:" + "00" * 32]},
            "buffers": {"kexec-cmdline": ["sha1:" + "01" * 20]},
        }
    )
)


@settings(max_examples=400, deadline=None)
@given(entries=_appraise_case())
def test_appraise_fast_path_equals_each_finding(entries: list[ImaEntry]) -> None:
    assert appraise_ima(entries, _POLICY) == appraise_one_by_one(entries, _POLICY)
    assert appraise_ima(iter(entries), _POLICY) == appraise_ima(tuple(entries), _POLICY)


# --- entries built without the dataclass __init__ -------------------------------------


def test_new_entry_is_an_ordinary_frozen_entry() -> None:
    fields = (1, 10, b"h" * 20, "ima-ng", b"data", "sha256", b"d" * 32, "/bin/x", None, None, 7)
    fast, slow = new_entry(*fields), ImaEntry(*fields)
    assert type(fast) is ImaEntry
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert repr(fast) == repr(slow)
    assert dataclasses.astuple(fast) == fields
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.pcr = 11  # type: ignore[misc]
    for entry in (fast, slow):  # Python 3.11's slots dataclasses raise TypeError here
        with pytest.raises((AttributeError, TypeError)):
            entry.extra = 1  # type: ignore[attr-defined]
    assert dataclasses.replace(fast, pcr=11).pcr == 11
    assert not hasattr(fast, "__dict__")
