"""Run the boot-facts fuzz properties without atheris.

Event-data parsers may raise ParseError only; on a parsed log the checks, the
facts and the appraisal raise nothing. Inputs: the real vectors' event data and
logs, mutated deterministically, and real logs whose events' data hypothesis
rewrites (digests kept, so the damage reaches the checks, not just the parser).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_boot_facts import PARSERS, WHOLE_LOG, fuzz_one, seed_inputs
from tests.vectors import vectors_dir
from verifier.evidence.tpm import efi_events
from verifier.evidence.tpm.boot_facts import extract_boot_facts
from verifier.evidence.tpm.event_checks import check_events
from verifier.evidence.tpm.eventlog import EventLog, parse_event_log

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _seeds() -> list[bytes]:
    vectors_dir("tpm")  # skips when the vectors are absent
    return sorted(set(seed_inputs()))


def _mutations(seed: bytes) -> Iterator[bytes]:
    selector, body = seed[:1], seed[1:]
    # Structures are small at the front (headers, lengths); past 256 bytes a stride
    # keeps the run short without missing a field kind.
    offsets = [*range(min(len(body), 256)), *range(256, len(body), 97)]
    for n in offsets:
        yield selector + body[:n]
    for offset in offsets:
        for value in (body[offset] ^ 0x01, body[offset] ^ 0x80, 0x00, 0xFF):
            yield selector + body[:offset] + bytes([value]) + body[offset + 1 :]
    for tail in (b"\x00", b"\xff" * 7, body[:16]):
        yield selector + body + tail
    for other in range(len(PARSERS)):
        yield bytes([other]) + body


def test_seeds() -> None:
    seeds = _seeds()
    assert len(seeds) > 1000
    blob2 = PARSERS.index(efi_events.parse_firmware_blob2)  # no real log has one
    assert {s[0] for s in seeds} == {*range(len(PARSERS) + 1)} - {blob2}
    for seed in seeds:
        fuzz_one(seed)


def test_deterministic_mutations_of_event_data() -> None:
    shapes = {(s[0], len(s)): s for s in _seeds() if s[0] != WHOLE_LOG}
    count = 0
    for seed in shapes.values():
        for data in _mutations(seed):
            fuzz_one(data)
            count += 1
    assert count > 20_000


@pytest.fixture(scope="module")
def logs() -> list[EventLog]:
    return [parse_event_log(s[1:]) for s in _seeds() if s[0] == WHOLE_LOG and _parses(s[1:])]


def _parses(raw: bytes) -> bool:
    try:
        parse_event_log(raw)
    except ValueError:
        return False
    return True


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_event_data_rewritten_in_real_logs(logs: list[EventLog], data: st.DataObject) -> None:
    log = data.draw(st.sampled_from(logs))
    events = list(log.events)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(events) - 1))
        old = events[i].data
        kind = data.draw(st.integers(0, 3))
        if kind == 0 and old:  # overwrite bytes
            at = data.draw(st.integers(0, len(old) - 1))
            chunk = data.draw(st.binary(min_size=1, max_size=8))
            new = old[:at] + chunk + old[at + len(chunk) :]
        elif kind == 1:  # truncate
            new = old[: data.draw(st.integers(0, len(old)))]
        elif kind == 2:  # append
            new = old + data.draw(st.binary(min_size=1, max_size=12))
        else:  # replace with another event's data (a different structure)
            new = events[data.draw(st.integers(0, len(events) - 1))].data
        events[i] = dataclasses.replace(events[i], data=new)
    mutated = dataclasses.replace(log, events=tuple(events))
    for bank in mutated.banks:
        if bank == "sm3_256":
            continue
        check_events(mutated, bank)
        extract_boot_facts(mutated, bank, verified_pcrs=range(24)).to_json()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_log_bytes_mutated(data: st.DataObject) -> None:
    seeds = [s for s in _seeds() if s[0] == WHOLE_LOG and len(s) > 2]
    seed = bytearray(data.draw(st.sampled_from(seeds)))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(1, len(seed) - 1))
        seed[at] = data.draw(st.integers(0, 255))
    fuzz_one(bytes(seed))
