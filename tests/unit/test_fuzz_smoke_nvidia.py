"""Run the NVIDIA report fuzz property without atheris: only ParseError may escape.

Inputs are the real reports, mutated deterministically (every truncation, bit flips
and overwrites at every offset, appended bytes) and by hypothesis.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_nvidia_report import fuzz_one, seed_inputs
from tests.mutations import edited_seed
from tests.vectors import vectors_dir
from verifier.evidence.nvidia.report import parse_report


def _seeds() -> list[bytes]:
    vectors_dir("nvidia")  # skips when the vectors are absent
    return sorted(set(seed_inputs()))


def _mutations(seed: bytes) -> Iterator[bytes]:
    for n in range(len(seed)):
        yield seed[:n]
    for offset in range(len(seed)):
        for value in (seed[offset] ^ 0x01, 0xFF):
            yield seed[:offset] + bytes([value]) + seed[offset + 1 :]
    for tail in (b"\x00", b"\xff" * 3, seed):
        yield seed + tail


def test_seeds_parse() -> None:
    seeds = _seeds()
    assert len(seeds) >= 20
    for seed in seeds:
        # Valid inputs must parse outright, not merely raise ParseError.
        parse_report(seed)


def test_deterministic_mutations() -> None:
    # One seed per (opaque layout, device, length) is enough: same shapes, same paths.
    shapes: dict[tuple[str, str], bytes] = {}
    for seed in _seeds():
        opaque = parse_report(seed).opaque
        shapes.setdefault((opaque.layout.value, opaque.device.value), seed)
    count = 0
    for seed in shapes.values():
        for data in _mutations(seed):
            fuzz_one(data)
            count += 1
    assert count > 30000


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    return _seeds()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_mutations(seeds: list[bytes], data: st.DataObject) -> None:
    fuzz_one(edited_seed(data, seeds, first_offset=0))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_evidence_json(seeds: list[bytes], data: st.DataObject) -> None:
    report = edited_seed(data, seeds, first_offset=0)
    entry = {
        "arch": "HOPPER",
        "nonce": report[4:36].hex(),
        "evidence": base64.b64encode(report).decode(),
        "certificate": base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode(),
    }
    fuzz_one(json.dumps([entry]).encode())


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    fuzz_one(data)
    fuzz_one(b"[" + data)
