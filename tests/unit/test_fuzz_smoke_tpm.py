"""Run the TPM parser fuzz property without atheris: only ParseError may escape.

Inputs are the real vectors, mutated deterministically (every truncation, bit flips
and overwrites at every offset, appended bytes) and by hypothesis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_tpm_parsers import PARSERS, fuzz_one, seed_inputs
from tests.mutations import edited_seed
from tests.vectors import vectors_dir


def _seeds() -> list[bytes]:
    vectors_dir("tpm")  # skips when the vectors are absent
    # One copy of each distinct input is enough; variants repeat many files.
    return sorted(set(seed_inputs()))


def _mutations(seed: bytes) -> Iterator[bytes]:
    selector, body = seed[:1], seed[1:]
    for n in range(len(body)):
        yield selector + body[:n]
    for offset in range(len(body)):
        for value in (body[offset] ^ 0x01, body[offset] ^ 0x80, 0x00, 0xFF):
            yield selector + body[:offset] + bytes([value]) + body[offset + 1 :]
    for tail in (b"\x00", b"\xff" * 3, body):
        yield selector + body + tail
    # The same bytes through every other parser.
    for other in range(len(PARSERS)):
        yield bytes([other]) + body


def test_seeds_parse() -> None:
    seeds = _seeds()
    assert len(seeds) >= 10
    for seed in seeds:
        # Valid inputs must parse outright, not merely raise ParseError.
        PARSERS[seed[0]](seed[1:])


def test_deterministic_mutations() -> None:
    # One seed per (parser, length): same-shaped seeds exercise the same paths.
    shapes = {(seed[0], len(seed)): seed for seed in _seeds()}
    count = 0
    for seed in shapes.values():
        for data in _mutations(seed):
            fuzz_one(data)
            count += 1
    assert count > 5000


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    return _seeds()


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_mutations(seeds: list[bytes], data: st.DataObject) -> None:
    fuzz_one(edited_seed(data, seeds))


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    fuzz_one(data)
