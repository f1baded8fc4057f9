"""Run the C-versus-Python IMA fuzz properties without atheris.

Inputs are the shared vectors' ASCII and binary IMA lists and deterministic mutations
of their first bytes (truncations, byte overwrites, appended bytes, other selectors).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz.fuzz_ima_native import fuzz_one, seed_inputs
from tests.vectors import vectors_dir
from verifier.evidence.tpm import ima_native

_MAX_BODY = 400
_VALUES = (0x00, 0x0A, 0x20, 0x30, 0x3A, 0x41, 0x66, 0x67, 0xFF)


def _seeds() -> list[bytes]:
    vectors_dir("tpm")  # skips when the vectors are absent
    if not ima_native.active():
        pytest.skip("the C IMA module is not active (tests/unit/test_ima_native.py says why)")
    return sorted(set(seed_inputs()))


def _mutations(seed: bytes) -> Iterator[bytes]:
    selector, body = seed[:1], seed[1:]
    if len(body) > _MAX_BODY:
        body = body[: body.rfind(b"\n", 0, _MAX_BODY) + 1] or body[:_MAX_BODY]
    for n in range(0, len(body), 7):
        yield selector + body[:n]
    for offset in range(len(body)):
        value = _VALUES[offset % len(_VALUES)]
        yield selector + body[:offset] + bytes([value]) + body[offset + 1 :]
    for tail in (b"\x00", b"\n", b"\r\n", body):
        yield selector + body + tail
    yield bytes([selector[0] ^ 1]) + body
    yield bytes([selector[0] ^ 2]) + body
    yield bytes([selector[0] ^ 4]) + body


def test_seeds() -> None:
    seeds = _seeds()
    assert len(seeds) >= 30
    for seed in seeds:
        fuzz_one(seed)
    hash_size = {0: 20, 3: 32}
    taken = [
        ima_native.ascii_entries(
            s[1:], hash_size=hash_size[s[0]], first_index=0, byte_order="little", max_entries=10**6
        )
        is not None
        for s in seeds
        if s[0] in hash_size
    ]
    assert sum(taken) >= 10, "the C path declines the seeds: the harness would compare nothing"
    binary = [
        ima_native.binary_entries(
            s[1:],
            hash_size=20,
            first_index=0,
            byte_order="little",
            max_entries=10**6,
            max_data=1 << 20,
        )
        is not None
        for s in seeds
        if s[0] == 4
    ]
    assert sum(binary) >= 3, "the C path declines the binary seeds"


def test_deterministic_mutations() -> None:
    count = 0
    for seed in _seeds():
        for data in _mutations(seed):
            fuzz_one(data)
            count += 1
    assert count > 300
