"""Run the NVIDIA chain / FWID / OCSP fuzz property without atheris.

Only ParseError (chain, FWID) and VerificationError (chain, OCSP) may escape. Inputs
are the real device chains and their FWID extensions, and OCSP responses built under
a test PKI, mutated deterministically (the DER inside each PEM block at every
offset, truncations, appended bytes) and by hypothesis.
"""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_nvidia_chain import (
    AT,
    CHAIN,
    FWID,
    OCSP,
    chain_seeds,
    device_root,
    fuzz_one,
    fwid_seeds,
    ocsp_seeds,
    seed_inputs,
)
from tests.mutations import edited_seed
from tests.vectors import vectors_dir
from verifier.evidence.errors import ParseError
from verifier.evidence.nvidia.chain import parse_pem_chain, verify_device_chain
from verifier.evidence.nvidia.dice import hopper_fwid, tcb_info_fwid


def _pem(der: bytes) -> bytes:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n".encode()


def _ders(pem_chain: bytes) -> list[bytes]:
    return [
        c.public_bytes(serialization.Encoding.DER)
        for c in x509.load_pem_x509_certificates(pem_chain)
    ]


def _byte_mutations(seed: bytes, *, stride: int = 1) -> Iterator[bytes]:
    for n in range(0, len(seed), stride):
        yield seed[:n]
    for offset in range(0, len(seed), stride):
        for value in (seed[offset] ^ 0x01, 0xFF, 0x00, 0x80):
            yield seed[:offset] + bytes([value]) + seed[offset + 1 :]
    for tail in (b"\x00", b"\x30\x00", seed):
        yield seed + tail


def _chain_shapes() -> list[bytes]:
    # One chain per distinct leaf issuer (GPU, NVSwitch, Blackwell): same shapes, same paths.
    vectors_dir("nvidia")  # skips when the vectors are absent
    shapes: dict[x509.Name, bytes] = {}
    for pem in chain_seeds():
        shapes.setdefault(x509.load_pem_x509_certificates(pem)[0].issuer, pem)
    return list(shapes.values())


def test_seeds_are_valid() -> None:
    vectors_dir("nvidia")
    chains = list(chain_seeds())
    assert len(chains) >= 5
    for pem in chains:
        verify_device_chain(pem, pinned_roots=[device_root()], at=AT)
    fwids = list(fwid_seeds())
    assert fwids
    for value in fwids:
        try:
            hopper_fwid(value)
        except ParseError:  # then it must be the other layout
            tcb_info_fwid(value)
    for seed in seed_inputs():
        fuzz_one(seed)


def test_chain_der_mutations() -> None:
    count = 0
    for pem in _chain_shapes():
        ders = _ders(pem)
        # The leaf: every field is read (names, algorithms, key, extensions) before its
        # signature is checked. Every 13th offset keeps this to a few seconds.
        for mutated in _byte_mutations(ders[0], stride=13):
            fuzz_one(bytes([CHAIN]) + b"".join(_pem(d) for d in (mutated, *ders[1:])))
            count += 1
    assert count > 800


def _leaf_edit(old: bytes, new: bytes) -> bytes:
    pem = _chain_shapes()[0]
    ders = _ders(pem)
    assert ders[0].count(old) >= 1
    return b"".join(_pem(d) for d in (ders[0].replace(old, new, 1), *ders[1:]))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # X.509 version v4 (INTEGER 3): pyca raises InvalidVersion, not ValueError.
        (bytes.fromhex("a003020102"), bytes.fromhex("a003020103")),
        # The first Name (issuer) re-tagged as NULL: pyca decodes names lazily and
        # raised ValueError from verify_device_chain's self-issued check.
        (
            bytes.fromhex("300a06082a8648ce3d0403033064"),
            bytes.fromhex("300a06082a8648ce3d0403030564"),
        ),
    ],
    ids=["invalid_version", "issuer_not_a_name"],
)
def test_found_by_fuzzing_is_parse_error(old: bytes, new: bytes) -> None:
    pem = _leaf_edit(old, new)
    with pytest.raises(ParseError):
        parse_pem_chain(pem)
    with pytest.raises(ParseError):
        verify_device_chain(pem, pinned_roots=[device_root()], at=AT)


def test_chain_pem_mutations() -> None:
    pem = _chain_shapes()[0]
    for cut in range(0, len(pem), 7):
        fuzz_one(bytes([CHAIN]) + pem[:cut])
        fuzz_one(bytes([CHAIN]) + pem[:cut] + pem[cut + 1 :])
    fuzz_one(bytes([CHAIN]) + pem * 2)  # ten certificates: over the count bound
    fuzz_one(bytes([CHAIN]) + pem.replace(b"CERTIFICATE", b"X509 CRL"))


def test_fwid_mutations() -> None:
    vectors_dir("nvidia")
    count = 0
    for seed in sorted(set(fwid_seeds()))[:3]:
        for mutated in _byte_mutations(seed):
            fuzz_one(bytes([FWID]) + mutated)
            count += 1
    assert count > 1000


def test_ocsp_mutations() -> None:
    count = 0
    for seed in ocsp_seeds():
        for mutated in _byte_mutations(seed, stride=2):
            fuzz_one(bytes([OCSP]) + mutated)
            count += 1
    assert count > 3000


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    vectors_dir("nvidia")
    return sorted(set(seed_inputs()))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_mutations(seeds: list[bytes], data: st.DataObject) -> None:
    fuzz_one(edited_seed(data, seeds))


@settings(max_examples=300, deadline=None)
@given(selector=st.sampled_from([CHAIN, FWID, OCSP]), body=st.binary(max_size=400))
def test_random_bytes(selector: int, body: bytes) -> None:
    fuzz_one(bytes([selector]) + body)
