"""Quote authentication against real TPM vectors, plus one-mutation negatives.

Each negative test takes a valid vector, changes one thing, and expects one named
reason (STYLE.md, "Tests").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT
from tpm2_pytss.types import TPMS_ATTEST, TPMT_PUBLIC, TPMT_SIGNATURE

from tests.vectors import (
    TPM_SWTPM_SETS,
    QuoteCase,
    go_quote_case,
    swtpm_quote_case,
    vectors_dir,
)
from verifier.evidence.tpm.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tpm.keys import TpmaObject, check_attestation_key, public_key, tpm_name
from verifier.evidence.tpm.parse import (
    ClockInfo,
    TpmPublic,
    parse_quote_attest,
    parse_tpm2b_public,
    parse_tpmt_public,
)
from verifier.verdict import VerificationError

ALL_CHECKS = frozenset(
    {
        "tpm.quote.parse",
        "tpm.quote.signature",
        "tpm.quote.nonce",
        "tpm.quote.pcr_selection",
        "tpm.quote.pcr_digest",
        "tpm.quote.clock",
    }
)
GCE = "go-tpm-tools/attestations/gce-cos-85-nonce9009"
WINDOWS = "go-attestation/windows_gcp_shielded_vm"


def ak_of(case: QuoteCase) -> TpmPublic:
    parse = parse_tpm2b_public if case.ak_is_tpm2b else parse_tpmt_public
    return parse(case.ak_public)


def quoted_selection(attest: bytes) -> dict[str, tuple[int, ...]]:
    return {s.hash_algorithm: s.pcrs for s in parse_quote_attest(attest).pcr_selection}


def authenticate(case: QuoteCase, **overrides: Any) -> AuthenticatedQuote:
    kwargs: dict[str, Any] = {
        "attest": case.attest,
        "signature": case.signature,
        "ak": ak_of(case),
        "expected_qualifying_data": case.nonce,
        "required_pcrs": quoted_selection(case.attest),
        "reported_pcrs": case.pcrs,
        "previous_clock": None,
    }
    kwargs.update(overrides)
    return authenticate_quote(**kwargs)


def rejection(case: QuoteCase, **overrides: Any) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        authenticate(case, **overrides)
    return info.value


def with_pcr(pcrs: dict[str, dict[int, bytes]], bank: str, index: int, value: bytes) -> Any:
    changed = {b: dict(v) for b, v in pcrs.items()}
    changed[bank][index] = value
    return changed


# --- the real vectors authenticate -----------------------------------------------


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_swtpm_quote_authenticates(name: str) -> None:
    case = swtpm_quote_case(name)
    quote = authenticate(case)
    assert quote.checks_run == ALL_CHECKS
    assert quote.boot_event == "first"
    meta = case.expected["quote"]
    assert quote.info.extra_data.hex() == meta["nonce_hex"]
    assert quote.info.clock_info.clock == meta["clock"]
    assert quote.info.clock_info.reset_count == meta["resetCount"]
    selection = "+".join(
        f"{bank}:{','.join(map(str, pcrs))}" for bank, pcrs in quoted_selection(case.attest).items()
    )
    assert selection == meta["selection"]
    # Only covered values are passed on: pcrs.json has all 24 PCRs of every bank.
    assert {b: tuple(sorted(v)) for b, v in quote.pcrs.items()} == quoted_selection(case.attest)
    for bank, values in quote.pcrs.items():
        for index, value in values.items():
            assert value == case.pcrs[bank][index]


@pytest.mark.parametrize("bank", ["sha1", "sha256", "sha384"])
def test_gce_quotes_authenticate(bank: str) -> None:
    case = go_quote_case(GCE, f"quote_{bank}")
    assert case.nonce == bytes.fromhex("9009")
    quote = authenticate(case)
    assert quote.checks_run == ALL_CHECKS
    assert set(quote.pcrs) == {bank}
    assert sorted(quote.pcrs[bank]) == list(range(24))


def test_ak_keys_and_names_match_vector_files() -> None:
    for name in TPM_SWTPM_SETS:
        base = vectors_dir("tpm", name)
        ak = parse_tpm2b_public((base / "ak.tpm2b_public").read_bytes())
        assert tpm_name(ak) == (base / "ak.name").read_bytes()
        pem = serialization.load_pem_public_key((base / "ak.pub.pem").read_bytes())
        assert public_key(ak).public_numbers() == pem.public_numbers()  # type: ignore[union-attr]
        check_attestation_key(ak)
    gce = vectors_dir("tpm", *GCE.split("/"))
    ak = parse_tpmt_public((gce / "ak_pub.tpmt").read_bytes())
    pem = serialization.load_pem_public_key((gce / "ak_pub.pem").read_bytes())
    assert public_key(ak).public_numbers() == pem.public_numbers()  # type: ignore[union-attr]


# --- the vectors' own broken variants ---------------------------------------------


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_wrong_nonce_variant(name: str) -> None:
    case = swtpm_quote_case(name, "wrong-nonce")
    err = rejection(case)
    assert err.reason.code == "tpm.quote.nonce_mismatch"
    assert err.checks_run == {"tpm.quote.parse", "tpm.quote.signature"}


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_signature_from_other_ak_variant(name: str) -> None:
    case = swtpm_quote_case(name, "signature-from-other-ak")
    err = rejection(case)
    assert err.reason.code == "tpm.quote.signature_invalid"
    assert err.checks_run == {"tpm.quote.parse"}


def test_gce_empty_nonce_is_a_mismatch() -> None:
    case = go_quote_case("go-tpm-tools/attestations/gce-cos-85-no-nonce", "quote_sha256")
    assert case.nonce == b""
    err = rejection(case, expected_qualifying_data=bytes(range(32)))
    assert err.reason.code == "tpm.quote.nonce_mismatch"


def test_windows_sha1_signature_is_weak_by_default() -> None:
    case = go_quote_case(WINDOWS)
    nonce = case.nonce or b"\x01" * 32  # the quote's extraData is empty
    assert rejection(case, expected_qualifying_data=nonce).reason.code == "tpm.quote.weak_hash"
    err = rejection(case, expected_qualifying_data=nonce, allow_sha1_signatures=True)
    assert err.reason.code == "tpm.quote.nonce_mismatch"
    assert "tpm.quote.signature" in err.checks_run


# --- one-mutation negatives on a valid vector --------------------------------------

RSA_SET, ECC_SET, TWO_BANK_SET = TPM_SWTPM_SETS


def test_empty_expected_nonce_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        authenticate(swtpm_quote_case(RSA_SET), expected_qualifying_data=b"")


def test_the_issued_nonce_passes_although_redemption_marked_it_consumed() -> None:
    # The registry records a challenge as consumed when it is redeemed, before the
    # quote is checked: the nonce issued for *this* quote must still match.
    case = swtpm_quote_case(RSA_SET)
    quote = authenticate(case, consumed_qualifying_data=[b"other", case.nonce])
    assert quote.info.extra_data == case.nonce


def test_wrong_nonce_in_consumed_list_is_a_replay() -> None:
    case = swtpm_quote_case(RSA_SET)
    err = rejection(
        case, expected_qualifying_data=b"\x00" * 32, consumed_qualifying_data=[case.nonce]
    )
    assert err.reason.code == "tpm.quote.nonce_replayed"


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_flipped_pcr_value_breaks_the_digest(name: str) -> None:
    case = swtpm_quote_case(name)
    value = bytearray(case.pcrs["sha256"][7])
    value[0] ^= 1
    err = rejection(case, reported_pcrs=with_pcr(case.pcrs, "sha256", 7, bytes(value)))
    assert err.reason.code == "tpm.quote.pcr_digest_mismatch"
    assert "tpm.quote.pcr_selection" in err.checks_run


def test_swapping_values_within_quoted_set_breaks_the_digest() -> None:
    case = swtpm_quote_case(TWO_BANK_SET)
    pcrs = with_pcr(case.pcrs, "sha256", 0, case.pcrs["sha256"][7])
    pcrs["sha256"][7] = case.pcrs["sha256"][0]
    assert rejection(case, reported_pcrs=pcrs).reason.code == "tpm.quote.pcr_digest_mismatch"


def test_unquoted_reported_value_is_dropped_not_checked() -> None:
    case = swtpm_quote_case(RSA_SET)
    quote = authenticate(case, reported_pcrs=with_pcr(case.pcrs, "sha256", 11, b"\xee" * 32))
    assert 11 not in quote.pcrs["sha256"]
    assert "sha1" not in quote.pcrs


def test_missing_reported_value() -> None:
    case = swtpm_quote_case(TWO_BANK_SET)
    pcrs = {b: dict(v) for b, v in case.pcrs.items()}
    del pcrs["sha384"][4]
    err = rejection(case, reported_pcrs=pcrs)
    assert err.reason.code == "tpm.quote.pcr_values_missing"
    assert "sha384:4" in err.reason.detail


def test_reported_value_of_wrong_length() -> None:
    case = swtpm_quote_case(RSA_SET)
    err = rejection(case, reported_pcrs=with_pcr(case.pcrs, "sha256", 3, b"\x00" * 20))
    assert err.reason.code == "tpm.quote.pcr_value_malformed"


@pytest.mark.parametrize(
    ("required", "missing"),
    [({"sha256": [7, 11]}, "sha256:11"), ({"sha256": [7], "sha1": [0]}, "sha1:0")],
)
def test_required_pcr_not_in_the_quote(required: dict[str, list[int]], missing: str) -> None:
    err = rejection(swtpm_quote_case(RSA_SET), required_pcrs=required)
    assert err.reason.code == "tpm.quote.pcr_selection_incomplete"
    assert missing in err.reason.detail
    assert err.checks_run == {"tpm.quote.parse", "tpm.quote.signature", "tpm.quote.nonce"}


def _clock(case: QuoteCase, **changes: Any) -> ClockInfo:
    return dataclasses.replace(parse_quote_attest(case.attest).clock_info, **changes)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"reset_count": 3}, "tpm.quote.reset_count_rollback"),
        ({"restart_count": 1}, "tpm.quote.restart_count_rollback"),
        ({"clock": 10**9}, "tpm.quote.clock_rollback"),
    ],
)
def test_clock_rollback(change: dict[str, int], code: str) -> None:
    case = swtpm_quote_case(ECC_SET)
    err = rejection(case, previous_clock=_clock(case, **change))
    assert err.reason.code == code
    assert err.checks_run == ALL_CHECKS - {"tpm.quote.clock"}


def test_clock_boot_events() -> None:
    case = swtpm_quote_case(ECC_SET)
    assert authenticate(case, previous_clock=_clock(case)).boot_event == "none"
    earlier = _clock(case, clock=1)
    assert authenticate(case, previous_clock=earlier).boot_event == "none"
    rebooted = _clock(case, reset_count=1, restart_count=9, clock=10**9)
    assert authenticate(case, previous_clock=rebooted).boot_event == "reboot"


def _mutated(data: bytes, offset: int, value: int) -> bytes:
    out = bytearray(data)
    out[offset] = value
    return bytes(out)


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda a: _mutated(a, 0, 0x00), "tpm.quote.bad_magic"),
        (lambda a: _mutated(a, 5, 0x17), "tpm.quote.not_a_quote"),  # TPM_ST_ATTEST_CERTIFY
        (lambda a: a + b"\x00", "tpm.quote.malformed"),
        (lambda a: a[:-1], "tpm.quote.malformed"),
    ],
)
def test_attest_parse_failures(mutate: Any, code: str) -> None:
    case = swtpm_quote_case(RSA_SET)
    err = rejection(case, attest=mutate(case.attest))
    assert err.reason.code == code
    assert err.checks_run == frozenset()


def test_signature_over_other_bytes_is_invalid() -> None:
    case = swtpm_quote_case(ECC_SET)
    attest = _mutated(case.attest, len(case.attest) - 1, case.attest[-1] ^ 1)
    assert rejection(case, attest=attest).reason.code == "tpm.quote.signature_invalid"


def test_truncated_signature_is_malformed() -> None:
    case = swtpm_quote_case(RSA_SET)
    err = rejection(case, signature=case.signature[:-1])
    assert err.reason.code == "tpm.quote.signature_malformed"


def test_signature_of_other_key_type_is_a_scheme_mismatch() -> None:
    ecc, rsa_case = swtpm_quote_case(ECC_SET), swtpm_quote_case(RSA_SET)
    err = rejection(ecc, signature=rsa_case.signature)
    assert err.reason.code == "tpm.quote.signature_scheme_mismatch"


def test_ak_fixed_hash_differs_from_signature_hash() -> None:
    case = swtpm_quote_case(RSA_SET)
    ak = dataclasses.replace(ak_of(case), scheme_hash="sha384")
    assert rejection(case, ak=ak).reason.code == "tpm.quote.signature_scheme_mismatch"


# --- AK policy ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"clear": TpmaObject.RESTRICTED}, "enrollment.ak_not_restricted_signing"),
        ({"clear": TpmaObject.SIGN_ENCRYPT}, "enrollment.ak_not_restricted_signing"),
        ({"set": TpmaObject.DECRYPT}, "enrollment.ak_not_restricted_signing"),
        ({"clear": TpmaObject.FIXED_TPM}, "enrollment.ak_attributes_invalid"),
        ({"clear": TpmaObject.SENSITIVE_DATA_ORIGIN}, "enrollment.ak_attributes_invalid"),
        ({"name_algorithm": "sha1"}, "enrollment.ak_weak_name_algorithm"),
        ({"key_bits": 1024}, "enrollment.ak_weak_key"),
        ({"scheme": "rsaes", "scheme_hash": None}, "enrollment.ak_attributes_invalid"),
        ({"rsa_exponent": 4}, "enrollment.ak_invalid_key"),
    ],
)
def test_ak_policy(change: dict[str, Any], code: str) -> None:
    case = swtpm_quote_case(RSA_SET)
    ak = ak_of(case)
    attributes = (ak.attributes | change.pop("set", 0)) & ~change.pop("clear", 0)
    bad = dataclasses.replace(ak, attributes=attributes, **change)
    with pytest.raises(VerificationError) as info:
        check_attestation_key(bad)
    assert info.value.reason.code == code
    # authenticate_quote refuses to trust a signature by such a key.
    err = rejection(case, ak=bad)
    assert err.reason.code == code
    assert err.checks_run == {"tpm.quote.parse"}


def test_ecc_ak_point_off_curve() -> None:
    ak = ak_of(swtpm_quote_case(ECC_SET))
    assert ak.ecc_y is not None
    bad = dataclasses.replace(ak, ecc_y=bytes([ak.ecc_y[0] ^ 1]) + ak.ecc_y[1:])
    with pytest.raises(VerificationError, match=r"enrollment\.ak_invalid_key"):
        check_attestation_key(bad)


# --- synthetic quotes: a software key re-signs a modified real quote ------------------

_AK_ATTRIBUTES = (
    TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
    | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
)
HASH_IDS = {"sha1": TPM2_ALG.SHA1, "sha256": TPM2_ALG.SHA256, "sha384": TPM2_ALG.SHA384}
_HASHES = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha384": hashes.SHA384()}


@pytest.fixture(scope="module")
def software_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _software_ak(key: rsa.RSAPrivateKey) -> TpmPublic:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # No fixed scheme: the key may sign with RSASSA or RSAPSS and any hash.
    return parse_tpmt_public(
        bytes(TPMT_PUBLIC.from_pem(pem, objectAttributes=_AK_ATTRIBUTES).marshal())
    )


def _resign(key: rsa.RSAPrivateKey, attest: bytes, scheme: str, hash_name: str) -> bytes:
    pad: padding.AsymmetricPadding = (
        padding.PKCS1v15()
        if scheme == "rsassa"
        else padding.PSS(padding.MGF1(_HASHES[hash_name]), _HASHES[hash_name].digest_size)
    )
    sig = TPMT_SIGNATURE(sigAlg=TPM2_ALG.RSASSA if scheme == "rsassa" else TPM2_ALG.RSAPSS)
    body = sig.signature.rsassa if scheme == "rsassa" else sig.signature.rsapss
    body.hash = HASH_IDS[hash_name]
    body.sig = key.sign(attest, pad, _HASHES[hash_name])
    return bytes(sig.marshal())


def _with_restart_count(attest: bytes, restart_count: int) -> bytes:
    obj, _ = TPMS_ATTEST.unmarshal(attest)
    obj.clockInfo.restartCount = restart_count
    return bytes(obj.marshal())


@pytest.mark.parametrize("scheme", ["rsassa", "rsapss"])
def test_software_signed_quote_authenticates(software_rsa: rsa.RSAPrivateKey, scheme: str) -> None:
    case = swtpm_quote_case(RSA_SET)
    attest = _with_restart_count(case.attest, 2)
    quote = authenticate(
        case,
        attest=attest,
        signature=_resign(software_rsa, attest, scheme, "sha256"),
        ak=_software_ak(software_rsa),
        previous_clock=_clock(case, restart_count=1, clock=10**9),
    )
    assert quote.boot_event == "restart"
    assert quote.checks_run == ALL_CHECKS


def test_software_sha1_quote_is_weak(software_rsa: rsa.RSAPrivateKey) -> None:
    case = swtpm_quote_case(RSA_SET)
    signature = _resign(software_rsa, case.attest, "rsassa", "sha1")
    ak = _software_ak(software_rsa)
    err = rejection(case, signature=signature, ak=ak)
    assert err.reason.code == "tpm.quote.weak_hash"
    # Allowed: the signature verifies, but the pcrDigest was computed with SHA-256.
    err = rejection(case, signature=signature, ak=ak, allow_sha1_signatures=True)
    assert err.reason.code == "tpm.quote.pcr_digest_mismatch"
