"""The C IMA path (``verifier/evidence/tpm/native/``) gives exactly what the Python path gives.

Every comparison runs the public function twice: as shipped (C active) and with
``ima_native._module`` patched to None (the pure-Python reference), and compares the
:func:`~tests.fuzz.fuzz_ima.outcome` of each: entries with their offsets, states, or
the error's type, code and message. ``ascii_entries`` may decline a list (None), never
accept one the Python parser rejects nor build another entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_ima import outcome
from tests.vectors import vectors_dir
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import ima_ascii, ima_native
from verifier.evidence.tpm.ima import HASH_SIZES, ImaEntry, parse_binary
from verifier.evidence.tpm.ima_ascii import parse_ascii
from verifier.evidence.tpm.ima_encode import build_entry, encode_ascii
from verifier.evidence.tpm.ima_policy import appraise_ima_full, load_runtime_policy
from verifier.evidence.tpm.ima_replay import replay_ima, replay_until_quote, start_state

_C: Any = ima_native._module
_ALLOW_ENV = "WEIGHTGATE_ALLOW_PURE_PYTHON_IMA"
_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _native_required() -> None:
    if ima_native.active():
        return
    if os.environ.get(_ALLOW_ENV) == "1":
        pytest.skip(f"C IMA module not active ({_ALLOW_ENV}=1)")
    pytest.fail(
        "verifier.evidence.tpm._ima_native is not built or is disabled: run "
        "`python setup.py build_ext --inplace` (or set "
        f"{_ALLOW_ENV}=1 to test a pure-Python install)"
    )


@contextmanager
def _python_path() -> Iterator[None]:
    with mock.patch.object(ima_native, "_module", None):
        yield


def _outcome(run: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        return outcome(run)
    except Exception as exc:  # an unexpected error is an outcome to compare
        return ("unexpected", type(exc).__name__, str(exc))


def _both(run: Callable[[], Any]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    native = _outcome(run)
    with _python_path():
        return native, _outcome(run)


def _accepts(raw: bytes, hash_size: int = 20, first_index: int = 0) -> bool:
    args = {"hash_size": hash_size, "first_index": first_index, "byte_order": "little"}
    return ima_native.ascii_entries(raw, **args, max_entries=1000) is not None


def _hashed(entry: ImaEntry, alg: str = "sha1") -> ImaEntry:
    return dataclasses.replace(entry, template_hash=hashlib.new(alg, entry.hashed_data()).digest())


# --- the shared vectors ---------------------------------------------------------------


def _ascii_vectors() -> dict[str, bytes]:
    tpm = vectors_dir("tpm")
    out: dict[str, bytes] = {}
    for item in json.loads((tpm / "manifest.json").read_text())["ima_logs"]:
        raw = (tpm / item["file"]).read_bytes()
        if item["format"] == "ascii":
            out[item["file"]] = raw
            continue
        try:
            parsed = parse_binary(raw)
        except ParseError:
            continue
        out[item["file"] + " (as ASCII)"] = encode_ascii(parsed.entries)
    for extra in ("ima-buf-keyring.txt", "ima-sig-bad-sigsize.txt"):
        out[f"keylime/ima-sig/{extra}"] = (tpm / "keylime" / "ima-sig" / extra).read_bytes()
    return out


_MUST_ACCEPT = (  # real ima-ng, ima-sig and ima-buf lists: the C path must take them
    "rust-keylime/ascii_runtime_measurements",
    "swtpm-rsa-sha1sha256-loc0/ima/ascii_runtime_measurements",
    "keylime/ima-sig/ima-sig-measurements.txt",
    "keylime/ima-sig/ima-buf-keyring.txt",
)


def test_vectors_same_with_and_without_c() -> None:
    vectors = _ascii_vectors()
    assert len(vectors) >= 15
    verdicts: dict[str, bool] = {}
    for name, raw in vectors.items():
        for alg in ("sha1", "sha256"):
            for first_index in (0, 1, 7, 100_000):
                for order in ("little", "big"):
                    args = {"template_hash_alg": alg, "first_index": first_index}
                    native, python = _both(
                        lambda r=raw, a=args, o=order: parse_ascii(r, **a, byte_order=o)
                    )
                    assert native == python, (name, alg, first_index, order)
        verdicts[name] = _accepts(raw)
    print("C accepted:", sorted(n for n, ok in verdicts.items() if ok))
    print("C declined:", sorted(n for n, ok in verdicts.items() if not ok))
    for name in _MUST_ACCEPT:
        assert verdicts[name], f"the C path declines {name}"
    assert sum(verdicts.values()) >= 10, verdicts


@pytest.mark.parametrize("first_index", [-1, 2**63 - 1, 2**63])
def test_first_index_extremes_same(first_index: int) -> None:
    raw = b"".join(_BASES.values())  # several lines: indices first_index, first_index + 1...
    native, python = _both(lambda: parse_ascii(raw, first_index=first_index))
    assert native == python


# --- one mutation of a valid line -----------------------------------------------------

_SIG = bytes.fromhex("030204f3452d230048") + bytes(range(72))


def _line(template: str, alg: str = "sha256", **fields: Any) -> bytes:
    entry = build_entry(
        0, 10, b"", template, digest_alg=alg, digest=bytes(range(1, HASH_SIZES[alg] + 1)),
        name=fields.pop("name", "/usr/bin/true"), **fields,
    )  # fmt: skip
    return encode_ascii([_hashed(entry)])


_BASES = {
    "ima-ng": _line("ima-ng"),
    "ima-ng md5": _line("ima-ng", "md5"),
    "ima-sig signed": _line("ima-sig", signature=_SIG),
    "ima-sig unsigned": _line("ima-sig", name="/usr/bin/unsigned", signature=b""),
    "ima-buf": _line("ima-buf", name="kexec-cmdline", buffer=b"root=/dev/sda1 ro"),
}
_Z40, _Z64 = b"0" * 40, b"0" * 64


def _at_field(n: int, change: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def mutate(line: bytes) -> bytes:
        fields = line[3:-1].split(b" ")
        fields[n] = change(fields[n])
        return line[:3] + b" ".join(fields) + b"\n"

    return mutate


def _set_digest(alg: bytes, hex_digest: bytes) -> Callable[[bytes], bytes]:
    return _at_field(2, lambda _f: alg + b":" + hex_digest)


def _name_edit(change: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def mutate(line: bytes) -> bytes:
        head = line[3:-1].split(b" ", 3)  # hash, template, d-ng, the rest
        name, tail = head[3], b""
        if head[1] != b"ima-ng":
            name, _s, extra = name.rpartition(b" ")
            tail = b" " + extra
        return line[:3] + b" ".join([*head[:3], change(name)]) + tail + b"\n"

    return mutate


_PCR_FORMS = (b" 9", b"09", b"24", b"10", b"23", b" a", b"0 ", b"-1", b"99", b"00", b"  ")


def _violation(line: bytes) -> bytes:
    return line[:3] + _Z40 + line[43:]


_MUTATIONS: dict[str, Callable[[bytes], bytes]] = {
    "none": lambda line: line,
    "uppercase template hash": lambda line: line[:3] + line[3:43].upper() + line[43:],
    "uppercase digest": _at_field(2, lambda f: f[:7] + f[7:].upper()),
    "odd template hash": _at_field(0, lambda f: f[:-1]),
    "odd digest": _at_field(2, lambda f: f[:-1]),
    "template hash too long": _at_field(0, lambda f: f + b"00"),
    "template hash too short": _at_field(0, lambda f: f[:-2]),
    "digest too long": _at_field(2, lambda f: f + b"00"),
    "unknown template": _at_field(1, lambda _f: b"ima-xx"),
    "template ima": _at_field(1, lambda _f: b"ima"),
    "template IMA-NG": _at_field(1, lambda f: f.upper()),
    "unknown alg": _at_field(2, lambda f: b"sha999" + f[f.index(b":") :]),
    "alg without colon": _at_field(2, lambda f: f.replace(b":", b"")),
    "empty alg": _at_field(2, lambda f: f[f.index(b":") :]),
    "sha1 alg, long digest": _at_field(2, lambda f: b"sha1" + f[f.index(b":") :]),
    "sha512 alg, short digest": _at_field(2, lambda f: b"sha512" + f[f.index(b":") :]),
    "violation": _violation,
    "violation, 20 zero bytes": lambda line: _set_digest(b"sha256", _Z40)(_violation(line)),
    "violation, zero sha256": lambda line: _set_digest(b"sha256", _Z64)(_violation(line)),
    "20 zero bytes, no violation": _set_digest(b"sha256", _Z40),
    "NUL in name": _name_edit(lambda n: n + b"\0x"),
    "NUL ending name": _name_edit(lambda n: n + b"\0"),
    "invalid UTF-8 in name": _name_edit(lambda n: n + b"\xff\xfe\xc3"),
    "surrogate bytes in name": _name_edit(lambda n: n + b"\xed\xb2\x80"),
    "space in name": _name_edit(lambda n: b"a b " + n),
    "spaces only name": _name_edit(lambda _n: b"   "),
    "empty name": _name_edit(lambda _n: b""),
    "newline in name": _name_edit(lambda n: n + b"\n" + n),
    "CR in name": _name_edit(lambda n: n + b"\r"),
    "CR before newline": lambda line: line[:-1] + b"\r\n",
    "tab for space": lambda line: line[:43] + b"\t" + line[44:],
    "trailing space": lambda line: line[:-1] + b" \n",
    "odd last hex": lambda line: line[:-1] + b"a\n",
    "uppercase last hex": lambda line: line[:-1] + b"AB\n",
    "last hex not hex": lambda line: line[:-1] + b"zz\n",
    "missing space before name": _at_field(2, lambda f: f + b"/"),
    "double space after PCR": lambda line: line[:3] + b" " + line[3:],
    "double space after hash": lambda line: line[:43] + b" " + line[43:],
    "double space after template": _at_field(1, lambda f: f + b" "),
    "no space after template": _at_field(1, lambda f: f + b"x"),
    "empty line": lambda line: b"\n",
    "leading newline": lambda line: b"\n" + line,
    "truncated line": lambda line: line[:20] + b"\n",
    "PCR only": lambda line: line[:3] + b"\n",
    **{f"PCR {pcr!r}": (lambda line, p=pcr: p + line[2:]) for pcr in _PCR_FORMS},
}


@pytest.mark.parametrize("mutation", list(_MUTATIONS))
@pytest.mark.parametrize("base", list(_BASES))
def test_one_mutation_same(base: str, mutation: str) -> None:
    line = _MUTATIONS[mutation](_BASES[base])
    raw = _BASES["ima-ng"] + line + _BASES["ima-sig unsigned"]  # the odd line in the middle
    for first_index, order in ((0, "little"), (12, "big")):
        args = {"first_index": first_index, "byte_order": order}
        native, python = _both(lambda a=args: parse_ascii(raw, **a))
        assert native == python, (line, native[:4], python[:4])
    if mutation in _VALID:
        assert _accepts(raw), "the C path declines a valid list"


_VALID = ("none", "violation", "violation, zero sha256", "space in name", "empty name")
_VALID += ("CR in name", "invalid UTF-8 in name", "surrogate bytes in name", "PCR b' 9'")


def _lines(count: int) -> bytes:
    return b"".join(_BASES[list(_BASES)[i % len(_BASES)]] for i in range(count))


@pytest.mark.parametrize(
    "raw",
    [b"", b"\n", b"\n\n", _lines(3)[:-1], _lines(3) + b"\n", _lines(2) + b"10", b"\0\n", b" \n"],
)
def test_whole_list_edges_same(raw: bytes) -> None:
    native, python = _both(lambda: parse_ascii(raw, first_index=3))
    assert native == python


@pytest.mark.parametrize("tail", [b"", b"10 trailing"])
@pytest.mark.parametrize("count", [4, 5, 6])
def test_max_entries_boundary_same(count: int, tail: bytes) -> None:
    raw = _lines(count) + tail
    with mock.patch.object(ima_ascii, "MAX_ENTRIES", 5):
        native, python = _both(lambda: parse_ascii(raw))
        assert native == python
        assert native[0] == ("ok" if count <= 5 and not tail else "error")
        if count <= 5 and not tail:
            assert ima_native.ascii_entries(
                raw, hash_size=20, first_index=0, byte_order="little", max_entries=count
            ), "exactly max_entries lines"
            assert (
                ima_native.ascii_entries(
                    raw, hash_size=20, first_index=0, byte_order="little", max_entries=count - 1
                )
                is None
            )


# --- generated lines ------------------------------------------------------------------

_ALGS = [*HASH_SIZES, "sha256", "sha256", "sha1", "sm3_256", "foo", "SHA256", ""]
_NAME_BYTES = st.binary(max_size=12) | st.sampled_from([b"/bin/sh", b"a b", b"\xff", b"x\0", b"\r"])


@st.composite
def _hex(draw: st.DrawFn, size: int) -> bytes:
    text = draw(st.binary(min_size=size, max_size=size)).hex().encode()
    change = draw(st.integers(0, 9))
    if change == 0:
        return text.upper()
    if change == 1:
        return text[:-1]
    if change == 2:
        return text + draw(st.sampled_from([b"0", b"00", b"g", b" "]))
    return text


@st.composite
def _field_line(draw: st.DrawFn, hash_size: int) -> bytes:
    pcr = draw(st.sampled_from([b"10", b"10", b" 9", b"23", b"24", b"09", b" a", b"1"]))
    zero = draw(st.integers(0, 5)) == 0
    template_hash = b"0" * 2 * hash_size if zero else draw(_hex(draw(st.sampled_from([20, 32]))))
    template = draw(st.sampled_from([b"ima-ng", b"ima-sig", b"ima-buf", b"ima", b"ima-x", b""]))
    alg = draw(st.sampled_from(_ALGS))
    size = HASH_SIZES.get(alg, draw(st.integers(0, 33)))
    if draw(st.integers(0, 6)) == 0:
        size = draw(st.sampled_from([16, 20, 32, 48]))
    digest = draw(_hex(size))
    if zero and draw(st.booleans()):
        digest = _Z40
    d_ng = digest if template == b"ima" else alg.encode() + b":" + digest
    fields = [pcr, template_hash, template, d_ng, draw(_NAME_BYTES).replace(b"\n", b"")]
    if template in (b"ima-sig", b"ima-buf") or draw(st.integers(0, 5)) == 0:
        fields.append(draw(_hex(draw(st.integers(0, 8)))))
    seps = [draw(st.sampled_from([b" "] * 12 + [b"  ", b"", b"\t"])) for _ in fields]
    return b"".join(f + s for f, s in zip(fields, seps, strict=True))[:-1] + b"\n"


@_SETTINGS
@given(data=st.data(), hash_alg=st.sampled_from(["sha1", "sha256"]))
def test_generated_lines_same(data: st.DataObject, hash_alg: str) -> None:
    size = 20 if hash_alg == "sha1" else 32
    lines = data.draw(st.lists(_field_line(size), min_size=1, max_size=4))
    raw = b"".join(lines)
    if data.draw(st.integers(0, 9)) == 0:
        raw = raw[:-1]
    order = data.draw(st.sampled_from(["little", "big"]))
    args = {"template_hash_alg": hash_alg, "byte_order": order}
    args["first_index"] = data.draw(st.sampled_from([0, 1, 99]))
    native, python = _both(lambda: parse_ascii(raw, **args))
    assert native == python, (raw, native[:4], python[:4])


# --- generated entry lists: replay and appraisal --------------------------------------

_NAMES = ["boot_aggregate", "/bin/a", "/bin/b", "/tmp/x", ".ima", "kexec-cmdline", "/odd \udcff"]


@st.composite
def _entries(draw: st.DrawFn, hash_alg: str) -> list[ImaEntry]:
    out = []
    for i in range(draw(st.integers(0, 10))):
        template = draw(st.sampled_from(["ima-ng", "ima-ng", "ima-sig", "ima-buf", "ima"]))
        alg = "sha1" if template == "ima" else draw(st.sampled_from(["sha256", "sha1", "md5"]))
        digest = bytes([draw(st.integers(0, 2))]) * HASH_SIZES[alg]
        name = draw(st.sampled_from(_NAMES))
        entry = build_entry(
            i + (draw(st.integers(0, 15)) == 0),  # sometimes not consecutive
            draw(st.sampled_from([10, 10, 10, 10, 11])),
            b"",
            template,
            digest_alg=alg,
            digest=digest,
            name=name,
            signature=b"" if template == "ima-sig" else None,
            buffer=name.encode("utf-8", "surrogateescape") if template == "ima-buf" else None,
            byte_order=draw(st.sampled_from(["little", "big"])),
        )
        kind = draw(st.integers(0, 12))
        size = hashlib.new(hash_alg).digest_size
        if kind == 0:  # a violation
            entry = dataclasses.replace(entry, template_hash=bytes(size))
        elif kind == 1:  # a violation of the other size
            entry = dataclasses.replace(entry, template_hash=bytes(52 - size))
        elif kind == 2:  # a lie
            entry = dataclasses.replace(entry, template_hash=b"\x01" * size)
        else:
            entry = _hashed(entry, hash_alg)
        out.append(entry)
    return out


_BANKS = ("sha1", "sha256", "sha384", "sha512")


@_SETTINGS
@given(data=st.data(), hash_alg=st.sampled_from(["sha1", "sha256"]))
def test_generated_replay_same(data: st.DataObject, hash_alg: str) -> None:
    entries = data.draw(_entries(hash_alg))
    banks = data.draw(st.lists(st.sampled_from(_BANKS), min_size=1, max_size=4, unique=True))
    alg = {"template_hash_alg": hash_alg}
    native, python = _both(lambda: replay_ima(entries, banks=banks, **alg))
    assert native == python
    cut = data.draw(st.integers(0, len(entries)))
    with _python_path():
        prefix = outcome(lambda: replay_ima(entries[:cut], banks=banks, **alg))
    if prefix[0] != "ok":
        return
    quoted: dict[str, dict[int, bytes]] = {}
    for bank in data.draw(st.lists(st.sampled_from(banks), min_size=1, unique=True)):
        value = prefix[1].value(bank)
        if data.draw(st.integers(0, 4)) == 0:  # a wrong target of the right size
            value = hashlib.new(bank, value).digest()
        quoted[bank] = {10: value}
        if data.draw(st.booleans()):
            quoted[bank][11] = prefix[1].value(bank, 11)
    start = data.draw(st.integers(0, cut))
    with _python_path():
        state = outcome(lambda: replay_ima(entries[:start], banks=banks, **alg))
    if state[0] != "ok":
        return
    rest = entries[start:]
    native, python = _both(lambda: replay_until_quote(state[1], rest, quoted, **alg))
    assert native == python, (native, python)


def test_wrong_size_target_same() -> None:
    entry = _hashed(
        build_entry(0, 10, b"", "ima-ng", digest_alg="sha1", digest=bytes(20), name="a")
    )
    quoted = {"sha256": {10: bytes(20)}}  # a SHA-1-sized value quoted for the sha256 bank
    run = lambda: replay_until_quote(start_state(["sha1", "sha256"]), [entry], quoted)  # noqa: E731
    native, python = _both(run)
    assert native == python


@st.composite
def _policy_doc(draw: st.DrawFn) -> dict[str, Any]:
    def digests() -> list[str]:
        algs = st.sampled_from(["sha256", "md5", "sha1", "bare"])
        picks = draw(st.lists(st.tuples(algs, st.integers(0, 2)), min_size=1, max_size=3))
        return [
            ("" if alg == "bare" else alg + ":") + bytes([b]).hex() * HASH_SIZES.get(alg, 32)
            for alg, b in picks
        ]

    doc: dict[str, Any] = {"version": 1, "digests": {"/bin/never": ["00" * 32]}}
    for name in draw(st.lists(st.sampled_from(_NAMES), unique=True)):
        doc["digests"][name] = digests()
    doc["keyrings"] = {".ima": digests()} if draw(st.booleans()) else {}
    doc["buffers"] = {"kexec-cmdline": digests()} if draw(st.booleans()) else {}
    doc["excludes"] = draw(st.sampled_from([[], ["/tmp/.*"], ["/bin/b"]]))
    doc["violations"] = draw(st.sampled_from(["deny", "tolerate"]))
    return doc


@_SETTINGS
@given(data=st.data(), hash_alg=st.sampled_from(["sha1", "sha256"]))
def test_generated_appraisal_same(data: st.DataObject, hash_alg: str) -> None:
    entries = data.draw(_entries(hash_alg))
    policy = load_runtime_policy(json.dumps(data.draw(_policy_doc())))
    native, python = _both(lambda: appraise_ima_full(entries, policy))
    assert native == python
    # The C filter passes over exactly the entries the Python fast path allows, but
    # for names that do not encode to UTF-8, which the digest index leaves to Python.
    skipped = len(entries) - len(ima_native.unallowed(entries, policy.digest_index) or [])
    assert skipped == sum(
        (e.digest_alg, e.digest) in policy.digests.get(e.name or "", frozenset())
        and e.template_name in ("ima", "ima-ng", "ima-sig")
        and any(e.template_hash)
        and _encodes(e.name or "")
        for e in entries
    )


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
