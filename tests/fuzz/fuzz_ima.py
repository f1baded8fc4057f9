"""atheris harness for the IMA list parsers, replay and appraisal (untrusted bytes).

Run: ``python tests/fuzz/fuzz_ima.py [libFuzzer options] [corpus dirs]``.
Without a corpus directory it seeds a temporary one from the IMA lists in the shared
vectors' ``tpm/manifest.json`` (and the keylime ima-sig/ima-buf extras). The first
input byte picks the parser (even: binary, odd: ASCII). The properties:

* parsing returns or raises ParseError, nothing else;
* a parsed list re-encodes to exactly the input (the parsers accept one encoding);
* replay returns or raises ImaReplayError; appraisal returns a list of reasons
  (signature parsing and verification included: the policy trusts the keylime IMA
  keys when the vectors are present, so real signatures get verified);
* the bulk paths agree with the one-entry-at-a-time ones (the references below, the
  code the bulk paths were written to match): parsing gives the same entries and
  offsets or the same ParseError (code and message), replay and replay_until_quote
  the same state or error, appraisal the same reasons.

``fuzz_one`` is importable so that the unit suite runs the same properties without
atheris (tests/unit/test_fuzz_smoke_ima.py).
"""

from __future__ import annotations

import functools
import json
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import ima_binary, ima_policy, ima_replay
from verifier.evidence.tpm.ima import (
    TEMPLATE_HASH_SIZES,
    ByteOrder,
    ImaEntry,
    ImaList,
    fail,
    parse_binary,
)
from verifier.evidence.tpm.ima_ascii import parse_ascii, parse_line
from verifier.evidence.tpm.ima_encode import encode_ascii, encode_binary
from verifier.evidence.tpm.ima_policy import RuntimePolicy, appraise_ima, load_runtime_policy
from verifier.evidence.tpm.ima_replay import (
    ImaReplayError,
    ImaReplayState,
    replay_ima,
    replay_until_quote,
    start_state,
)
from verifier.verdict import Reason

_BANKS = ("sha1", "sha256")
_U32 = {"little": struct.Struct("<I"), "big": struct.Struct(">I")}


@functools.cache
def _policy() -> RuntimePolicy:
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    keys = sorted((testvectors_root() / "tpm" / "keylime" / "ima-sig").glob("*.pem"))
    doc: dict[str, object] = {
        "version": 1,
        "digests": {"/usr/bin/sh": ["sha256:" + "00" * 32]},
        "excludes": ["/tmp/.*"],
        "keyrings": {".ima": ["sha256:" + "11" * 32]},
        "verification_keys": [k.read_text() for k in keys],
    }
    return load_runtime_policy(json.dumps(doc))


# --- the references: one entry at a time ----------------------------------------------


def ascii_one_by_one(
    raw: bytes,
    *,
    template_hash_alg: str = "sha1",
    first_index: int = 0,
    byte_order: ByteOrder = "little",
) -> ImaList:
    """parse_ascii as a loop over lines, each through parse_line (no bulk path)."""
    entries: list[ImaEntry] = []
    offset = 0
    while offset < len(raw):
        index = first_index + len(entries)
        end = raw.find(b"\n", offset)
        if end < 0:
            raise fail("last line has no newline", index=index, offset=offset, code="truncated")
        try:
            entry = parse_line(raw[offset:end], index, offset, template_hash_alg, byte_order)
        except LookupError as exc:
            raise fail(str(exc), index=index, offset=offset, code="unknown_template") from None
        except (ValueError, UnicodeError) as exc:
            raise fail(str(exc), index=index, offset=offset, code="bad_line") from None
        entries.append(entry)
        offset = end + 1
    return ImaList("ascii", byte_order, template_hash_alg, tuple(entries))


def binary_one_by_one(
    raw: bytes, *, template_hash_alg: str = "sha1", first_index: int = 0
) -> ImaList:
    """parse_binary as a loop over entries, each through the per-entry reader."""
    if not raw:
        return ImaList("binary", "little", template_hash_alg, ())
    size = TEMPLATE_HASH_SIZES[template_hash_alg]
    order = ima_binary.detect_byte_order(raw, size)
    entries: list[ImaEntry] = []
    pos = 0
    while pos < len(raw):
        index = first_index + len(entries)
        entry, pos = ima_binary._read_entry(raw, pos, index, size, _U32[order])
        entries.append(entry)
    return ImaList("binary", order, template_hash_alg, tuple(entries))


def replay_one_by_one(
    state: ImaReplayState,
    entries: Sequence[ImaEntry],
    quoted: dict[str, dict[int, bytes]] | None = None,
    *,
    template_hash_alg: str = "sha1",
) -> ImaReplayState | None:
    """replay_entries entry by entry; with ``quoted``, the state after the shortest
    prefix that matches it, or None (replay_until_quote's pcr_mismatch)."""
    replayer = ima_replay._Replayer(state, template_hash_alg)
    if quoted is not None and replayer.matches(quoted):
        return state
    for entry in entries:
        replayer.step(entry)
        if quoted is not None and replayer.matches(quoted):
            return replayer.state()
    return None if quoted is not None else replayer.state()


def appraise_one_by_one(entries: Sequence[ImaEntry], policy: RuntimePolicy) -> list[Reason]:
    findings = (ima_policy._finding(entry, policy) for entry in entries)
    return [reason for reason in findings if reason is not None]


def outcome(run: Callable[[], Any]) -> tuple[Any, ...]:
    """What ``run`` returns, or the stable parts of the error it raises."""
    try:
        result = run()
    except (ParseError, ImaReplayError) as exc:
        return ("error", type(exc).__name__, exc.code, str(exc))
    if isinstance(result, ImaList):  # offsets are not compared by ImaEntry's __eq__
        return ("ok", result, [e.offset for e in result.entries])
    return ("ok", result)


# --- the harness ----------------------------------------------------------------------


def fuzz_one(data: bytes) -> None:
    """One fuzz input: selector byte, then a binary or ASCII list."""
    if not data:
        return
    body = data[1:]
    is_ascii = bool(data[0] & 1)
    parsed = outcome(lambda: parse_ascii(body) if is_ascii else parse_binary(body))
    reference = outcome(lambda: ascii_one_by_one(body) if is_ascii else binary_one_by_one(body))
    assert parsed == reference, (parsed[:4], reference[:4])
    if parsed[0] == "error":
        assert parsed[2] in _PARSE_CODES, parsed
        return
    entries = parsed[1].entries
    if is_ascii:
        assert encode_ascii(entries) == body
    else:
        assert encode_binary(entries, byte_order=parsed[1].byte_order) == body
    assert [e.index for e in entries] == list(range(len(entries)))
    _check_replay(entries)
    reasons = appraise_ima(entries, _policy())
    assert reasons == appraise_one_by_one(entries, _policy())
    assert all(r.code.startswith("tpm.ima.") for r in reasons)


_PARSE_CODES = frozenset(
    {"truncated", "too_large", "bad_pcr", "byte_order", "bad_field", "malformed", "bad_line"}
    | {"unknown_template"}
)


def _check_replay(entries: tuple[ImaEntry, ...]) -> None:
    replayed = outcome(lambda: replay_ima(entries, banks=_BANKS))
    assert replayed == outcome(lambda: replay_one_by_one(start_state(_BANKS), entries))
    if replayed[0] == "ok":
        assert replayed[1].count == len(entries)
    # The quote of a prefix (half the list), of one bank's PCR10 and of PCR11 too.
    half = outcome(lambda: replay_one_by_one(start_state(_BANKS), entries[: len(entries) // 2]))
    if half[0] != "ok":
        return
    quoted = {"sha256": {10: half[1].value("sha256"), 11: half[1].value("sha256", 11)}}
    until = outcome(lambda: replay_until_quote(start_state(_BANKS), entries, quoted))
    expected = outcome(lambda: replay_one_by_one(start_state(_BANKS), entries, quoted))
    if expected == ("ok", None):  # no prefix matched
        assert until[:3] == ("error", "ImaReplayError", "pcr_mismatch"), until
    else:
        assert until == expected, (until, expected)


def seed_inputs() -> Iterator[bytes]:
    """Every IMA list in the shared vectors, behind its format's selector byte."""
    from tests.vectors import testvectors_root  # noqa: PLC0415 - path set up by main()

    tpm = testvectors_root() / "tpm"
    manifest = json.loads((tpm / "manifest.json").read_text())
    for entry in manifest["ima_logs"]:
        selector = b"\x01" if entry["format"] == "ascii" else b"\x00"
        yield selector + (tpm / entry["file"]).read_bytes()
    for extra in ("ima-buf-keyring.txt", "ima-sig-bad-sigsize.txt"):
        yield b"\x01" + (tpm / "keylime" / "ima-sig" / extra).read_bytes()


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fuzz.atheris_main import run  # noqa: PLC0415 - needs the path set above

    run("ima", fuzz_one, seed_inputs)


if __name__ == "__main__":
    main()
