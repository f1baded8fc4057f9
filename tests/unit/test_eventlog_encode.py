"""The event-log encoder and the parser are inverses: hypothesis builds logs (SHA-1
legacy and crypto-agile, any declared algorithms, digest subsets in any order,
Windows' non-extended PCR), and every real log is written back byte for byte."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vectors import vectors_dir
from verifier.evidence.tpm.eventlog import (
    ALGORITHMS,
    EV_NO_ACTION,
    PCR_NOT_EXTENDED,
    EventLog,
    parse_event_log,
)
from verifier.evidence.tpm.eventlog_encode import encode_event, encode_event_log
from verifier.evidence.tpm.eventlog_model import Event, SpecId, SpecIdAlgorithm

_KNOWN = sorted(ALGORITHMS.items())  # (alg id, (name, size))
_SPEC_HEADER = struct.Struct("<16sIBBBBI")


def _spec_id(algorithms: list[tuple[int, tuple[str, int]]], vendor: bytes) -> SpecId:
    return SpecId(
        platform_class=0,
        spec_version=(2, 0, 0),
        uintn_size=2,
        algorithms=tuple(SpecIdAlgorithm(a, n, s) for a, (n, s) in algorithms),
        vendor_info=vendor,
    )


def _spec_id_data(spec: SpecId) -> bytes:
    body = _SPEC_HEADER.pack(b"Spec ID Event03\x00", 0, 0, 2, 0, 2, len(spec.algorithms))
    body += b"".join(struct.pack("<HH", a.alg_id, a.size) for a in spec.algorithms)
    return body + bytes([len(spec.vendor_info)]) + spec.vendor_info


_pcr = st.one_of(st.integers(0, 23), st.just(PCR_NOT_EXTENDED))
# Any type but EV_NO_ACTION, whose data could read as a second Spec ID.
_type = st.integers(0, 2**32 - 1).filter(lambda t: t != EV_NO_ACTION)
_data = st.binary(max_size=80)


@st.composite
def _crypto_agile(draw: st.DrawFn) -> EventLog:
    algorithms = draw(st.lists(st.sampled_from(_KNOWN), min_size=1, max_size=5, unique=True))
    spec = _spec_id(algorithms, draw(st.binary(max_size=8)))
    alg_ids = {a.name: a.alg_id for a in spec.algorithms if a.name is not None}
    first_data = _spec_id_data(spec)
    events = [Event(0, 0, EV_NO_ACTION, {"sha1": bytes(20)}, first_data, 0)]
    offset = 32 + len(first_data)
    for index in range(1, draw(st.integers(0, 12)) + 1):
        chosen = draw(st.lists(st.sampled_from(algorithms), min_size=1, unique=True))
        digests = {
            name: draw(st.binary(min_size=size, max_size=size)) for _, (name, size) in chosen
        }
        event = Event(index, draw(_pcr), draw(_type), digests, draw(_data), offset)
        events.append(event)
        offset += len(encode_event(event, alg_ids))
    return EventLog("crypto-agile", spec, tuple(events))


@st.composite
def _legacy(draw: st.DrawFn) -> EventLog:
    events: list[Event] = []
    offset = 0
    for index in range(draw(st.integers(1, 12))):
        data = draw(_data)
        if index == 0:
            data = b"x" + data  # never the Spec ID signature
        digest = {"sha1": draw(st.binary(min_size=20, max_size=20))}
        events.append(Event(index, draw(_pcr), draw(_type), digest, data, offset))
        offset += 32 + len(data)
    return EventLog("sha1-legacy", None, tuple(events))


@settings(max_examples=300, deadline=None)
@given(st.one_of(_crypto_agile(), _legacy()))
def test_parse_inverts_encode(log: EventLog) -> None:
    raw = encode_event_log(log)
    assert parse_event_log(raw) == log
    assert encode_event_log(parse_event_log(raw)) == raw


def _real_logs() -> list[dict[str, Any]]:
    entries = json.loads(vectors_dir("tpm", "manifest.json").read_text())["logs"]
    return [e for e in entries if e["parse"] == "ok" and e["events"]]


def test_every_real_log_is_written_back_byte_for_byte() -> None:
    written = 0
    for entry in _real_logs():
        raw = vectors_dir("tpm", *entry["file"].split("/")).read_bytes()
        log = parse_event_log(raw)
        if log.spec_id is not None and any(a.name is None for a in log.spec_id.algorithms):
            with pytest.raises(ValueError, match="not kept"):
                encode_event_log(log)
            continue
        assert encode_event_log(log) == raw, entry["file"]
        written += 1
    assert written >= 40


def test_what_cannot_be_written_is_refused() -> None:
    spec = _spec_id([(0x000B, ("sha256", 32))], b"")
    first = Event(0, 0, EV_NO_ACTION, {"sha1": bytes(20)}, _spec_id_data(spec), 0)
    stray = Event(1, 0, 1, {"sha384": bytes(48)}, b"", 0)  # undeclared algorithm
    with pytest.raises(ValueError, match="not declared"):
        encode_event_log(EventLog("crypto-agile", spec, (first, stray)))
    two = Event(0, 0, 1, {"sha1": bytes(20), "sha256": bytes(32)}, b"", 0)
    with pytest.raises(ValueError, match="one SHA-1 digest"):
        encode_event_log(EventLog("sha1-legacy", None, (two,)))
    with pytest.raises(ValueError, match="at least one"):
        encode_event_log(EventLog("sha1-legacy", None, ()))
