"""Run the IMA fuzz properties without atheris: only ParseError may escape parsing.

Inputs are the real IMA lists, mutated deterministically (truncations, bit flips and
overwrites, appended bytes, the other format's parser) and by hypothesis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_ima import fuzz_one, seed_inputs
from tests.mutations import edited_seed
from tests.vectors import vectors_dir

_MAX_BODY = 2048


def _seeds() -> list[bytes]:
    vectors_dir("tpm")  # skips when the vectors are absent
    return sorted(set(seed_inputs()))


def _mutations(seed: bytes) -> Iterator[bytes]:
    selector, body = seed[:1], seed[1:]
    # rust-keylime's 826-line list: its first lines cover the same paths as the rest.
    if len(body) > _MAX_BODY:
        body = body[: body.rfind(b"\n", 0, _MAX_BODY) + 1]
    for n in range(len(body)):
        yield selector + body[:n]
    for offset in range(len(body)):
        for value in (body[offset] ^ 0x01, body[offset] ^ 0x80, 0x00, 0xFF, 0x20, 0x0A):
            yield selector + body[:offset] + bytes([value]) + body[offset + 1 :]
    for tail in (b"\x00", b"\n", b"\xff" * 3, body):
        yield selector + body + tail
    yield bytes([selector[0] ^ 1]) + body


def test_seeds_parse() -> None:
    seeds = _seeds()
    assert len(seeds) >= 20
    for seed in seeds:
        fuzz_one(seed)


def test_deterministic_mutations() -> None:
    count = 0
    for seed in _seeds():
        for data in _mutations(seed):
            fuzz_one(data)
            count += 1
    assert count > 20_000


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    return _seeds()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_mutations(seeds: list[bytes], data: st.DataObject) -> None:
    fuzz_one(edited_seed(data, seeds))


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    fuzz_one(data)
