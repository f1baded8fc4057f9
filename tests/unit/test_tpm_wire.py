"""The hand-written quote/signature readers agree with tpm2-pytss, the oracle.

``parse_quote_attest`` and ``parse_signature`` frame their input with
``verifier.evidence.tpm.wire``; the reference implementations below are the
previous pytss-based ones, kept verbatim. For every real vector, every
deterministic mutation of the quote and signature vectors, and thousands of
hypothesis-generated and mutated inputs, both must return the same value or both
raise ParseError (with the same code).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tpm2_pytss.types import TPMT_SIGNATURE

from tests.tpm_wire_inputs import mutations, quote_vectors, quotes, signatures, tpm_vectors
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import wire
from verifier.evidence.tpm.parse import (
    MAX_SIGNATURE_SIZE,
    TPM_ST_ATTEST_QUOTE,
    PcrSelection,
    QuoteInfo,
    TpmSignature,
    as_bytes,
    parse_quote_attest,
    parse_signature,
    read_clock_info,
    read_field,
    unmarshal_attest,
    unmarshal_exact,
)
from verifier.evidence.tpm.parse_common import hash_name as _hash_name
from verifier.evidence.tpm.parse_signatures import SIG_SCHEMES as _SIG_SCHEMES

# --- the pytss reference (the implementation the readers replaced) --------------------


def _parse_pcr_selection_pytss(quote: Any) -> tuple[PcrSelection, ...]:
    count = int(quote.pcrSelect.count)
    selections: list[PcrSelection] = []
    seen: set[str] = set()
    for i in range(count):
        sel = quote.pcrSelect.pcrSelections[i]
        bank = _hash_name(int(sel.hash), what="PCR selection")
        if bank in seen:
            raise ParseError(f"PCR selection: bank {bank} selected twice")
        seen.add(bank)
        bitmap = bytes(sel.pcrSelect)[: int(sel.sizeofSelect)]
        pcrs = tuple(
            byte_index * 8 + bit
            for byte_index, byte in enumerate(bitmap)
            for bit in range(8)
            if byte >> bit & 1
        )
        selections.append(PcrSelection(bank, pcrs))
    return tuple(selections)


def _parse_quote_attest_pytss(data: bytes) -> QuoteInfo:
    attest = unmarshal_attest(
        data, expected_type=TPM_ST_ATTEST_QUOTE, type_name="quote", type_code="not_a_quote"
    )

    def build() -> QuoteInfo:
        quote = attest.attested.quote
        return QuoteInfo(
            qualified_signer=bytes(attest.qualifiedSigner.name),
            extra_data=bytes(attest.extraData),
            clock_info=read_clock_info(attest),
            firmware_version=int(attest.firmwareVersion),
            pcr_selection=_parse_pcr_selection_pytss(quote),
            pcr_digest=bytes(quote.pcrDigest),
        )

    return read_field("TPMS_ATTEST", build)


def _parse_signature_pytss(data: bytes) -> TpmSignature:
    raw = as_bytes(data, what="TPMT_SIGNATURE", limit=MAX_SIGNATURE_SIZE)
    sig = unmarshal_exact(TPMT_SIGNATURE, raw, what="TPMT_SIGNATURE")

    def build() -> TpmSignature:
        alg = int(sig.sigAlg)
        scheme = _SIG_SCHEMES.get(alg)
        if scheme is None:
            raise ParseError(f"TPMT_SIGNATURE: unsupported signature scheme 0x{alg:04x}")
        if scheme == "ecdsa":
            ecdsa = sig.signature.ecdsa
            r, s = bytes(ecdsa.signatureR), bytes(ecdsa.signatureS)
            if not r or not s:
                raise ParseError("TPMT_SIGNATURE: empty ECDSA r or s")
            der = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
            return TpmSignature(scheme, _hash_name(int(ecdsa.hash), what="ECDSA"), der)
        rsa = sig.signature.rsassa if scheme == "rsassa" else sig.signature.rsapss
        value = bytes(rsa.sig)
        if not value:
            raise ParseError("TPMT_SIGNATURE: empty RSA signature")
        return TpmSignature(scheme, _hash_name(int(rsa.hash), what=scheme), value)

    return read_field("TPMT_SIGNATURE", build)


# --- the comparison ------------------------------------------------------------------

PAIRS: dict[str, tuple[Callable[[bytes], object], Callable[[bytes], object]]] = {
    "attest": (parse_quote_attest, _parse_quote_attest_pytss),
    "sig": (parse_signature, _parse_signature_pytss),
}


def _outcome(parser: Callable[[bytes], object], data: bytes) -> tuple[str, object]:
    try:
        return "ok", parser(data)
    except ParseError as exc:
        return "error", exc.code


def assert_agree(kind: str, data: bytes) -> str:
    """Both parsers give the same value, or both ParseError with the same code."""
    new, reference = PAIRS[kind]
    got, expected = _outcome(new, data), _outcome(reference, data)
    assert got == expected, f"{kind} {data.hex()}: wire {got!r} != pytss {expected!r}"
    return got[0]


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_real_vectors_agree_and_parse(kind: str) -> None:
    vectors = tpm_vectors(kind)
    assert len(vectors) >= 5
    outcomes = [assert_agree(kind, raw) for raw in vectors]
    # Every real signature parses; so does every real quote (other attestation
    # types are refused by both with the same code).
    if kind == "sig":
        assert set(outcomes) == {"ok"}
    else:
        assert outcomes.count("ok") == len(quote_vectors()) > 0


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_deterministic_mutations_agree(kind: str) -> None:
    # One vector per length: same-shaped vectors exercise the same paths.
    vectors = quote_vectors() if kind == "attest" else tpm_vectors(kind)
    shapes = {len(raw): raw for raw in vectors}
    count = 0
    results: set[str] = set()
    for raw in shapes.values():
        for data in mutations(raw):
            results.add(assert_agree(kind, data))
            count += 1
    assert count > 1000
    assert results == {"ok", "error"}


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=quotes())
def test_generated_quotes_agree(data: bytes) -> None:
    assert_agree("attest", data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=signatures())
def test_generated_signatures_agree(data: bytes) -> None:
    assert_agree("sig", data)


@pytest.fixture(scope="module")
def seeds() -> list[tuple[str, bytes]]:
    return [("attest", raw) for raw in quote_vectors()] + [
        ("sig", raw) for raw in tpm_vectors("sig")
    ]


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_vectors_agree(seeds: list[tuple[str, bytes]], data: st.DataObject) -> None:
    kind, raw = data.draw(st.sampled_from(seeds))
    buf = bytearray(raw)
    edits = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, 2), st.integers(0, max(0, len(buf) - 1)), st.binary(max_size=8)
            ),
            max_size=4,
        )
    )
    for edit, offset, chunk in edits:
        if edit == 0:  # overwrite
            buf[offset : offset + len(chunk)] = chunk
        elif edit == 1:  # insert
            buf[offset:offset] = chunk
        else:  # delete
            del buf[offset : offset + len(chunk) + 1]
    assert_agree(kind, bytes(buf))


@settings(max_examples=1000, deadline=None)
@given(kind=st.sampled_from(sorted(PAIRS)), data=st.binary(max_size=600))
def test_random_bytes_agree(kind: str, data: bytes) -> None:
    assert_agree(kind, data)


def test_bounds_match_the_tss() -> None:
    """The readers' TPM2B and selection bounds are the TSS's, probed directly."""
    from tpm2_pytss.types import (  # noqa: PLC0415 - only this test probes the TSS
        TPM2B_DATA,
        TPM2B_DIGEST,
        TPM2B_ECC_PARAMETER,
        TPM2B_NAME,
        TPM2B_PUBLIC_KEY_RSA,
        TPML_PCR_SELECTION,
        TPMS_PCR_SELECTION,
    )

    def accepts(cls: Any, raw: bytes) -> bool:
        try:
            cls.unmarshal(raw)
        except Exception:
            return False
        return True

    for cls, limit in [
        (TPM2B_NAME, wire.MAX_TPM2B_NAME),
        (TPM2B_DATA, wire.MAX_TPM2B_DATA),
        (TPM2B_DIGEST, wire.MAX_TPM2B_DIGEST),
        (TPM2B_PUBLIC_KEY_RSA, wire.MAX_TPM2B_PUBLIC_KEY_RSA),
        (TPM2B_ECC_PARAMETER, wire.MAX_TPM2B_ECC_PARAMETER),
    ]:
        assert accepts(cls, limit.to_bytes(2, "big") + b"\x01" * limit), cls
        assert not accepts(cls, (limit + 1).to_bytes(2, "big") + b"\x01" * (limit + 1)), cls
    n = wire.PCR_SELECT_MAX
    assert accepts(TPMS_PCR_SELECTION, b"\x00\x0b" + bytes([n]) + b"\xff" * n)
    assert not accepts(TPMS_PCR_SELECTION, b"\x00\x0b" + bytes([n + 1]) + b"\xff" * (n + 1))
    one = b"\x00\x0b\x03\xff\xff\xff"
    n = wire.NUM_PCR_BANKS
    assert accepts(TPML_PCR_SELECTION, n.to_bytes(4, "big") + one * n)
    assert not accepts(TPML_PCR_SELECTION, (n + 1).to_bytes(4, "big") + one * (n + 1))
