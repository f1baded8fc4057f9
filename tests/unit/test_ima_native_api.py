"""The C IMA module's own functions (``verifier/evidence/tpm/native/``): argument
checks, the digest index, the choices of path that keep its results equal to
Python's. The comparisons over evidence are in test_ima_native.py."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.unit.test_ima_native import _C, _both, _hashed, _lines, _native_required
from verifier.evidence.tpm.ima import ImaEntry
from verifier.evidence.tpm.ima_encode import build_entry
from verifier.evidence.tpm.ima_policy import appraise_ima_full, load_runtime_policy
from verifier.evidence.tpm.ima_replay import replay_ima, replay_until_quote, start_state

__all__ = ["_native_required"]  # the autouse fixture: fails or skips without the module


# --- the raw C functions refuse bad arguments -----------------------------------------


class _Plain:
    index = pcr = template_hash = template_name = template_data = digest_alg = None
    digest = name = signature = buffer = offset = None


class _MissingOffset:
    __slots__ = ("buffer", "digest", "digest_alg", "index", "name", "pcr", "signature")
    __slots__ += ("template_data", "template_hash", "template_name")


class _SubEntry(ImaEntry):
    __slots__ = ()


@pytest.mark.parametrize("entry_type", [object, _Plain, _MissingOffset, _SubEntry, int])
def test_ascii_entries_refuses_other_types(entry_type: type) -> None:
    with pytest.raises((TypeError, ValueError)):
        _C.ascii_entries(_lines(2), 20, 0, True, 10, entry_type)


def test_ascii_entries_refuses_bad_arguments() -> None:
    raw = _lines(2)
    assert len(_C.ascii_entries(raw, 20, 0, True, 10, ImaEntry)) == 2
    # Indices a C integer cannot hold are declined (the Python parser takes them).
    assert _C.ascii_entries(raw, 20, -1, True, 10, ImaEntry) is None
    assert _C.ascii_entries(raw, 20, sys.maxsize, True, 10, ImaEntry) is None
    for args in [(raw, 0, 0, True, 10), (raw, 65, 0, True, 10)]:
        with pytest.raises(ValueError):
            _C.ascii_entries(*args, ImaEntry)
    for args in [(raw.decode(), 20, 0, True, 10, ImaEntry), (raw, 20, 0, True, 10, "ImaEntry")]:
        with pytest.raises(TypeError):
            _C.ascii_entries(*args)


def test_extend_matches_hashlib_and_refuses_bad_arguments() -> None:
    items, value = [b"a", b"bc", b""], bytes(32)
    for at in range(3):
        value = hashlib.sha256(value + (b"\xff" * 32 if at == 1 else items[at])).digest()
    assert _C.extend("sha256", bytes(32), items, False, (1,), value) == (value, [3])
    assert _C.extend("sha256", bytes(32), items, False, (), None)[1] == []
    bad: list[tuple[type[Exception], tuple[Any, ...]]] = [
        (ValueError, ("sha256", bytes(20), items, True, (), None)),
        (ValueError, ("sha256", bytes(32), items, True, (2, 1), None)),
        (ValueError, ("sha256", bytes(32), items, True, (1, 1), None)),
        (ValueError, ("sha256", bytes(32), items, True, (3,), None)),
        (ValueError, ("sha256", bytes(32), items, True, (-1,), None)),
        (ValueError, ("sha256", bytes(32), items, True, (), bytes(20))),
        (ValueError, ("sha256", bytes(32), items, True, (), "00" * 32)),
        (ValueError, ("md5", bytes(16), items, True, (), None)),
        (TypeError, ("sha256", bytes(32), [b"a", "b"], True, (), None)),
        (TypeError, ("sha256", bytes(32), set(items), True, (), None)),
        (TypeError, ("sha256", bytes(32), items, True, [1], None)),
        # Only exact ints: an __index__ could run code that changes the items.
        (ValueError, ("sha256", bytes(32), items, True, ("1",), None)),
        (ValueError, ("sha256", bytes(32), items, True, (True,), None)),
    ]
    # A tuple of items is walked like the list.
    as_list = _C.extend("sha256", bytes(32), items, True, (), None)
    assert _C.extend("sha256", bytes(32), tuple(items), True, (), None) == as_list
    for error, args in bad:
        with pytest.raises(error):
            _C.extend(*args)


def test_chunk_declines_other_items() -> None:
    good = [
        _hashed(build_entry(0, 10, b"", "ima-ng", digest_alg="sha1", digest=bytes(20), name="a"))
    ]
    assert _C.chunk(good, 0, "sha1", ImaEntry) is not None
    for entries in ([object()], [good[0], 1], [None], [], [_SubEntry.__new__(_SubEntry)]):
        assert _C.chunk(entries, 0, "sha1", ImaEntry) is None
    assert _C.chunk([ImaEntry.__new__(ImaEntry)], 0, "sha1", ImaEntry) is None  # unset slots
    with pytest.raises(TypeError):
        _C.chunk(iter(good), 0, "sha1", ImaEntry)
    with pytest.raises(ValueError):
        _C.chunk(good, 0, "md5", ImaEntry)


def test_chunk_runs_match_extend_and_refuse_bad_specs() -> None:
    entries = [
        _hashed(build_entry(i, 10, b"", "ima-ng", digest_alg="sha1", digest=bytes(20), name="a"))
        for i in range(5)
    ]
    hashed = [e.template_data for e in entries]
    want, _ = _C.extend("sha256", bytes(32), hashed, True, (), None)
    middle, _ = _C.extend("sha256", bytes(32), hashed[:3], True, (), None)
    runs = (("sha256", bytes(32), False, middle), ("sha1", bytes(20), True, None))
    *_, finished = _C.chunk(entries, 0, "sha1", ImaEntry, runs)
    assert finished[0] == (want, [3])
    logged = [e.template_hash for e in entries]
    assert finished[1] == _C.extend("sha1", bytes(20), logged, False, (), None)
    bad: list[tuple[type[Exception], Any]] = [
        (TypeError, (("sha256", bytes(32), False),)),  # three fields
        (TypeError, [("sha256", bytes(32), False, None)]),  # a list, not a tuple
        (ValueError, (("md5", bytes(16), False, None),)),  # not a native bank
        (ValueError, (("sha256", bytes(20), False, None),)),  # value of another size
        (ValueError, (("sha256", bytes(32), 1, None),)),  # logged not a bool
        (ValueError, (("sha256", bytes(32), False, bytearray(32)),)),  # target not bytes
        (ValueError, (("sha1", bytes(20), True, None),) * 9),  # more banks than TPMs have
    ]
    for error, run_specs in bad:
        with pytest.raises(error):
            _C.chunk(entries, 0, "sha1", ImaEntry, run_specs)


def test_unallowed_other_entries_are_not_allowed() -> None:
    entry = _hashed(
        build_entry(0, 10, b"", "ima-ng", digest_alg="sha1", digest=bytes(20), name="a")
    )
    digests = {"a": frozenset({("sha1", bytes(20))})}
    index = _C.digest_index(digests)
    assert _C.unallowed([entry], index, ImaEntry) == []
    assert _C.unallowed([object(), entry, _Plain(), None], index, ImaEntry) == [0, 2, 3]
    assert _C.unallowed([ImaEntry.__new__(ImaEntry)], index, ImaEntry) == [0]
    with pytest.raises(TypeError):
        _C.unallowed(iter([entry]), index, ImaEntry)
    # Only a digest index: a mapping's lookups would run Python code mid-walk.
    with pytest.raises(TypeError):
        _C.unallowed([entry], digests, ImaEntry)
    with pytest.raises(ValueError):  # another capsule
        _C.unallowed([entry], _other_capsule(), ImaEntry)


def _other_capsule() -> object:
    import datetime  # noqa: PLC0415 - its C API capsule: a capsule of another name

    return datetime.datetime_CAPI


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False, capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip


@pytest.mark.parametrize(("setting", "active"), [("0", "False"), ("1", "True")])
def test_environment_switch(setting: str, active: str) -> None:
    code = "from verifier.evidence.tpm import ima_native; print(ima_native.active())"
    done = _python(code, WEIGHTGATE_IMA_NATIVE=setting)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == active


def _file_entry(name: str, digest: bytes, alg: str = "sha256") -> ImaEntry:
    entry = build_entry(0, 10, b"", "ima-ng", digest_alg=alg, digest=digest, name=name)
    return _hashed(entry)


def test_digest_index_agrees_with_the_mapping() -> None:
    digests = {
        "/bin/a": frozenset({("sha256", b"\1" * 32), ("sha1", b"\2" * 20)}),
        "/usr/ünï": frozenset({("sha256", b"\3" * 32)}),
        "/odd \udcff": frozenset({("sha256", b"\4" * 32)}),  # does not encode: left out
        "": frozenset({("sha256", b"\5" * 32)}),
    }
    index = _C.digest_index(digests)
    assert index is not None
    probes = [
        _file_entry("/bin/a", b"\1" * 32),
        _file_entry("/bin/a", b"\2" * 20, "sha1"),
        _file_entry("/bin/a", b"\2" * 32),  # another digest
        _file_entry("/bin/a", b"\1" * 32, "sha512"),  # another algorithm
        _file_entry("/bin/b", b"\1" * 32),  # another path
        _file_entry("/usr/ünï", b"\3" * 32),
        _file_entry("/odd \udcff", b"\4" * 32),  # the Python appraisal takes it
        _file_entry("", b"\5" * 32),
    ]
    by_mapping = [
        at
        for at, e in enumerate(probes)
        if (e.digest_alg, e.digest) not in digests.get(e.name or "", frozenset())
    ]
    assert by_mapping == [2, 3, 4]
    assert _C.unallowed(probes, index, ImaEntry) == [2, 3, 4, 6]  # 6: left to Python
    policy = load_runtime_policy(
        json.dumps({"version": 1, "digests": {"/odd \udcff": ["sha256:" + "04" * 32]}})
    )
    assert policy.digest_index is not None
    assert appraise_ima_full([probes[6]], policy).reasons == ()  # allowed, by Python


@pytest.mark.parametrize(
    "digests",
    [
        {1: frozenset({("sha256", b"")})},  # a key that is not a str
        {"a": {("sha256", b"")}},  # a set, not a frozenset
        {"a": frozenset({("sha256", memoryview(b"x"))})},  # a digest that is not bytes
        {"a": frozenset({("sha256", b"", 1)})},  # not a pair
        {"a": frozenset({("\udcff", b"")})},  # an algorithm that does not encode
    ],
)
def test_digest_index_declines_other_mappings(digests: dict[Any, Any]) -> None:
    assert _C.digest_index(digests) is None
    with pytest.raises(TypeError):
        _C.digest_index(5)


def test_policy_index_follows_replace() -> None:
    policy = load_runtime_policy(
        json.dumps({"version": 1, "digests": {"/a": ["sha256:" + "01" * 32]}})
    )
    entry = _file_entry("/b", b"\1" * 32)
    assert appraise_ima_full([entry], policy).reasons != ()
    moved = dataclasses.replace(policy, digests={"/b": frozenset({("sha256", b"\1" * 32)})})
    assert moved.digest_index is not policy.digest_index
    assert appraise_ima_full([entry], moved).reasons == ()


def test_quoted_values_python_compares_otherwise_take_the_python_path() -> None:
    import ctypes  # noqa: PLC0415 - only here: a memoryview of another format

    entry = _hashed(
        build_entry(0, 10, b"", "ima-ng", digest_alg="sha1", digest=bytes(20), name="a")
    )
    value = replay_ima([entry], banks=["sha1"]).value("sha1")
    view = memoryview((ctypes.c_ubyte * 20).from_buffer_copy(value))
    assert view == value and view.format != "B"
    for quoted_value in (value, bytearray(value), view):
        quoted = {"sha1": {10: quoted_value}}
        native, python = _both(
            lambda q=quoted: replay_until_quote(start_state(["sha1"]), [entry], q)
        )
        assert native == python, type(quoted_value)
        assert native[0] == "ok"


def test_unallowed_leaves_the_collector_as_it_found_it() -> None:
    import gc  # noqa: PLC0415

    entry = _hashed(
        build_entry(0, 10, b"", "ima-ng", digest_alg="sha1", digest=bytes(20), name="a")
    )
    index = _C.digest_index({"a": frozenset({("sha1", bytes(20))})})
    gc.disable()
    try:
        assert _C.unallowed([entry, object()], index, ImaEntry) == [1]
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert _C.unallowed([entry, object()], index, ImaEntry) == [1]
    assert gc.isenabled()
