"""Authenticate a TPM 2.0 quote: the only way to obtain an :class:`AuthenticatedQuote`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NoReturn

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.keys import check_attestation_key
from verifier.evidence.tpm.parse import (
    HASH_SIZES,
    ClockInfo,
    QuoteInfo,
    TpmPublic,
    TpmSignature,
    parse_quote_attest,
    parse_signature,
)
from verifier.evidence.tpm.signature import SignatureCheckError, verify_tpm_signature
from verifier.verdict import Reason, VerificationError

__all__ = [
    "CHECK_CLOCK",
    "CHECK_NONCE",
    "CHECK_PARSE",
    "CHECK_PCR_DIGEST",
    "CHECK_PCR_SELECTION",
    "CHECK_SIGNATURE",
    "AuthenticatedQuote",
    "authenticate_quote",
]

CHECK_PARSE = "tpm.quote.parse"
CHECK_SIGNATURE = "tpm.quote.signature"
CHECK_NONCE = "tpm.quote.nonce"
CHECK_PCR_SELECTION = "tpm.quote.pcr_selection"
CHECK_PCR_DIGEST = "tpm.quote.pcr_digest"
CHECK_CLOCK = "tpm.quote.clock"

_PARSE_CODES = {"bad_magic": "tpm.quote.bad_magic", "not_a_quote": "tpm.quote.not_a_quote"}


class _Seal:
    """Proof that authenticate_quote built an AuthenticatedQuote, bound to its content.

    Binding to the content (not just a sentinel) means ``dataclasses.replace(quote,
    pcrs=...)``, which copies the seal, fails instead of yielding a doctored quote.
    """

    __slots__ = ("content",)

    def __init__(self, content: object) -> None:
        self.content = content


def _content(
    info: QuoteInfo,
    pcrs: Mapping[str, Mapping[int, bytes]],
    boot_event: str,
    checks_run: frozenset[str],
) -> object:
    frozen_pcrs = tuple([(bank, tuple(sorted(values.items()))) for bank, values in pcrs.items()])
    return (info, frozen_pcrs, boot_event, checks_run)


@dataclass(frozen=True, slots=True)
class AuthenticatedQuote:
    """A quote whose signature, nonce, PCR digest and clock have been verified.

    ``pcrs`` holds only the PCR values covered by the verified pcrDigest. Built only
    by :func:`authenticate_quote`; direct construction (or ``dataclasses.replace``
    with other values) raises TypeError so that unverified values cannot reach
    appraisal by mistake.
    """

    info: QuoteInfo
    pcrs: Mapping[str, Mapping[int, bytes]]
    boot_event: str
    checks_run: frozenset[str]
    _seal: object = field(default=None, repr=False, compare=False, kw_only=True)

    def __post_init__(self) -> None:
        content = _content(self.info, self.pcrs, self.boot_event, self.checks_run)
        if not isinstance(self._seal, _Seal) or self._seal.content != content:
            raise TypeError("AuthenticatedQuote is built only by authenticate_quote()")


def _fail(code: str, detail: str, done: list[str]) -> NoReturn:
    raise VerificationError(Reason(code, detail), done)


def _verify_signature(
    attest: bytes, sig: TpmSignature, ak: TpmPublic, *, allow_sha1: bool, done: list[str]
) -> None:
    try:
        verify_tpm_signature(attest, sig, ak, allow_sha1=allow_sha1)
    except SignatureCheckError as exc:
        # The kinds are named after the quote codes: tpm.quote.signature_invalid etc.
        _fail(f"tpm.quote.{exc.kind}", exc.detail, done)


# The hash constructors for the banks HASH_SIZES knows (hashlib.new is slower).
_HASHERS = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}


def _covered_pcrs(
    info: QuoteInfo,
    reported: Mapping[str, Mapping[int, bytes]],
    digest_alg: str,
    done: list[str],
) -> Mapping[str, Mapping[int, bytes]]:
    """Check the reported values against pcrDigest; return only the covered ones."""
    covered: dict[str, dict[int, bytes]] = {}
    # TPM 2.0 Part 3, 18.4: banks in TPML order, PCRs ascending, hashed with the
    # signing scheme's hash.
    ordered: list[bytes] = []
    missing: list[str] = []
    malformed: list[str] = []
    for selection in info.pcr_selection:
        bank = selection.hash_algorithm
        size = HASH_SIZES[bank]
        values = reported.get(bank, {})
        covered[bank] = bank_values = {}
        for index in selection.pcrs:
            value = values.get(index)
            if value is None:
                missing.append(f"{bank}:{index}")
                continue
            if type(value) is not bytes:
                value = bytes(value)  # a private, immutable copy
            # Lengths must be exact: otherwise values could be shifted between PCRs
            # and still concatenate to the quoted digest.
            if len(value) != size:
                malformed.append(f"{bank}:{index} ({len(value)} bytes)")
            bank_values[index] = value
            ordered.append(value)
    if missing:
        _fail("tpm.quote.pcr_values_missing", "no value for " + ", ".join(missing), done)
    if malformed:
        _fail("tpm.quote.pcr_value_malformed", "wrong length: " + ", ".join(malformed), done)
    digest = _HASHERS[digest_alg](b"".join(ordered)).digest()
    if not hmac.compare_digest(digest, info.pcr_digest):
        _fail(
            "tpm.quote.pcr_digest_mismatch",
            f"{digest_alg} of the reported PCR values != quoted pcrDigest",
            done,
        )
    return MappingProxyType({b: MappingProxyType(v) for b, v in covered.items()})


def _boot_event(current: ClockInfo, previous: ClockInfo | None, done: list[str]) -> str:
    if previous is None:
        return "first"
    if current.reset_count < previous.reset_count:
        _fail(
            "tpm.quote.reset_count_rollback",
            f"resetCount {current.reset_count} < {previous.reset_count}",
            done,
        )
    if current.reset_count > previous.reset_count:
        return "reboot"  # TPM Reset: clock and restartCount may start over
    if current.restart_count < previous.restart_count:
        _fail(
            "tpm.quote.restart_count_rollback",
            f"restartCount {current.restart_count} < {previous.restart_count}",
            done,
        )
    if current.restart_count > previous.restart_count:
        return "restart"
    if current.clock < previous.clock:
        _fail("tpm.quote.clock_rollback", f"clock {current.clock} < {previous.clock}", done)
    return "none"


def authenticate_quote(
    *,
    attest: bytes,
    signature: bytes,
    ak: TpmPublic,
    expected_qualifying_data: bytes,
    required_pcrs: Mapping[str, Collection[int]],
    reported_pcrs: Mapping[str, Mapping[int, bytes]],
    previous_clock: ClockInfo | None,
    consumed_qualifying_data: Collection[bytes] = (),
    allow_sha1_signatures: bool = False,
) -> AuthenticatedQuote:
    """Authenticate a TPM quote; raise VerificationError at the first failure.

    ``ak`` must be the enrolled attestation key (a trusted input, not evidence).
    The error carries the reason and the checks that had passed before it. Checks,
    in order:

    1. ``tpm.quote.parse``: ``attest`` is a TPMS_ATTEST quote
       (tpm.quote.malformed / tpm.quote.bad_magic / tpm.quote.not_a_quote);
    2. ``tpm.quote.signature``: the AK passes ``check_attestation_key`` (its
       ``enrollment.*`` reason otherwise, since only a restricted key's quotes are
       unforgeable); ``signature`` parses (tpm.quote.signature_malformed); its
       scheme suits the AK's key type and fixed scheme/hash
       (tpm.quote.signature_scheme_mismatch); it is not SHA-1 unless
       ``allow_sha1_signatures`` (tpm.quote.weak_hash); it verifies over the exact
       ``attest`` bytes (tpm.quote.signature_invalid);
    3. ``tpm.quote.nonce``: extraData is not a consumed nonce
       (tpm.quote.nonce_replayed) and equals ``expected_qualifying_data``
       (tpm.quote.nonce_mismatch);
    4. ``tpm.quote.pcr_selection``: the quote selects every required (bank, PCR)
       (tpm.quote.pcr_selection_incomplete);
    5. ``tpm.quote.pcr_digest``: every selected PCR has a reported value
       (tpm.quote.pcr_values_missing) of the bank's digest size
       (tpm.quote.pcr_value_malformed), and their hash with the signature's hash
       equals pcrDigest (tpm.quote.pcr_digest_mismatch). Reported values that the
       quote does not cover are dropped;
    6. ``tpm.quote.clock``: resetCount, restartCount and clock do not go back
       relative to ``previous_clock`` (tpm.quote.reset_count_rollback /
       restart_count_rollback / clock_rollback); sets ``boot_event``.

    Raises ValueError (a programming error, not evidence) if
    ``expected_qualifying_data`` is empty.
    """
    if not expected_qualifying_data:
        raise ValueError("expected_qualifying_data must be a non-empty verifier nonce")
    done: list[str] = []

    try:
        info = parse_quote_attest(attest)
    except ParseError as exc:
        _fail(_PARSE_CODES.get(exc.code, "tpm.quote.malformed"), str(exc), done)
    done.append(CHECK_PARSE)

    try:
        check_attestation_key(ak)
    except VerificationError as exc:
        raise VerificationError(exc.reason, done) from exc
    try:
        sig = parse_signature(signature)
    except ParseError as exc:
        _fail("tpm.quote.signature_malformed", str(exc), done)
    _verify_signature(bytes(attest), sig, ak, allow_sha1=allow_sha1_signatures, done=done)
    done.append(CHECK_SIGNATURE)

    if not hmac.compare_digest(info.extra_data, bytes(expected_qualifying_data)):
        # Tell a replayed old quote from a merely wrong one: the former is an attack signal.
        if any(hmac.compare_digest(info.extra_data, bytes(c)) for c in consumed_qualifying_data):
            _fail("tpm.quote.nonce_replayed", "extraData is a nonce already consumed", done)
        _fail("tpm.quote.nonce_mismatch", "extraData != the nonce issued for this quote", done)
    done.append(CHECK_NONCE)

    selected = {s.hash_algorithm: s.pcrs for s in info.pcr_selection}
    not_selected = [
        (bank, index)
        for bank, indices in required_pcrs.items()
        for index in indices
        if index not in selected.get(bank, ())
    ]
    if not_selected:
        not_selected.sort()
        detail = "not quoted: " + ", ".join(f"{bank}:{index}" for bank, index in not_selected)
        _fail("tpm.quote.pcr_selection_incomplete", detail, done)
    done.append(CHECK_PCR_SELECTION)

    pcrs = _covered_pcrs(info, reported_pcrs, sig.hash_algorithm, done)
    done.append(CHECK_PCR_DIGEST)

    boot_event = _boot_event(info.clock_info, previous_clock, done)
    done.append(CHECK_CLOCK)

    checks_run = frozenset(done)
    return AuthenticatedQuote(
        info=info,
        pcrs=pcrs,
        boot_event=boot_event,
        checks_run=checks_run,
        _seal=_Seal(_content(info, pcrs, boot_event, checks_run)),
    )
