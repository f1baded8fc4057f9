"""Appraising authenticated quotes against reference PCR values."""

from __future__ import annotations

import dataclasses

import pytest

from tests.vectors import TPM_SWTPM_SETS, QuoteCase, swtpm_quote_case
from verifier.evidence.tpm.appraise import ReferencePcrs, appraise_pcrs
from verifier.evidence.tpm.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tpm.parse import parse_quote_attest, parse_tpm2b_public
from verifier.verdict import Tier

RSA_SET, ECC_SET, TWO_BANK_SET = TPM_SWTPM_SETS


def quoted_reference(case: QuoteCase) -> ReferencePcrs:
    """Reference values from pcrs.json for exactly the PCRs the quote selects."""
    info = parse_quote_attest(case.attest)
    return ReferencePcrs(
        {
            s.hash_algorithm: {i: case.pcrs[s.hash_algorithm][i] for i in s.pcrs}
            for s in info.pcr_selection
        }
    )


def authenticated(case: QuoteCase, reference: ReferencePcrs) -> AuthenticatedQuote:
    return authenticate_quote(
        attest=case.attest,
        signature=case.signature,
        ak=parse_tpm2b_public(case.ak_public),
        expected_qualifying_data=case.nonce,
        required_pcrs=reference.required(),
        reported_pcrs=case.pcrs,
        previous_clock=None,
    )


def flipped(value: bytes) -> bytes:
    return bytes([value[0] ^ 0x80]) + value[1:]


@pytest.mark.parametrize("name", TPM_SWTPM_SETS)
def test_vectors_appraise_affirming(name: str) -> None:
    case = swtpm_quote_case(name)
    reference = quoted_reference(case)
    verdict = appraise_pcrs(authenticated(case, reference), reference)
    assert verdict.tier is Tier.AFFIRMING
    assert verdict.affirms
    assert "tpm.pcr.reference" in verdict.checks_run
    assert "tpm.quote.pcr_digest" in verdict.checks_run


def test_every_mismatch_is_reported() -> None:
    case = swtpm_quote_case(TWO_BANK_SET)
    good = quoted_reference(case)
    quote = authenticated(case, good)
    values = {bank: dict(pcrs) for bank, pcrs in good.values.items()}
    values["sha256"][7] = flipped(values["sha256"][7])
    values["sha384"][4] = flipped(values["sha384"][4])
    verdict = appraise_pcrs(quote, ReferencePcrs(values))
    assert verdict.tier is Tier.CONTRAINDICATED
    assert verdict.reason_codes() == ("tpm.pcr.mismatch", "tpm.pcr.mismatch")
    sha256_pcr7 = case.pcrs["sha256"][7]
    assert verdict.reasons[0].detail == (
        f"sha256 PCR7: expected {flipped(sha256_pcr7).hex()} got {sha256_pcr7.hex()}"
    )
    assert verdict.reasons[1].detail.startswith("sha384 PCR4: expected ")
    assert verdict.checks_run == quote.checks_run | {"tpm.pcr.reference"}


def test_reference_pcr_not_in_the_quote() -> None:
    case = swtpm_quote_case(RSA_SET)
    good = quoted_reference(case)
    quote = authenticated(case, good)
    # PCR 11 and the sha1 bank are in pcrs.json but not selected by this quote, so
    # authentication dropped them: appraisal must not see them.
    values = {"sha256": {**good.values["sha256"], 11: case.pcrs["sha256"][11]}}
    values["sha1"] = {0: case.pcrs["sha1"][0]}
    verdict = appraise_pcrs(quote, ReferencePcrs(values))
    assert verdict.reason_codes() == ("tpm.pcr.not_quoted", "tpm.pcr.not_quoted")
    assert [r.detail for r in verdict.reasons] == [
        "sha1 PCR0: not quoted",
        "sha256 PCR11: not quoted",
    ]


def test_verdict_is_not_a_bool() -> None:
    case = swtpm_quote_case(ECC_SET)
    reference = quoted_reference(case)
    verdict = appraise_pcrs(authenticated(case, reference), reference)
    with pytest.raises(TypeError):
        bool(verdict)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"sha256": {}},
        {"md5": {0: b"\x00" * 16}},
        {"sha256": {0: b"\x00" * 20}},
        {"sha256": {40: b"\x00" * 32}},
    ],
)
def test_reference_refuses_empty_or_bad_values(values: dict[str, dict[int, bytes]]) -> None:
    with pytest.raises(ValueError):
        ReferencePcrs(values)


def test_reference_is_a_copy() -> None:
    source = {"sha256": {7: b"\x01" * 32}}
    reference = ReferencePcrs(source)
    source["sha256"][7] = b"\x02" * 32
    assert reference.values["sha256"][7] == b"\x01" * 32
    assert reference.required() == {"sha256": frozenset({7})}
    with pytest.raises(TypeError):
        reference.values["sha256"][8] = b"\x00" * 32  # type: ignore[index]


def test_authenticated_quote_cannot_be_built_directly() -> None:
    info = parse_quote_attest(swtpm_quote_case(RSA_SET).attest)
    with pytest.raises(TypeError, match="authenticate_quote"):
        AuthenticatedQuote(info=info, pcrs={}, boot_event="first", checks_run=frozenset())


def test_appraise_refuses_unauthenticated_input() -> None:
    reference = ReferencePcrs({"sha256": {7: b"\x01" * 32}})
    with pytest.raises(TypeError):
        appraise_pcrs(object(), reference)  # type: ignore[arg-type]


def test_authenticated_quote_cannot_be_doctored_with_replace() -> None:
    case = swtpm_quote_case(RSA_SET)
    reference = quoted_reference(case)
    quote = authenticated(case, reference)
    assert dataclasses.replace(quote) == quote
    doctored = {"sha256": {**quote.pcrs["sha256"], 7: b"\x00" * 32}}
    with pytest.raises(TypeError, match="authenticate_quote"):
        dataclasses.replace(quote, pcrs=doctored)
    with pytest.raises(TypeError, match="authenticate_quote"):
        dataclasses.replace(quote, boot_event="none")
