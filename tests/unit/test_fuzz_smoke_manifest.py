"""Run the manifest fuzz property without atheris: only CheckpointFormatError may escape.

Inputs are valid manifests mutated deterministically (truncations, byte flips at every
offset, structural splices) and by hypothesis.
"""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_manifest import fuzz_one, seed_inputs
from tests.mutations import edited_seed
from weightgate.checkpoint.manifest import Manifest

SEEDS = list(seed_inputs())
SPLICES = (
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b"\\",
    b",",
    b":",
    b"-",
    b"1e999",
    b"NaN",
    b"true",
    b"null",
    b"\\u0000",
    b"\\ud800",
    b"..",
    b"/",
    b"\xff",
    b"\xc3",
    b"00",
    b" ",
)


def _mutations(seed: bytes) -> Iterator[bytes]:
    for n in range(0, len(seed), 7):
        yield seed[:n]
    for offset in range(len(seed)):
        yield seed[:offset] + bytes([seed[offset] ^ 0x01]) + seed[offset + 1 :]
    for offset in range(0, len(seed), 13):
        for splice in SPLICES:
            yield seed[:offset] + splice + seed[offset + 1 :]
    yield seed + seed
    yield b'{"files":' * 2000  # deep nesting must not escape as RecursionError
    yield b"[" * 100_000


def test_seeds_parse() -> None:
    for seed in SEEDS:
        assert Manifest.from_bytes(seed).to_bytes() == seed


def test_deterministic_mutations() -> None:
    count = 0
    for seed in SEEDS[:2]:
        for data in _mutations(seed):
            fuzz_one(data)
            count += 1
    assert count > 2000


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_mutations(data: st.DataObject) -> None:
    fuzz_one(
        edited_seed(
            data, SEEDS, first_offset=0, chunks=st.binary(max_size=8) | st.sampled_from(SPLICES)
        )
    )


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    fuzz_one(data)
