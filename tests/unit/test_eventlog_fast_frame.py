"""The one-call framing of crypto-agile events (eventlog._FullDigests) against the
field-by-field reader: on every real log, and on mutations of every event's header,
digests and size field, both give the same events or the same ParseError."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.vectors import vectors_dir
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import eventlog
from verifier.evidence.tpm.eventlog import EventLog, parse_event_log


@functools.cache
def _logs() -> tuple[bytes, ...]:
    manifest = vectors_dir("tpm", "manifest.json")
    entries = json.loads(manifest.read_text())["logs"]
    return tuple(
        vectors_dir("tpm", *e["file"].split("/")).read_bytes()
        for e in entries
        if e["parse"] == "ok" and e["events"]
    )


def _crypto_agile() -> list[bytes]:
    return [raw for raw in _logs() if parse_event_log(raw).spec_id is not None]


def _outcome(raw: bytes) -> EventLog | tuple[str, str]:
    try:
        return parse_event_log(raw)
    except ParseError as exc:
        return (exc.code, str(exc))


def _both(raw: bytes) -> tuple[EventLog | tuple[str, str], EventLog | tuple[str, str]]:
    fast = _outcome(raw)
    real = eventlog._full_digests
    eventlog._full_digests = lambda spec: None
    try:
        slow = _outcome(raw)
    finally:
        eventlog._full_digests = real
    return fast, slow


def _event_headers(raw: bytes) -> Iterator[tuple[int, int]]:
    """(offset, length) of each event's header, digests and size field."""
    log = parse_event_log(raw)
    if len(log.events) < 2:
        return
    for event, following in zip(log.events[1:], (*log.events[2:], None), strict=True):
        end = len(raw) if following is None else following.offset
        yield event.offset, end - event.offset - len(event.data)


def test_the_fast_framing_is_used_by_real_logs() -> None:
    # Otherwise the comparisons below would compare the slow reader with itself.
    specs = [parse_event_log(raw).spec_id for raw in _crypto_agile()]
    fast = [spec for spec in specs if spec and eventlog._full_digests(spec) is not None]
    assert len(fast) >= 10


def test_real_logs_parse_the_same() -> None:
    for raw in _logs():
        fast, slow = _both(raw)
        assert fast == slow


def test_mutated_event_frames_parse_the_same() -> None:
    compared = 0
    for raw in sorted(_crypto_agile(), key=len)[:8]:
        for number, (offset, length) in enumerate(_event_headers(raw)):
            if number >= 25:
                break
            for pos in range(offset, offset + length):
                for value in (raw[pos] ^ 0x01, raw[pos] ^ 0x80, 0x00, 0xFF):
                    mutated = raw[:pos] + bytes([value]) + raw[pos + 1 :]
                    fast, slow = _both(mutated)
                    assert fast == slow, (offset, pos, value)
                    compared += 1
            for cut in range(offset, offset + length + 1):
                fast, slow = _both(raw[:cut])
                assert fast == slow, ("cut", cut)
    assert compared > 5_000


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_mutations_parse_the_same(data: st.DataObject) -> None:
    seeds = _crypto_agile()
    if not seeds:
        pytest.skip("no crypto-agile vector")
    seed = bytearray(data.draw(st.sampled_from(seeds)))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(seed) - 1))
        seed[pos] = data.draw(st.integers(0, 255))
    fast, slow = _both(bytes(seed))
    assert fast == slow
