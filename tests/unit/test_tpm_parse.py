"""Parsing TPM structures: real vectors, strictness, and round-trip properties."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from tpm2_pytss.constants import TPM2_ALG
from tpm2_pytss.types import TPM2B_DATA, TPM2B_DIGEST, TPM2B_NAME, TPML_PCR_SELECTION, TPMS_ATTEST

from tests.vectors import TPM_SWTPM_SETS, vectors_dir
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.parse import (
    MAX_ATTEST_SIZE,
    PcrSelection,
    parse_quote_attest,
    parse_signature,
    parse_tpm2b_public,
    parse_tpmt_public,
)

RSA_SET, ECC_SET, TWO_BANK_SET = TPM_SWTPM_SETS


def _read(*parts: str) -> bytes:
    path: Path = vectors_dir("tpm", *parts[:-1]) / parts[-1]
    return path.read_bytes()


def test_quote_fields() -> None:
    info = parse_quote_attest(_read(TWO_BANK_SET, "quote.attest"))
    assert info.extra_data == _read(TWO_BANK_SET, "nonce.bin")
    assert info.pcr_selection == (
        PcrSelection("sha256", (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14)),
        PcrSelection("sha384", (0, 4, 7)),
    )
    assert len(info.pcr_digest) == 32
    assert info.qualified_signer[:2] == b"\x00\x0b"  # a SHA-256 qualified name
    assert info.clock_info.clock == 504
    assert info.clock_info.reset_count == 2
    assert info.clock_info.safe is False  # swtpm state was not saved by an orderly shutdown


def test_ecdsa_signature_is_der_of_r_and_s() -> None:
    raw = _read(ECC_SET, "quote.sig")
    sig = parse_signature(raw)
    assert (sig.scheme, sig.hash_algorithm) == ("ecdsa", "sha256")
    r, s = decode_dss_signature(sig.signature)
    # TPMT_SIGNATURE: sigAlg(2) hash(2) r(2+32) s(2+32)
    assert r == int.from_bytes(raw[6:38], "big")
    assert s == int.from_bytes(raw[40:72], "big")


def test_rsa_signature() -> None:
    sig = parse_signature(_read(RSA_SET, "quote.sig"))
    assert (sig.scheme, sig.hash_algorithm, len(sig.signature)) == ("rsassa", "sha256", 256)


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_tpm2b_public_and_name(name: str) -> None:
    raw = _read(name, "ak.tpm2b_public")
    ak = parse_tpm2b_public(raw)
    assert ak.public_area == raw[2:]
    assert ak == parse_tpmt_public(raw[2:])
    assert ak.name == _read(name, "ak.name")
    assert ak.name == b"\x00\x0b" + hashlib.sha256(raw[2:]).digest()
    assert ak.name_algorithm == "sha256"
    assert (ak.scheme, ak.scheme_hash) == ("ecdsa" if "ecc" in name else "rsassa", "sha256")


def test_rsa_ak_fields() -> None:
    ak = parse_tpmt_public(
        _read("go-tpm-tools", "attestations", "gce-cos-85-nonce9009", "ak_pub.tpmt")
    )
    assert (ak.key_type, ak.key_bits, ak.rsa_exponent) == ("rsa", 2048, 0)
    assert ak.rsa_modulus is not None and len(ak.rsa_modulus) == 256


def test_ecc_ak_fields() -> None:
    ak = parse_tpm2b_public(_read(ECC_SET, "ak.tpm2b_public"))
    assert (ak.key_type, ak.ecc_curve, ak.key_bits) == ("ecc", "p256", 256)


# --- strictness ---------------------------------------------------------------------


def test_bad_magic_and_wrong_type_have_codes() -> None:
    attest = bytearray(_read(RSA_SET, "quote.attest"))
    attest[1] ^= 0xFF
    with pytest.raises(ParseError) as info:
        parse_quote_attest(bytes(attest))
    assert info.value.code == "bad_magic"
    attest[1] ^= 0xFF
    attest[5] = 0x17
    with pytest.raises(ParseError) as info:
        parse_quote_attest(bytes(attest))
    assert info.value.code == "not_a_quote"


@pytest.mark.parametrize(
    ("parser", "parts"),
    [
        (parse_quote_attest, (RSA_SET, "quote.attest")),
        (parse_signature, (RSA_SET, "quote.sig")),
        (parse_signature, (ECC_SET, "quote.sig")),
        (parse_tpm2b_public, (ECC_SET, "ak.tpm2b_public")),
        (parse_tpmt_public, ("go-attestation", "windows_gcp_shielded_vm", "ak_pub.tpmt")),
    ],
)
def test_trailing_and_truncated_input_is_rejected(parser: object, parts: tuple[str, ...]) -> None:
    raw = _read(*parts)
    for bad in [raw + b"\x00", *(raw[:n] for n in range(len(raw)))]:
        with pytest.raises(ParseError) as info:
            parser(bad)  # type: ignore[operator]
        assert info.value.code in {"malformed", "bad_magic"}


def test_oversized_input_is_rejected_before_parsing() -> None:
    with pytest.raises(ParseError, match="bound"):
        parse_quote_attest(b"\xffTCG\x80\x18" + b"\x00" * MAX_ATTEST_SIZE)


def test_tpm2b_size_must_match() -> None:
    raw = _read(ECC_SET, "ak.tpm2b_public")
    with pytest.raises(ParseError, match="size"):
        parse_tpm2b_public(raw[:2] + raw[2:] + b"\x00")
    with pytest.raises(ParseError):
        parse_tpm2b_public((len(raw) - 1).to_bytes(2, "big") + raw[2:-1])


def test_non_canonical_safe_flag_is_rejected() -> None:
    obj, _ = TPMS_ATTEST.unmarshal(_read(RSA_SET, "quote.attest"))
    obj.clockInfo.safe = 2
    with pytest.raises(ParseError, match="safe"):
        parse_quote_attest(bytes(obj.marshal()))


def test_duplicate_bank_is_rejected() -> None:
    obj, _ = TPMS_ATTEST.unmarshal(_read(RSA_SET, "quote.attest"))
    obj.attested.quote.pcrSelect = TPML_PCR_SELECTION.parse("sha256:0,1+sha256:2")
    with pytest.raises(ParseError, match="twice"):
        parse_quote_attest(bytes(obj.marshal()))


def test_unsupported_signature_scheme() -> None:
    raw = bytearray(_read(RSA_SET, "quote.sig"))
    raw[0:2] = int(TPM2_ALG.SM2).to_bytes(2, "big")
    with pytest.raises(ParseError):
        parse_signature(bytes(raw))


def test_non_bytes_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_quote_attest("not bytes")  # type: ignore[arg-type]


def test_tpm_public_is_frozen() -> None:
    ak = parse_tpm2b_public(_read(ECC_SET, "ak.tpm2b_public"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ak.attributes = 0  # type: ignore[misc]


# --- round trip: fields written with the TSS are read back -----------------------------

_BANKS = {"sha1": TPM2_ALG.SHA1, "sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384}


@settings(max_examples=200, deadline=None)
@given(
    extra=st.binary(max_size=64),
    signer=st.binary(max_size=64),
    clock=st.integers(0, 2**64 - 1),
    reset=st.integers(0, 2**32 - 1),
    restart=st.integers(0, 2**32 - 1),
    safe=st.booleans(),
    firmware=st.integers(0, 2**64 - 1),
    selection=st.dictionaries(
        st.sampled_from(sorted(_BANKS)),
        st.lists(st.integers(0, 23), min_size=1, unique=True),
        max_size=3,
    ),
    digest=st.binary(max_size=64),
)
def test_quote_round_trip(
    extra: bytes,
    signer: bytes,
    clock: int,
    reset: int,
    restart: int,
    safe: bool,
    firmware: int,
    selection: dict[str, list[int]],
    digest: bytes,
) -> None:
    obj, _ = TPMS_ATTEST.unmarshal(_read(RSA_SET, "quote.attest"))
    obj.extraData = TPM2B_DATA(extra)
    obj.qualifiedSigner = TPM2B_NAME(signer)
    obj.clockInfo.clock = clock
    obj.clockInfo.resetCount = reset
    obj.clockInfo.restartCount = restart
    obj.clockInfo.safe = int(safe)
    obj.firmwareVersion = firmware
    spec = "+".join(f"{b}:{','.join(map(str, sorted(p)))}" for b, p in selection.items())
    obj.attested.quote.pcrSelect = TPML_PCR_SELECTION.parse(spec) if spec else TPML_PCR_SELECTION()
    obj.attested.quote.pcrDigest = TPM2B_DIGEST(digest)
    info = parse_quote_attest(bytes(obj.marshal()))
    assert (info.extra_data, info.qualified_signer, info.pcr_digest) == (extra, signer, digest)
    assert (info.clock_info.clock, info.clock_info.reset_count) == (clock, reset)
    assert (info.clock_info.restart_count, info.clock_info.safe) == (restart, safe)
    assert info.firmware_version == firmware
    assert info.pcr_selection == tuple(
        PcrSelection(b, tuple(sorted(p))) for b, p in selection.items()
    )
