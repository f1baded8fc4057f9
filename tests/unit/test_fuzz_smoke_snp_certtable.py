"""Run the GHCB certificate table fuzz property without atheris: only CertTableError may escape.

Inputs are the tables a simulated SNP host hands out (devsim.snp) and tables built
around the vectors' certificates, mutated deterministically (truncations, bit
flips and overwrites over every entry, appended bytes) and by hypothesis.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.collectors.snp_certtable import VCEK_GUID, VLEK_GUID, parse_cert_table
from tests.fuzz.fuzz_snp_certtable import fuzz_one, seed_inputs
from tests.mutations import edited_seed


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    return sorted(set(seed_inputs()))


def test_seeds_parse(seeds: list[bytes]) -> None:
    assert len(seeds) >= 4
    with_vcek = [seed for seed in seeds if parse_cert_table(seed).vcek is not None]
    assert len(with_vcek) >= 3


def _mutations(seed: bytes) -> Iterator[bytes]:
    # Every offset, length and GUID lies in the first few entries; step through the rest.
    header = min(len(seed), 24 * 8)
    offsets = [*range(header), *range(header, len(seed), 61)]
    for n in offsets:
        yield seed[:n]
    for offset in offsets:
        for value in (seed[offset] ^ 0x01, 0xFF, 0x00, 0x80):
            yield seed[:offset] + bytes([value]) + seed[offset + 1 :]
    for tail in (b"\x00", bytes(24), b"\xff" * 3, seed):
        yield seed + tail


def test_deterministic_mutations(seeds: list[bytes]) -> None:
    count = 0
    for seed in seeds:
        for data in _mutations(seed):
            fuzz_one(data)
            count += 1
    assert count > 5000


def _entry(guid: uuid.UUID, offset: int, length: int) -> bytes:
    return struct.pack("<16sII", guid.bytes, offset, length)


@pytest.mark.parametrize(
    "blob",
    [
        _entry(VCEK_GUID, 0xFFFFFFFF, 0xFFFFFFFF) + bytes(24) + b"x",
        _entry(VCEK_GUID, 48, 0x80000000) + bytes(24) + b"x",
        _entry(uuid.UUID(int=0), 0, 1) + bytes(24) + b"x",  # zero GUID, not the terminator
        bytes(24 * 64) + b"\x01",
        b"",
    ],
    ids=["max-offset-length", "huge-length", "zero-guid-entry", "only-terminators", "empty"],
)
def test_edge_tables(blob: bytes) -> None:
    fuzz_one(blob)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_mutations(seeds: list[bytes], data: st.DataObject) -> None:
    fuzz_one(edited_seed(data, seeds, first_offset=0))


@settings(max_examples=500, deadline=None)
@given(
    entries=st.lists(
        st.tuples(
            st.sampled_from([VCEK_GUID, VLEK_GUID, uuid.UUID(int=1)]),
            st.integers(0, 400),
            st.integers(0, 400),
        ),
        max_size=5,
    ),
    tail=st.binary(max_size=300),
)
def test_random_tables(entries: list[tuple[uuid.UUID, int, int]], tail: bytes) -> None:
    fuzz_one(b"".join(_entry(*entry) for entry in entries) + bytes(24) + tail)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    fuzz_one(data)
