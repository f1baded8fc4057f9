"""The per-quote fast paths of quote authentication give the results of the careful ones.

``authenticate_quote`` takes the common case (exact ``bytes`` values of the right
length, a selection seen before, an enrolled AK) on shorter paths; each test here
drives one of the uncommon cases, or checks a shortcut against what it stands for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pytest

from tests.vectors import TPM_SWTPM_SETS, QuoteCase, swtpm_quote_case
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import parse, parse_common, wire
from verifier.evidence.tpm.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tpm.keys import (
    attestation_public_key,
    check_attestation_key,
    public_key,
    verification_key,
)
from verifier.evidence.tpm.parse import (
    PcrSelection,
    TpmPublic,
    parse_quote_attest,
    parse_signature,
    parse_tpm2b_public,
)
from verifier.evidence.tpm.signature import SignatureCheckError, verify_tpm_signature
from verifier.verdict import VerificationError

RSA_SET, ECC_SET, TWO_BANK_SET = TPM_SWTPM_SETS
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


def _ak(case: QuoteCase) -> TpmPublic:
    return parse_tpm2b_public(case.ak_public)


def _authenticate(case: QuoteCase, **overrides: Any) -> AuthenticatedQuote:
    kwargs: dict[str, Any] = {
        "attest": case.attest,
        "signature": case.signature,
        "ak": _ak(case),
        "expected_qualifying_data": case.nonce,
        "required_pcrs": {},
        "reported_pcrs": case.pcrs,
        "previous_clock": None,
    }
    kwargs.update(overrides)
    return authenticate_quote(**kwargs)


def _rejection(case: QuoteCase, **overrides: Any) -> VerificationError:
    with pytest.raises(VerificationError) as info:
        _authenticate(case, **overrides)
    return info.value


def _quoted(case: QuoteCase) -> dict[str, tuple[int, ...]]:
    return {s.hash_algorithm: s.pcrs for s in parse_quote_attest(case.attest).pcr_selection}


# --- reported PCR values off the fast path ----------------------------------------


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_non_bytes_values_are_copied_and_accepted(kind: type) -> None:
    case = swtpm_quote_case(TWO_BANK_SET)
    reported = {b: {i: kind(v) for i, v in values.items()} for b, values in case.pcrs.items()}
    quote = _authenticate(case, reported_pcrs=reported)
    assert quote.checks_run == ALL_CHECKS
    for bank, values in quote.pcrs.items():
        for index, value in values.items():
            assert type(value) is bytes
            assert value == case.pcrs[bank][index]


def test_every_missing_value_is_named_across_banks() -> None:
    case = swtpm_quote_case(TWO_BANK_SET)
    quoted = _quoted(case)
    assert len(quoted) == 2
    pcrs = {b: dict(v) for b, v in case.pcrs.items()}
    (first, first_pcrs), (second, second_pcrs) = quoted.items()
    del pcrs[first][first_pcrs[-1]]
    pcrs[second][second_pcrs[0]] = None  # type: ignore[assignment]
    err = _rejection(case, reported_pcrs=pcrs)
    assert err.reason.code == "tpm.quote.pcr_values_missing"
    assert err.reason.detail == (
        f"no value for {first}:{first_pcrs[-1]}, {second}:{second_pcrs[0]}"
    )
    assert err.checks_run == ALL_CHECKS - {"tpm.quote.pcr_digest", "tpm.quote.clock"}


def test_missing_is_reported_before_malformed() -> None:
    case = swtpm_quote_case(TWO_BANK_SET)
    (first, first_pcrs), (second, second_pcrs) = _quoted(case).items()
    pcrs = {b: dict(v) for b, v in case.pcrs.items()}
    pcrs[first][first_pcrs[0]] = b"\x00" * 3
    del pcrs[second][second_pcrs[-1]]
    err = _rejection(case, reported_pcrs=pcrs)
    assert err.reason.code == "tpm.quote.pcr_values_missing"
    del pcrs[first][first_pcrs[0]]
    pcrs[second][second_pcrs[-1]] = bytearray(7)  # type: ignore[assignment]
    err = _rejection(case, reported_pcrs={second: pcrs[second]})
    assert err.reason.code == "tpm.quote.pcr_values_missing"
    assert err.reason.detail.startswith(f"no value for {first}:")


def test_every_malformed_value_is_named() -> None:
    case = swtpm_quote_case(TWO_BANK_SET)
    (first, first_pcrs), (second, second_pcrs) = _quoted(case).items()
    pcrs = {b: dict(v) for b, v in case.pcrs.items()}
    pcrs[first][first_pcrs[0]] = b"\x01" * 5
    pcrs[second][second_pcrs[1]] = bytearray(9)  # type: ignore[assignment]
    err = _rejection(case, reported_pcrs=pcrs)
    assert err.reason.code == "tpm.quote.pcr_value_malformed"
    assert err.reason.detail == (
        f"wrong length: {first}:{first_pcrs[0]} (5 bytes), {second}:{second_pcrs[1]} (9 bytes)"
    )


def test_a_bank_not_reported_at_all_is_missing() -> None:
    case = swtpm_quote_case(RSA_SET)
    err = _rejection(case, reported_pcrs={})
    assert err.reason.code == "tpm.quote.pcr_values_missing"


# --- the seal ---------------------------------------------------------------------


def test_seal_refuses_an_equal_copy_of_the_values() -> None:
    quote = _authenticate(swtpm_quote_case(RSA_SET))
    copy = MappingProxyType({b: MappingProxyType(dict(v)) for b, v in quote.pcrs.items()})
    assert copy == quote.pcrs
    with pytest.raises(TypeError):
        dataclasses.replace(quote, pcrs=copy)
    with pytest.raises(TypeError):
        dataclasses.replace(quote, info=dataclasses.replace(quote.info))
    with pytest.raises(TypeError):
        dataclasses.replace(quote, checks_run=frozenset(set(quote.checks_run)))
    assert dataclasses.replace(quote) == quote


def test_seal_of_one_quote_does_not_fit_another() -> None:
    case = swtpm_quote_case(RSA_SET)
    first, second = _authenticate(case), _authenticate(case)
    assert first == second
    with pytest.raises(TypeError):
        AuthenticatedQuote(
            info=second.info,
            pcrs=second.pcrs,
            boot_event=second.boot_event,
            checks_run=second.checks_run,
            _seal=first._seal,
        )


def test_quote_fields_are_frozen() -> None:
    quote = _authenticate(swtpm_quote_case(ECC_SET))
    with pytest.raises(dataclasses.FrozenInstanceError):
        quote.boot_event = "none"  # type: ignore[misc]
    with pytest.raises(TypeError):
        quote.pcrs["sha256"] = {}  # type: ignore[index]


# --- parsing shortcuts ------------------------------------------------------------


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_parsed_quote_equals_the_constructor_built_one(name: str) -> None:
    case = swtpm_quote_case(name)
    info = parse_quote_attest(case.attest)
    clock = info.clock_info
    rebuilt = parse.QuoteInfo(
        info.qualified_signer,
        info.extra_data,
        parse.ClockInfo(clock.clock, clock.reset_count, clock.restart_count, clock.safe),
        info.firmware_version,
        tuple(PcrSelection(s.hash_algorithm, s.pcrs) for s in info.pcr_selection),
        info.pcr_digest,
    )
    assert info == rebuilt
    assert hash(info) == hash(rebuilt)
    assert repr(info) == repr(rebuilt)
    sig = parse_signature(case.signature)
    assert sig == parse.TpmSignature(sig.scheme, sig.hash_algorithm, sig.signature)


def test_equal_selections_share_one_decoded_value() -> None:
    case = swtpm_quote_case(RSA_SET)
    first = parse_quote_attest(case.attest).pcr_selection
    second = parse_quote_attest(bytes(bytearray(case.attest))).pcr_selection
    assert first is second
    for selection in first:
        assert selection.pcr_set == frozenset(selection.pcrs)


def test_pcr_set_is_derived_and_not_compared() -> None:
    selection = PcrSelection("sha256", (0, 7))
    assert selection.pcr_set == frozenset({0, 7})
    assert "pcr_set" not in repr(selection)
    assert dataclasses.replace(selection, pcrs=(1,)).pcr_set == frozenset({1})


def _with_selection(attest: bytes, selection: bytes) -> bytes:
    _, _, _, _, _, _, _, old, _ = wire.read_quote_body(attest)
    start = attest.index(old)
    return attest[:start] + selection + attest[start + len(old) :]


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        # sha256 twice
        (b"\x00\x00\x00\x02" + b"\x00\x0b\x03\x01\x00\x00" * 2, "selected twice"),
        # an unknown hash algorithm
        (b"\x00\x00\x00\x01\x00\x99\x03\x01\x00\x00", "unsupported hash algorithm"),
    ],
)
def test_a_refused_selection_is_refused_every_time(selection: bytes, message: str) -> None:
    attest = _with_selection(swtpm_quote_case(RSA_SET).attest, selection)
    for _ in range(3):  # failures are never cached
        with pytest.raises(ParseError, match=message):
            parse_quote_attest(attest)


def test_truncated_or_extended_quote_never_parses() -> None:
    attest = swtpm_quote_case(TWO_BANK_SET).attest
    for end in range(len(attest)):
        with pytest.raises(ParseError):
            parse_quote_attest(attest[:end])
    with pytest.raises(ParseError, match="trailing"):
        parse_quote_attest(attest + b"\x00")


@pytest.mark.parametrize(
    ("header", "code"),
    [(b"\xff\x54\x43\x46\x80\x18", "bad_magic"), (b"\xff\x54\x43\x47\x80\x17", "not_a_quote")],
)
def test_header_errors_keep_their_codes(header: bytes, code: str) -> None:
    attest = header + swtpm_quote_case(RSA_SET).attest[6:]
    with pytest.raises(ParseError) as info:
        parse_quote_attest(attest)
    assert info.value.code == code


def test_read_pcr_selection_rejects_trailing_bytes() -> None:
    with pytest.raises(ParseError, match="trailing"):
        wire.read_pcr_selection(b"\x00\x00\x00\x01\x00\x0b\x03\x01\x00\x00\xff")


def test_slot_builder_refuses_a_class_it_does_not_match() -> None:
    @dataclass(frozen=True, slots=True)
    class Two:
        a: int
        b: int

    assert len(parse_common.slot_setters(Two, ("a", "b"))) == 2
    with pytest.raises(TypeError):
        parse_common.slot_setters(Two, ("a",))

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            pass

    with pytest.raises(TypeError):
        parse_common.slot_setters(Checked, ("a",))


# --- the AK: one lookup for the check and the key ---------------------------------


@pytest.mark.parametrize("name", [RSA_SET, ECC_SET])
def test_attestation_public_key_is_the_checked_key(name: str) -> None:
    ak = _ak(swtpm_quote_case(name))
    key = attestation_public_key(ak)
    assert key.public_numbers() == public_key(ak).public_numbers()
    assert attestation_public_key(ak) is key
    check_attestation_key(ak)


def test_attestation_public_key_refuses_what_the_check_refuses() -> None:
    ak = _ak(swtpm_quote_case(RSA_SET))
    bad = dataclasses.replace(ak, attributes=ak.attributes & ~0x00010000)  # not restricted
    for call in (check_attestation_key, attestation_public_key):
        with pytest.raises(VerificationError) as info:
            call(bad)
        assert info.value.reason.code == "enrollment.ak_not_restricted_signing"


@pytest.mark.parametrize("name", [RSA_SET, ECC_SET])
def test_verify_with_a_given_key_or_a_looked_up_one(name: str) -> None:
    case = swtpm_quote_case(name)
    ak = _ak(case)
    sig = parse_signature(case.signature)
    verify_tpm_signature(case.attest, sig, ak, allow_sha1=False)
    verify_tpm_signature(case.attest, sig, ak, allow_sha1=False, public=verification_key(ak))
    tampered = case.attest[:-1] + bytes([case.attest[-1] ^ 1])
    for public in (None, attestation_public_key(ak)):
        with pytest.raises(SignatureCheckError) as info:
            verify_tpm_signature(tampered, sig, ak, allow_sha1=False, public=public)
        assert info.value.kind == "signature_invalid"
