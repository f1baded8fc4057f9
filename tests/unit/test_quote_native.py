"""The C quote reader (``quote_native``) against the Python readers, its reference.

For a quote and a signature, :func:`parse_quote_and_signature` must return exactly
``(parse_quote_attest(attest), parse_signature(signature))`` -- equal values of the
same types -- when both parse, and None otherwise (the caller then runs the Python
readers, which name the fault). Compared on every real vector pair, on every
deterministic mutation of each, on generated structures at and around every bound,
and on random bytes; the DER of an ECDSA (r, s) is compared with cryptography's
``encode_dss_signature`` over the whole range of r and s. Then ``authenticate_quote``
on real quotes, with the C path and without it.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.fuzz_quote_native import same
from tests.tpm_wire_inputs import mutations, quote_vectors, quotes, signatures, tpm_vectors
from tests.vectors import TPM_SWTPM_SETS, QuoteCase, go_quote_case, swtpm_quote_case
from verifier.evidence.errors import ParseError
from verifier.evidence.tpm import quote_native
from verifier.evidence.tpm.authenticate import AuthenticatedQuote, authenticate_quote
from verifier.evidence.tpm.parse import (
    MAX_ATTEST_SIZE,
    MAX_SIGNATURE_SIZE,
    ClockInfo,
    QuoteInfo,
    TpmSignature,
    parse_quote_attest,
    parse_signature,
    parse_tpm2b_public,
    parse_tpmt_public,
)
from verifier.evidence.tpm.parse_attest import pcr_selection

_ALLOW_ENV = "WEIGHTGATE_ALLOW_PURE_PYTHON_QUOTE"
_GCE = "go-tpm-tools/attestations/gce-cos-85-nonce9009"


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


@pytest.fixture(autouse=True)
def _native_required() -> None:
    if quote_native.active():
        return
    if os.environ.get(_ALLOW_ENV) == "1":
        pytest.skip(f"C quote module not active ({_ALLOW_ENV}=1)")
    pytest.fail(
        "verifier.evidence.tpm._quote_native is not built or is disabled: run "
        f"`make setup` (or set {_ALLOW_ENV}=1 to test a pure-Python install)"
    )


def _python(attest: bytes, signature: bytes) -> tuple[Any, Any] | None:
    try:
        return parse_quote_attest(attest), parse_signature(signature)
    except ParseError:
        return None


def assert_agree(attest: bytes, signature: bytes) -> bool:
    """The C path returns what the Python readers return, or None where they refuse."""
    expected = _python(attest, signature)
    got = quote_native.parse_quote_and_signature(attest, signature)
    context = f"attest {attest.hex()} signature {signature.hex()}"
    if expected is None:
        assert got is None, context
        return False
    assert got is not None, context
    assert same(got, expected), f"{context}: {got!r} != {expected!r}"
    return True


@pytest.fixture(scope="module")
def quotes_real() -> list[bytes]:
    found = quote_vectors()
    assert len(found) >= 5
    return found


@pytest.fixture(scope="module")
def signatures_real() -> list[bytes]:
    found = tpm_vectors("sig")
    assert len(found) >= 5
    return found


def test_every_real_quote_with_every_real_signature(
    quotes_real: list[bytes], signatures_real: list[bytes]
) -> None:
    # Every pair frames (the signature need not be the quote's: nothing is verified).
    results = {assert_agree(a, s) for a in quotes_real for s in signatures_real}
    assert results == {True}
    # Both kinds of signature are among them: the DER and the RSA paths both ran.
    schemes = {parse_signature(s).scheme for s in signatures_real}
    assert "ecdsa" in schemes
    assert schemes & {"rsassa", "rsapss"}


def _one_per_length(raws: list[bytes]) -> list[bytes]:
    return list({len(raw): raw for raw in raws}.values())


@pytest.mark.parametrize("mutated", ["quote", "signature"])
def test_mutated_vectors_agree(
    quotes_real: list[bytes], signatures_real: list[bytes], mutated: str
) -> None:
    """Every mutation of one vector per length, the other structure a real one."""
    if mutated == "quote":
        pairs = [
            (d, signatures_real[0]) for r in _one_per_length(quotes_real) for d in mutations(r)
        ]
    else:
        pairs = [
            (quotes_real[0], d) for r in _one_per_length(signatures_real) for d in mutations(r)
        ]
    outcomes = [assert_agree(attest, signature) for attest, signature in pairs]
    assert len(outcomes) > 1000
    assert set(outcomes) == {True, False}


@_settings(1500)
@given(attest=quotes(), signature=signatures())
def test_generated_pairs_agree(attest: bytes, signature: bytes) -> None:
    assert_agree(attest, signature)


@_settings(500)
@given(data=st.data())
def test_random_bytes_agree(
    quotes_real: list[bytes], signatures_real: list[bytes], data: st.DataObject
) -> None:
    noise = data.draw(st.binary(max_size=600))
    if data.draw(st.booleans()):
        assert_agree(noise, data.draw(st.sampled_from(signatures_real)))
    else:
        assert_agree(data.draw(st.sampled_from(quotes_real)), noise)


def _tpm2b(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


# A quote of our own making (signer, nonce, clock, one sha256 selection of PCRs 0-7
# and 10, a digest), so that the tests of the signature encodings run without the
# shared vectors.
_QUOTE = (
    b"\xff\x54\x43\x47\x80\x18"
    + _tpm2b(b"\x00\x0b" + b"\x11" * 32)
    + _tpm2b(b"\x22" * 32)
    + (7).to_bytes(8, "big")
    + (1).to_bytes(4, "big")
    + (0).to_bytes(4, "big")
    + b"\x01"
    + (0x2023_0001).to_bytes(8, "big")
    + (1).to_bytes(4, "big")
    + b"\x00\x0b\x03\xff\x04\x00"
    + _tpm2b(b"\x33" * 32)
)


def test_the_synthetic_quote_parses() -> None:
    info = parse_quote_attest(_QUOTE)
    assert info.extra_data == b"\x22" * 32
    assert info.clock_info.clock == 7 and info.clock_info.safe is True
    assert [(s.hash_algorithm, s.pcrs) for s in info.pcr_selection] == [
        ("sha256", (0, 1, 2, 3, 4, 5, 6, 7, 10))
    ]
    assert_agree(_QUOTE, _ecdsa(b"\x01", b"\x02"))


def _ecdsa(r: bytes, s: bytes, hash_alg: int = 0x000B) -> bytes:
    return (
        b"\x00\x18"
        + hash_alg.to_bytes(2, "big")
        + len(r).to_bytes(2, "big")
        + r
        + len(s).to_bytes(2, "big")
        + s
    )


_PART = st.binary(min_size=1, max_size=128) | st.sampled_from(
    [b"\x00", b"\x00" * 128, b"\xff" * 128, b"\x80", b"\x7f", b"\x00\x80", b"\x00" * 127 + b"\x01"]
)


@_settings(1500)
@given(r=_PART, s=_PART)
def test_ecdsa_der_is_cryptographys(r: bytes, s: bytes) -> None:
    got = quote_native.parse_quote_and_signature(_QUOTE, _ecdsa(r, s))
    assert got is not None
    expected = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
    assert got[1].signature == expected
    assert_agree(_QUOTE, _ecdsa(r, s))


def test_ecdsa_der_every_length() -> None:
    """Every length of r and of s, with and without the pad byte: every SEQUENCE
    length from the shortest to 264, so every edge of the short, 0x81 and 0x82 forms."""
    lengths: set[int] = set()
    for r_len in range(1, 129):
        for s_len in range(1, 129):
            r = bytes([0x7F if (r_len + s_len) % 2 else 0x80]) * r_len
            s = bytes([0x80 if s_len % 3 else 0x01]) * s_len
            got = quote_native.parse_quote_and_signature(_QUOTE, _ecdsa(r, s))
            assert got is not None
            expected = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
            assert got[1].signature == expected, (r.hex(), s.hex())
            lengths.add(len(expected))
    assert {127 + 2, 128 + 3, 255 + 3, 256 + 4, 264 + 4} <= lengths


def test_ecdsa_der_length_forms() -> None:
    """Short, 0x81 and 0x82 SEQUENCE lengths and 0x81 INTEGER lengths, at their edges."""
    for r, s in [
        (b"\x01", b"\x01"),  # 30 06
        (b"\x7f" * 60, b"\x7f" * 62),  # content 126
        (b"\x7f" * 61, b"\x7f" * 62),  # content 127: last short form
        (b"\x7f" * 62, b"\x7f" * 62),  # content 128: 0x81
        (b"\xff" * 127, b"\x01"),  # r is 128 bytes with its pad: 0x81 INTEGER length
        (b"\xff" * 128, b"\xff" * 128),  # content 264: 0x82
        (b"\x00" * 128, b"\x00" * 128),  # zero and zero
    ]:
        got = quote_native.parse_quote_and_signature(_QUOTE, _ecdsa(r, s))
        assert got is not None
        expected = encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))
        assert got[1].signature == expected, (r.hex(), s.hex())


def test_refusals_are_the_python_readers() -> None:
    attest = _QUOTE
    # Each is one the Python readers refuse; the C path must hand it back (None).
    for signature in [
        _ecdsa(b"", b"\x01"),  # empty r
        _ecdsa(b"\x01", b""),  # empty s
        _ecdsa(b"\x01" * 129, b"\x01"),  # r over TPM2B_ECC_PARAMETER
        _ecdsa(b"\x01", b"\x01", hash_alg=0x0012),  # sm3_256: no such hash here
        b"\x00\x14\x00\x0b\x00\x00",  # empty RSA signature
        b"\x00\x14\x00\x0b\x02\x01" + b"\x01" * 513,  # RSA over 512
        b"\x00\x05\x00\x0b\x00\x01\x01",  # HMAC
        _ecdsa(b"\x01", b"\x01") + b"\x00",  # trailing byte
    ]:
        assert _python(attest, signature) is None
        assert quote_native.parse_quote_and_signature(attest, signature) is None
    signer = attest[6] << 8 | attest[7]
    extra_at = 8 + signer
    safe_at = extra_at + 2 + (attest[extra_at] << 8 | attest[extra_at + 1]) + 16
    assert attest[safe_at] in (0, 1)
    signature = _ecdsa(b"\x01", b"\x01")
    for bad in [
        attest[:safe_at] + b"\x02" + attest[safe_at + 1 :],  # safe is not a TPMI_YES_NO
        b"\xff\x54\x43\x47\x80\x17" + attest[6:],  # another attestation type
        b"\xff\x54\x43\x46" + attest[4:],  # not TPM_GENERATED
    ]:
        assert _python(bad, signature) is None
        assert quote_native.parse_quote_and_signature(bad, signature) is None


def test_only_exact_bytes(quotes_real: list[bytes], signatures_real: list[bytes]) -> None:
    attest, signature = quotes_real[0], signatures_real[0]
    # Anything but bytes goes through the Python readers (which copy it first).
    for a, s in [(bytearray(attest), signature), (attest, memoryview(signature))]:
        assert quote_native.parse_quote_and_signature(a, s) is None  # type: ignore[arg-type]


def test_configure_takes_only_the_exact_classes() -> None:
    module: Any = quote_native._module

    @dataclass(frozen=True, slots=True)
    class Shorter:
        scheme: str
        hash_algorithm: str

    @dataclass(frozen=True, slots=True)
    class Renamed:
        scheme: str
        hash_algorithm: str
        value: bytes

    @dataclass(frozen=True, slots=True)
    class OtherClock:  # the clock's names in another slot order
        safe: bool
        restart_count: int
        reset_count: int
        clock: int

    for signature_class in (Shorter, Renamed, QuoteInfo):
        with pytest.raises(TypeError):
            # The clock class passes its check before the signature class fails.
            module.configure(QuoteInfo, OtherClock, signature_class, pcr_selection, ParseError)
    with pytest.raises(TypeError):
        module.configure(QuoteInfo, ClockInfo, TpmSignature, None, ParseError)
    # A refused configuration changed nothing: the reader still makes the real classes.
    pair = (_QUOTE, _ecdsa(b"\x01", b"\x02"))
    got = module.quote(*pair)
    assert type(got[0]) is QuoteInfo and type(got[1]) is TpmSignature
    assert same(got, _python(*pair))


def test_bounds_are_the_readers() -> None:
    module: Any = quote_native._module
    assert module.MAX_ATTEST_SIZE == MAX_ATTEST_SIZE
    assert module.MAX_SIGNATURE_SIZE == MAX_SIGNATURE_SIZE
    assert quote_native._matches_readers(module)
    signature = _ecdsa(b"\x01", b"\x02")
    assert module.quote(_QUOTE, signature) is not None
    with pytest.raises(TypeError):
        module.quote(b"")


@pytest.mark.parametrize(
    ("name", "value"),
    [("MAX_TPM2B_DATA", 65), ("MAX_TPM2B_ECC_PARAMETER", 127), ("HASH_ALGS", (4, 11, 12))],
)
def test_a_build_with_other_bounds_is_not_used(name: str, value: object) -> None:
    """quote_native checks every bound and hash of the C reader against the Python
    readers' at import; one that differs turns the C path off."""

    class Stale:
        pass

    stale = Stale()
    for attribute in [*quote_native._READER_BOUNDS, "HASH_ALGS"]:
        setattr(stale, attribute, getattr(quote_native._module, attribute))
    assert quote_native._matches_readers(stale)  # type: ignore[arg-type]
    setattr(stale, name, value)
    assert not quote_native._matches_readers(stale)  # type: ignore[arg-type]


@contextmanager
def _python_path() -> Iterator[None]:
    with mock.patch.object(quote_native, "_quote", None):
        yield


def _outcome(run: Callable[[], Any]) -> object:
    try:
        return run()
    except Exception as exc:  # the outcome compared is the exception
        return type(exc), str(exc), getattr(exc, "reason", None), getattr(exc, "checks_run", None)


def test_environment_switch() -> None:
    for setting, active in (("0", "False"), ("1", "True")):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "from verifier.evidence.tpm import quote_native; print(quote_native.active())",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "WEIGHTGATE_QUOTE_NATIVE": setting},
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == active


def _cases() -> list[QuoteCase]:
    cases = [swtpm_quote_case(name) for name in TPM_SWTPM_SETS]
    cases += [go_quote_case(_GCE, f"quote_{bank}") for bank in ("sha1", "sha256", "sha384")]
    return cases


def _authenticate(
    case: QuoteCase, attest: bytes, signature: bytes, *, refused_ak: bool = False
) -> object:
    parse = parse_tpm2b_public if case.ak_is_tpm2b else parse_tpmt_public
    selection = {s.hash_algorithm: s.pcrs for s in parse_quote_attest(case.attest).pcr_selection}
    ak = parse(case.ak_public)
    if refused_ak:  # not restricted: check_attestation_key refuses it
        ak = dataclasses.replace(ak, attributes=ak.attributes & ~0x00010000)
    return _outcome(
        lambda: authenticate_quote(
            attest=attest,
            signature=signature,
            ak=ak,
            expected_qualifying_data=case.nonce,
            required_pcrs=selection,
            reported_pcrs=case.pcrs,
            previous_clock=None,
        )
    )


def _summary(outcome: object) -> object:
    """An AuthenticatedQuote by what it holds (each one carries its own seal)."""
    if isinstance(outcome, AuthenticatedQuote):
        return outcome.info, dict(outcome.pcrs), outcome.boot_event, outcome.checks_run
    return outcome


def test_authenticate_quote_with_and_without_the_c_path() -> None:
    """Real quotes and one-byte changes of them: the same quote or the same error
    (reason and the checks passed before it) either way."""
    accepted = 0
    for case in _cases():
        inputs = [(case.attest, case.signature)]
        for offset in range(len(case.attest)):
            inputs.append((_flip(case.attest, offset), case.signature))
        for offset in range(len(case.signature)):
            inputs.append((case.attest, _flip(case.signature, offset)))
        for attest, signature in inputs:
            native = _authenticate(case, attest, signature)
            with _python_path():
                python = _authenticate(case, attest, signature)
            assert _summary(native) == _summary(python), (attest.hex(), signature.hex())
            accepted += isinstance(native, AuthenticatedQuote)
    assert accepted >= len(_cases())


def test_a_refused_ak_is_reported_in_the_same_place_either_way() -> None:
    """The AK check runs after the quote parses and before the signature does, on
    both paths: a refused AK with a malformed quote is the quote's fault, with a
    malformed signature or a good one the AK's."""
    case = swtpm_quote_case(TPM_SWTPM_SETS[0])
    codes = {}
    for label, attest, signature in [
        ("good", case.attest, case.signature),
        ("bad quote", case.attest[:-1], case.signature),
        ("bad signature", case.attest, case.signature[:-1]),
    ]:
        native = _authenticate(case, attest, signature, refused_ak=True)
        with _python_path():
            python = _authenticate(case, attest, signature, refused_ak=True)
        assert native == python
        assert isinstance(native, tuple)
        codes[label] = (native[2].code, native[3])
    assert codes == {
        "good": ("enrollment.ak_not_restricted_signing", frozenset({"tpm.quote.parse"})),
        "bad quote": ("tpm.quote.malformed", frozenset()),
        "bad signature": ("enrollment.ak_not_restricted_signing", frozenset({"tpm.quote.parse"})),
    }


def _flip(raw: bytes, offset: int) -> bytes:
    return raw[:offset] + bytes([raw[offset] ^ 0x01]) + raw[offset + 1 :]
