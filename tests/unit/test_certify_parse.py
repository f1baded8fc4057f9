"""Parsing TPM2_Certify attestations: fields, one-mutation rejections, round trips.

The attestations are marshalled here with the TSS (a certification signed by a
real swtpm is exercised in ``tests/integration/test_binding_key.py``).
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tpm2_pytss.types import TPMS_ATTEST

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.certify import parse_certify_attest
from verifier.evidence.tpm.parse import MAX_ATTEST_SIZE

NAME = b"\x00\x0b" + hashlib.sha256(b"binding key").digest()
QUALIFIED = b"\x00\x0b" + hashlib.sha256(b"qualified").digest()
SIGNER = b"\x00\x0b" + hashlib.sha256(b"ak").digest()


def _attest(
    *,
    extra: bytes = b"n" * 32,
    name: bytes = NAME,
    qualified: bytes = QUALIFIED,
    safe: int = 1,
) -> bytes:
    a = TPMS_ATTEST()
    a.magic = 0xFF544347
    a.type = 0x8017
    a.qualifiedSigner.name = SIGNER
    a.extraData = extra
    a.clockInfo.clock = 1234
    a.clockInfo.resetCount = 5
    a.clockInfo.restartCount = 6
    a.clockInfo.safe = safe
    a.firmwareVersion = 0x0102030405060708
    a.attested.certify.name = name
    a.attested.certify.qualifiedName = qualified
    return bytes(a.marshal())


def test_fields() -> None:
    info = parse_certify_attest(_attest())
    assert info.name == NAME
    assert info.qualified_name == QUALIFIED
    assert info.qualified_signer == SIGNER
    assert info.extra_data == b"n" * 32
    assert (info.clock_info.clock, info.clock_info.reset_count) == (1234, 5)
    assert info.clock_info.restart_count == 6
    assert info.clock_info.safe is True
    assert info.firmware_version == 0x0102030405060708


def _code(data: bytes) -> str:
    with pytest.raises(ParseError) as err:
        parse_certify_attest(data)
    return err.value.code


def test_bad_magic() -> None:
    raw = bytearray(_attest())
    raw[0] ^= 0x01
    assert _code(bytes(raw)) == "bad_magic"


@pytest.mark.parametrize("st_type", [0x8018, 0x8014, 0x801A, 0x0000])
def test_other_attestation_types(st_type: int) -> None:
    raw = bytearray(_attest())
    raw[4:6] = st_type.to_bytes(2, "big")
    assert _code(bytes(raw)) == "not_a_certification"


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b + b"\x00", id="trailing byte"),
        pytest.param(lambda b: b[:-1], id="truncated by one"),
        pytest.param(lambda b: b[:5], id="truncated header"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(lambda b: b + bytes(MAX_ATTEST_SIZE), id="oversize"),
    ],
)
def test_malformed(mutate) -> None:  # type: ignore[no-untyped-def]
    assert _code(mutate(_attest())) == "malformed"


def test_clock_safe_must_be_yes_no() -> None:
    assert _code(_attest(safe=2)) == "malformed"


def test_empty_certified_name() -> None:
    assert _code(_attest(name=b"")) == "malformed"


def test_name_size_larger_than_data() -> None:
    raw = bytearray(_attest())
    # certify.name's size prefix sits right after firmwareVersion.
    offset = raw.index(NAME) - 2
    raw[offset : offset + 2] = (len(NAME) + 40).to_bytes(2, "big")
    assert _code(bytes(raw)) == "malformed"


def test_not_bytes() -> None:
    with pytest.raises(TypeError):
        parse_certify_attest("ff544347")  # type: ignore[arg-type]


@given(
    extra=st.binary(max_size=64),
    name=st.binary(min_size=1, max_size=66),
    qualified=st.binary(max_size=66),
)
def test_round_trip(extra: bytes, name: bytes, qualified: bytes) -> None:
    info = parse_certify_attest(_attest(extra=extra, name=name, qualified=qualified))
    assert (info.extra_data, info.name, info.qualified_name) == (extra, name, qualified)
