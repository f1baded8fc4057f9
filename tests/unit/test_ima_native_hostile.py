"""The C IMA module against hostile callers: it raises a clean error, never crashes.

The verifier only ever hands it ImaEntry objects, exact bytes and a policy parsed from
JSON, but the functions are reachable from Python, so they must stay memory safe
whatever they are given. A collection can start at any allocation and run finalisers
(Python 3.11), which is how a caller's list can change in the middle of a call: each
case runs in its own interpreter, because a failure here is a segmentation fault.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from verifier.evidence.tpm import ima_native

pytestmark = pytest.mark.skipif(not ima_native.active(), reason="the C module is not built")

_PRELUDE = """
import gc
from verifier.evidence.tpm import _ima_native as C
from verifier.evidence.tpm.ima import ImaEntry, new_entry
FIELDS = ("index", "pcr", "template_hash", "template_name", "template_data", "digest_alg",
          "digest", "name", "signature", "buffer", "offset")
LINE = b"10 " + b"11" * 20 + b" ima-ng sha256:" + b"22" * 32 + b" /bin/sh\\n"

def entries_of(n):
    return [new_entry(i, 10, b"\\x01" * 20, "ima-ng", b"d", "sha256", bytes(32), "/p%d" % i,
                      None, None, 0) for i in range(n)]

def arm(victim):
    # cyclic garbage whose finaliser empties `victim` at the next collection, which
    # threshold 1 makes the next allocation of a tracked object
    class Bomb:
        def __del__(self):
            victim.clear()
    gc.collect()
    gc.set_threshold(1)
    bomb = Bomb()
    bomb.self = bomb
    del bomb

def survive(function, *args):
    # where the collection falls decides whether the list is emptied before the call
    # (a result) or during it (refused); either is fine, a crash is not
    try:
        print("result:", str(function(*args))[:60])
    except RuntimeError as exc:
        print("refused:", exc)

def expect(error, call):
    try:
        call()
    except error as exc:
        print("refused:", type(exc).__name__, exc)
    else:
        raise SystemExit("accepted")
"""

_CASES = {
    "chunk, list emptied by a finaliser": """
        entries = entries_of(2000)
        arm(entries)
        survive(C.chunk, entries, 0, "sha1", ImaEntry)
    """,
    "extend, list emptied by a finaliser": """
        items = [b"x" * 100 for _ in range(3000)]
        arm(items)
        survive(C.extend, "sha256", bytes(32), items, True, (), None)
    """,
    "unallowed, list emptied by a finaliser": """
        entries = entries_of(3000)
        index = C.digest_index({"/p%d" % i: frozenset() for i in range(3000)})
        arm(entries)
        survive(C.unallowed, entries, index, ImaEntry)
    """,
    "unallowed, a mapping whose lookup empties the entries": """
        entries = entries_of(50)
        class Emptying(dict):
            def __getitem__(self, key):
                entries.clear()
                raise KeyError(key)
        expect(TypeError, lambda: C.unallowed(entries, Emptying(), ImaEntry))
    """,
    "ascii_entries, a dict subclass with the fields as slots": """
        class D(dict):
            __slots__ = FIELDS
        expect(TypeError, lambda: C.ascii_entries(LINE, 20, 0, True, 10, D))
    """,
    "ascii_entries, a metaclass aliasing every field to one slot": """
        class M(type):
            def __getattribute__(cls, name):
                if name in FIELDS:
                    return type.__getattribute__(cls, "__dict__")["index"]
                return type.__getattribute__(cls, name)
        class T(metaclass=M):
            __slots__ = FIELDS
        expect(TypeError, lambda: C.ascii_entries(LINE, 20, 0, True, 10, T))
    """,
    "ascii_entries, a plain slotted class": """
        class P:
            __slots__ = FIELDS
        (entry,) = C.ascii_entries(LINE, 20, 0, True, 10, P)
        assert entry.name == "/bin/sh", entry.name
        class W:
            __slots__ = (*FIELDS, "__weakref__")
        expect(TypeError, lambda: C.ascii_entries(LINE, 20, 0, True, 10, W))
    """,
    "unallowed, digests not an index": """
        expect(TypeError, lambda: C.unallowed([], 5, ImaEntry))
    """,
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_hostile_caller_gets_an_error_not_a_crash(case: str) -> None:
    script = _PRELUDE + textwrap.dedent(_CASES[case])
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"{case}: rc={done.returncode}\n{done.stderr[-2000:]}"
