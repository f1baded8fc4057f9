"""Run the TDX quote fuzz property without atheris: only ParseError may escape.

Inputs are the real quotes, mutated deterministically (truncations, bit flips and
overwrites over the header, body, length fields and certification data, appended
bytes) and by hypothesis; and the CCEL log, truncated and flipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_tdx_quote import fuzz_one, seed_inputs
from tests.mutations import edited_seed
from tests.vectors import vectors_dir


def _seeds() -> list[bytes]:
    vectors_dir("tdx")  # skips when the vectors are absent
    return list(seed_inputs())


def _mutations(seed: bytes) -> Iterator[bytes]:
    # Every length field and structure boundary lies in the first ~1.3 KB or at
    # the PEM chain's edges; step through the rest.
    offsets = [*range(min(len(seed), 1400)), *range(1400, len(seed), 97)]
    for n in offsets:
        yield seed[:n]
    for offset in offsets:
        for value in (seed[offset] ^ 0x01, 0xFF, 0x00):
            yield seed[:offset] + bytes([value]) + seed[offset + 1 :]
    for tail in (b"\x00", b"\x00" * 7, b"\xff" * 3, seed):
        yield seed + tail


def test_deterministic_mutations() -> None:
    count = 0
    for seed in _seeds()[:3]:
        for data in _mutations(seed):
            fuzz_one(data)
            count += 1
    assert count > 10000


def test_ccel_mutations() -> None:
    area = (vectors_dir("tdx") / "gotdx_cos113_ccel_eventlog.bin").read_bytes()
    log = area[:18200]
    for offset in range(0, 400, 3):
        fuzz_one(log[:offset] + bytes([log[offset] ^ 0x55]) + log[offset + 1 :])
    for n in range(5, 600, 7):
        fuzz_one(log[:n])


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    return _seeds()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_mutations(seeds: list[bytes], data: st.DataObject) -> None:
    fuzz_one(edited_seed(data, seeds, first_offset=0))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=800))
def test_random_bytes(data: bytes) -> None:
    fuzz_one(data)
    fuzz_one(b"\x04\x00\x02\x00\x81\x00\x00\x00" + data)
