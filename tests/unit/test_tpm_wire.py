"""The hand-written quote/signature readers agree with tpm2-pytss, the oracle.

``parse_quote_attest`` and ``parse_signature`` frame their input with
``verifier.evidence.tpm.wire``; the reference implementations below are the
previous pytss-based ones, kept verbatim. For every real vector, every
deterministic mutation of the quote and signature vectors, and thousands of
hypothesis-generated and mutated inputs, both must return the same value or both
raise ParseError (with the same code).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tpm2_pytss.types import TPMT_SIGNATURE

from tests import vectors
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


def _vectors(kind: str) -> list[bytes]:
    vectors.vectors_dir("tpm")  # skips when the vectors are absent
    pattern = "*.attest" if kind == "attest" else "*.sig"
    return sorted(
        {path.read_bytes() for path in (vectors.testvectors_root() / "tpm").rglob(pattern)}
    )


def _quote_vectors() -> list[bytes]:
    return [v for v in _vectors("attest") if v[4:6] == b"\x80\x18"]


def _mutations(raw: bytes) -> Iterator[bytes]:
    for n in range(len(raw)):
        yield raw[:n]
    for offset in range(len(raw)):
        for value in (raw[offset] ^ 0x01, raw[offset] ^ 0x80, 0x00, 0xFF, raw[offset] + 1 & 0xFF):
            yield raw[:offset] + bytes([value]) + raw[offset + 1 :]
    for tail in (b"\x00", b"\xff" * 3, raw):
        yield raw + tail


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_real_vectors_agree_and_parse(kind: str) -> None:
    vectors = _vectors(kind)
    assert len(vectors) >= 5
    outcomes = [assert_agree(kind, raw) for raw in vectors]
    # Every real signature parses; so does every real quote (other attestation
    # types are refused by both with the same code).
    if kind == "sig":
        assert set(outcomes) == {"ok"}
    else:
        assert outcomes.count("ok") == len(_quote_vectors()) > 0


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_deterministic_mutations_agree(kind: str) -> None:
    # One vector per length: same-shaped vectors exercise the same paths.
    vectors = _quote_vectors() if kind == "attest" else _vectors(kind)
    shapes = {len(raw): raw for raw in vectors}
    count = 0
    results: set[str] = set()
    for raw in shapes.values():
        for data in _mutations(raw):
            results.add(assert_agree(kind, data))
            count += 1
    assert count > 1000
    assert results == {"ok", "error"}


# --- structure-aware generation: every field at and around its bound -------------------

# The TSS buffer sizes, written out rather than taken from ``wire`` so that a wrong
# bound there is generated at, around and past, and caught.
_NAME, _DATA, _DIGEST, _RSA, _ECC = 68, 64, 64, 512, 128


def _rarely(draw: st.DrawFn, usual: object, unusual: list[object]) -> Any:
    """``usual`` most of the time, else one of ``unusual``: generated inputs must be
    mostly valid, or a reader that is wrong about one field would only ever be
    compared on inputs that both parsers refuse for another reason."""
    return draw(st.sampled_from([usual] * 12 + unusual))


def _tpm2b(draw: st.DrawFn, limit: int) -> bytes:
    size = draw(
        st.sampled_from([0, 1, limit - 1, limit, limit - 2, limit + 1]) | st.integers(0, limit)
    )
    body = draw(st.binary(min_size=size, max_size=size))
    # Sometimes the size field lies about what follows.
    declared = _rarely(draw, size, [size + 1, max(0, size - 1), 0xFFFF])
    return int(declared).to_bytes(2, "big") + body


_VALID_HASHES = [0x0004, 0x000B, 0x000C, 0x000D]
_OTHER_HASHES = [0x0012, 0x0000, 0x0010, 0xFFFF]


@st.composite
def quotes(draw: st.DrawFn) -> bytes:
    magic = _rarely(draw, 0xFF544347, [0xFF544346])
    st_type = _rarely(draw, 0x8018, [0x8017, 0x0000])
    head = magic.to_bytes(4, "big") + st_type.to_bytes(2, "big")
    head += _tpm2b(draw, _NAME) + _tpm2b(draw, _DATA)
    head += draw(st.binary(min_size=16, max_size=16))  # clock, resetCount, restartCount
    head += bytes([_rarely(draw, draw(st.sampled_from([0, 1])), [2, 0xFF])])  # safe
    head += draw(st.binary(min_size=8, max_size=8))  # firmwareVersion
    banks = draw(st.permutations(_VALID_HASHES))
    # TPM2_NUM_PCR_BANKS is 16: past 4 banks, some repeat (refused after framing).
    count = _rarely(draw, draw(st.integers(0, 4)), [15, 16, 17, draw(st.integers(5, 20))])
    declared = _rarely(draw, count, [count + 1, max(0, count - 1), 0xFFFFFFFF])
    body = int(declared).to_bytes(4, "big")
    for i in range(count):
        alg = banks[i] if i < len(banks) else draw(st.sampled_from(_VALID_HASHES))
        body += _rarely(draw, alg, _OTHER_HASHES).to_bytes(2, "big")
        size = _rarely(draw, draw(st.integers(0, 4)), [5, 6, 255])  # PCR_SELECT_MAX is 4
        body += bytes([size]) + draw(st.binary(min_size=size, max_size=size))
    body += _tpm2b(draw, _DIGEST)
    body += _rarely(draw, b"", [b"\x00", b"\x00\x00"])
    return head + body


@st.composite
def signatures(draw: st.DrawFn) -> bytes:
    alg = _rarely(draw, draw(st.sampled_from([0x0014, 0x0016, 0x0018])), [0x0005, 0x0010, 0x001B])
    hash_alg = _rarely(draw, draw(st.sampled_from(_VALID_HASHES)), _OTHER_HASHES)
    out = alg.to_bytes(2, "big") + hash_alg.to_bytes(2, "big")
    if alg in (0x0014, 0x0016):
        out += _tpm2b(draw, _RSA)
    else:
        out += _tpm2b(draw, _ECC)
        out += _tpm2b(draw, _ECC)
    out += _rarely(draw, b"", [b"\x00", b"\x00\x00"])
    return out[: _rarely(draw, len(out), [len(out) - 1, 3, 1])]


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
    return [("attest", raw) for raw in _quote_vectors()] + [("sig", raw) for raw in _vectors("sig")]


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
