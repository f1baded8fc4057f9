"""Run the AMD CRL fuzz property without atheris: only ParseError may escape load_crl,
and only the check's own reasons check_revocation.

Inputs are CRLs a devsim.snp TEST ARK issues, mutated deterministically
(truncations, bit flips and overwrites at every offset of the signed part,
appended bytes) and by hypothesis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_snp_crl import AT, _test_line, fuzz_one, seed_inputs
from tests.mutations import edited_seed
from verifier.evidence.errors import ParseError
from verifier.evidence.snp.crl import MAX_CRL_BYTES, check_revocation, load_crl
from verifier.verdict import VerificationError


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    return sorted(set(seed_inputs()))


def test_seeds_parse_and_reach_every_outcome(seeds: list[bytes]) -> None:
    chain, _ = _test_line()
    outcomes = set()
    for seed in seeds:
        try:
            check_revocation(chain, [load_crl(seed)], at=AT)
            outcomes.add("passed")
        except VerificationError as exc:
            outcomes.add(exc.reason.code)
    assert outcomes == {"passed", "snp.cert.revoked", "snp.crl.stale", "snp.crl.untrusted"}


def _mutations(seed: bytes) -> Iterator[bytes]:
    # The TBS (names, dates, entries, extensions) comes first; the 512-byte
    # signature last, where one flipped bit is as good as any.
    signed = max(len(seed) - 520, 0)
    offsets = [*range(signed), *range(signed, len(seed), 37)]
    for n in offsets:
        yield seed[:n]
    for offset in offsets:
        for value in (seed[offset] ^ 0x01, 0xFF, 0x00, 0x80):
            yield seed[:offset] + bytes([value]) + seed[offset + 1 :]
    for tail in (b"\x00", b"\x30\x00", seed):
        yield seed + tail


def test_deterministic_mutations(seeds: list[bytes]) -> None:
    count = 0
    for seed in seeds:
        if seed.startswith(b"-----"):
            continue  # PEM: mutations are mostly base64 errors; hypothesis covers it
        for data in _mutations(seed):
            fuzz_one(data)
            count += 1
    assert count > 5000


@pytest.mark.parametrize(
    "blob",
    [b"", b"\x30", b"\x30\x80\x00\x00", b"-----BEGIN X509 CRL-----\n", bytes(MAX_CRL_BYTES + 1)],
    ids=["empty", "bare-sequence", "indefinite-length", "pem-header-only", "too-large"],
)
def test_edge_inputs_are_parse_errors(blob: bytes) -> None:
    with pytest.raises(ParseError):
        load_crl(blob)
    fuzz_one(blob)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_mutations(seeds: list[bytes], data: st.DataObject) -> None:
    fuzz_one(edited_seed(data, seeds, first_offset=0))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    fuzz_one(data)
