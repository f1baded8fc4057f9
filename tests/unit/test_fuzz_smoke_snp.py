"""Run the SEV-SNP fuzz property without atheris: only ParseError may escape.

Inputs are the real reports, HCL report, certificates and Azure vTPM evidence, mutated
deterministically (truncations, bit flips and overwrites at every offset of the
report, appended bytes) and by hypothesis.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_snp_report import AZURE, CERT, HCL, REPORT, fuzz_one, seed_inputs
from tests.mutations import edited_seed
from tests.vectors import vectors_dir
from verifier.evidence.snp.azure_evidence import parse_azure_evidence, parse_runtime_claims
from verifier.evidence.snp.certs import load_certificates
from verifier.evidence.snp.hcl import parse_hcl_report
from verifier.evidence.snp.report import parse_report


def _seeds() -> list[bytes]:
    vectors_dir("snp")  # skips when the vectors are absent
    return sorted(set(seed_inputs()))


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    return _seeds()


def test_seeds_parse(seeds: list[bytes]) -> None:
    assert len(seeds) >= 20
    for seed in seeds:
        # Valid inputs must parse outright, not merely raise ParseError.
        if seed[0] == REPORT:
            parse_report(seed[1:])
        elif seed[0] == HCL:
            parse_report(parse_hcl_report(seed[1:]).snp_report)
        elif seed[0] == AZURE:
            evidence = parse_azure_evidence(seed[1:])
            parse_report(evidence.hcl.snp_report)
            parse_runtime_claims(evidence.hcl.runtime_claims)
        else:
            assert load_certificates(seed[1:])


def _mutations(seed: bytes) -> Iterator[bytes]:
    for n in range(0, len(seed), 7):
        yield seed[:n]
    for offset in range(1, len(seed)):
        for value in (seed[offset] ^ 0x01, 0xFF, 0x00):
            yield seed[:offset] + bytes([value]) + seed[offset + 1 :]
    for tail in (b"\x00", b"\xff" * 3, seed[1:]):
        yield seed + tail


def test_deterministic_mutations(seeds: list[bytes]) -> None:
    chosen: dict[tuple[int, bool], bytes] = {}
    for seed in seeds:
        chosen.setdefault((seed[0], len(seed) > 3000), seed)
    count = 0
    for seed in chosen.values():
        for data in _mutations(seed):
            fuzz_one(data)
            count += 1
    assert count > 20000
    assert {REPORT, HCL, CERT, AZURE} <= {key[0] for key in chosen}


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_mutations(seeds: list[bytes], data: st.DataObject) -> None:
    fuzz_one(edited_seed(data, seeds))


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=1300))
def test_random_bytes(data: bytes) -> None:
    for selector in (REPORT, HCL, CERT, AZURE):
        fuzz_one(bytes([selector]) + data)
