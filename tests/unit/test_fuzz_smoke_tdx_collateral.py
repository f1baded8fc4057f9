"""Run the TDX collateral / PCK fuzz property without atheris: only ParseError may escape.

Inputs are the real TCB Infos, QE identities, CRLs, PEM chains, PCK certificates and
SGX extensions (the vectors' and devsim.tdx's), mutated deterministically
(truncations, bit flips and overwrites, appended bytes) and by hypothesis; and the
inputs the atheris runs found escaping, pinned.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_tdx_collateral import (
    CHAIN,
    CRL,
    DER_CERT,
    QE_IDENTITY,
    SELECTORS,
    SGX_EXTENSION,
    TCB_INFO,
    fuzz_one,
    seed_inputs,
)
from tests.mutations import edited_seed
from tests.vectors import vectors_dir
from verifier.evidence.errors import ParseError
from verifier.evidence.tdx.collateral import parse_qe_identity, parse_tcb_info
from verifier.evidence.tdx.pck_extension import parse_sgx_extension
from verifier.evidence.tdx.pki import load_crl, parse_pem_certificates

# Inputs atheris found raising something other than ParseError (now fixed).
ESCAPES = {
    # devsim's root CRL with its version INTEGER 1 turned to 48 (and two name bytes
    # changed): cryptography's x509.InvalidVersion escaped load_crl.
    "crl-invalid-version": bytes.fromhex(
        "02308201003081a8020130300a06082a8648ce3d04030230693136303406035504030c2d496e7465"
        "6c2053475820522e6f7420434120287765696767617468746520544553542073696d756c61746f72"
        "29312f302d060355040a0c26776569676874676174652054455354202873696d756ce1746f722c20"
        "6e6f7420496e74656c29170d3234303533313233303030305a170d3234303730313030303030305a"
        "a00e300c300a0603551d140403020101300a06082a8648ce3d04030203470030440220549c0883d1"
        "62546b675c1f1e3340cba762f7a657b2daff2152687460644175e802201e1e3f038c895c88fb91fa"
        "3a7fed0978ec764961f2b655ff838022edfb44282f"
    ),
}


def _seeds() -> list[bytes]:
    vectors_dir("tdx")  # skips when the vectors are absent
    return sorted(set(seed_inputs()))


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    return _seeds()


def test_seeds_parse(seeds: list[bytes]) -> None:
    kinds = {seed[0] for seed in seeds}
    assert {TCB_INFO, QE_IDENTITY, CRL, CHAIN, DER_CERT, SGX_EXTENSION} <= kinds
    for seed in seeds:
        selector, body = seed[0], seed[1:]
        # Valid inputs must parse outright, not merely raise ParseError (the QVL
        # synthetic TCB Info's component SVNs exceed a byte: refused by design).
        if selector == TCB_INFO and b"65473" not in body:
            parse_tcb_info(body)
        elif selector == QE_IDENTITY:
            parse_qe_identity(body)
        elif selector == CRL:
            load_crl(body)
        elif selector == CHAIN:
            assert parse_pem_certificates(body)
        elif selector == SGX_EXTENSION:
            parse_sgx_extension(body)


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_found_escapes_are_parse_errors(name: str) -> None:
    fuzz_one(ESCAPES[name])


def test_crl_with_invalid_version_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match=r"CRL does not parse: .*not a valid CRL version"):
        load_crl(ESCAPES["crl-invalid-version"][1:])


def _mutations(seed: bytes) -> Iterator[bytes]:
    for n in range(0, len(seed), 5):
        yield seed[:n]
    for offset in range(1, len(seed)):
        for value in (seed[offset] ^ 0x01, 0xFF, 0x00, 0x22):
            yield seed[:offset] + bytes([value]) + seed[offset + 1 :]
    for tail in (b"\x00", b" ", b"}", b"\xff" * 3, seed[1:]):
        yield seed + tail


def test_deterministic_mutations(seeds: list[bytes]) -> None:
    chosen: dict[tuple[int, bool], bytes] = {}
    for seed in seeds:
        chosen.setdefault((seed[0], len(seed) > 1500), seed)
    count = 0
    for seed in chosen.values():
        for data in _mutations(seed):
            fuzz_one(data)
            count += 1
    assert count > 20000
    assert set(range(SELECTORS)) <= {key[0] for key in chosen}


# Values of every JSON type, and strings shaped like the fields' own but wrong.
_REPLACEMENTS: tuple[Any, ...] = (
    None, True, -1, 2**70, 1.5, "", "zz", "00" * 70, [], {}, [{}], [[]], {"svn": 256},
    "2024-13-01T00:00:00Z", "2024-01-01T00:00:00", "0001-01-01T00:00:00+23:59",
)  # fmt: skip


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value[:3]):  # levels repeat one shape
            yield from _paths(item, (*path, index))


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


def test_type_confusion_in_every_field(seeds: list[bytes]) -> None:
    """Each field of each TCB Info and QE identity replaced by a value of every type."""
    count = 0
    for seed in seeds:
        if seed[0] not in (TCB_INFO, QE_IDENTITY):
            continue
        doc = json.loads(seed[1:])
        for path in _paths(doc):
            for new in _REPLACEMENTS:
                fuzz_one(seed[:1] + json.dumps(_replaced(doc, path, new)).encode())
                count += 1
            if path and isinstance(path[-1], str):  # the member dropped
                parent = doc
                for step in path[:-1]:
                    parent = parent[step]
                dropped = {k: v for k, v in parent.items() if k != path[-1]}
                fuzz_one(seed[:1] + json.dumps(_replaced(doc, path[:-1], dropped)).encode())
                count += 1
    assert count > 5000


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_mutations(seeds: list[bytes], data: st.DataObject) -> None:
    fuzz_one(edited_seed(data, seeds))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    for selector in range(SELECTORS):
        fuzz_one(bytes([selector]) + data)
