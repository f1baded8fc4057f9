"""Run the C-versus-Python quote fuzz property without atheris.

Inputs are the harness's seeds (every real quote with every real signature), each
edited by hypothesis (overwrites, inserts and deletes, the length prefix included),
and random bytes. tests/unit/test_quote_native.py holds the deterministic tables.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_quote_native import fuzz_one, seed_inputs, split
from tests.mutations import edited_seed
from tests.vectors import vectors_dir
from verifier.evidence.tpm import quote_native
from verifier.evidence.tpm.parse import parse_quote_attest, parse_signature

_ALLOW_ENV = "WEIGHTGATE_ALLOW_PURE_PYTHON_QUOTE"


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    vectors_dir("tpm")  # skips when the vectors are absent
    if not quote_native.active():
        if os.environ.get(_ALLOW_ENV) == "1":
            pytest.skip(f"C quote module not active ({_ALLOW_ENV}=1)")
        pytest.fail("verifier.evidence.tpm._quote_native is not built or is disabled")
    return sorted(set(seed_inputs()))


def test_seeds_parse_on_both_paths(seeds: list[bytes]) -> None:
    assert len(seeds) >= 25
    for seed in seeds:
        quote, signature = split(seed)
        # Valid pairs must parse outright, and the C path must return them.
        parse_quote_attest(quote)
        parse_signature(signature)
        assert quote_native.parse_quote_and_signature(quote, signature) is not None
        fuzz_one(seed)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_mutations(seeds: list[bytes], data: st.DataObject) -> None:
    fuzz_one(edited_seed(data, seeds, first_offset=0))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=700))
def test_random_bytes(seeds: list[bytes], data: bytes) -> None:
    fuzz_one(data)
