"""Authenticate a TPM 2.0 quote: the only way to obtain an :class:`AuthenticatedQuote`."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import NoReturn

from verifier.evidence.errors import ParseError
from verifier.evidence.tpm.keys import PublicKey, attestation_public_key
from verifier.evidence.tpm.parse import (
    HASH_SIZES,
    ClockInfo,
    QuoteInfo,
    TpmPublic,
    parse_quote_attest,
    parse_signature,
)
from verifier.evidence.tpm.quote_native import parse_quote_and_signature
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
    """Proof that authenticate_quote built an AuthenticatedQuote, bound to its values.

    It holds the very objects the quote was built with (all immutable: a frozen
    QuoteInfo, read-only mappings over private dicts, a str, a frozenset), and the
    quote must hold the same ones. So ``dataclasses.replace(quote, pcrs=...)``, which
    copies the seal, fails instead of yielding a doctored quote. Checking identity
    instead of comparing copies of the content keeps the seal off the per-quote cost.
    """

    __slots__ = ("boot_event", "checks_run", "info", "pcrs")

    def __init__(
        self,
        info: QuoteInfo,
        pcrs: Mapping[str, Mapping[int, bytes]],
        boot_event: str,
        checks_run: frozenset[str],
    ) -> None:
        self.info = info
        self.pcrs = pcrs
        self.boot_event = boot_event
        self.checks_run = checks_run


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
        seal = self._seal
        if (
            type(seal) is not _Seal
            or seal.info is not self.info
            or seal.pcrs is not self.pcrs
            or seal.boot_event is not self.boot_event
            or seal.checks_run is not self.checks_run
        ):
            raise TypeError("AuthenticatedQuote is built only by authenticate_quote()")


# The checks that have passed when each stage runs (what a failure there reports),
# fixed tuples rather than a list grown per quote.
_BEFORE_SIGNATURE = (CHECK_PARSE,)
_BEFORE_NONCE = (*_BEFORE_SIGNATURE, CHECK_SIGNATURE)
_BEFORE_PCR_SELECTION = (*_BEFORE_NONCE, CHECK_NONCE)
_BEFORE_PCR_DIGEST = (*_BEFORE_PCR_SELECTION, CHECK_PCR_SELECTION)
_BEFORE_CLOCK = (*_BEFORE_PCR_DIGEST, CHECK_PCR_DIGEST)
_ALL_CHECKS = frozenset((*_BEFORE_CLOCK, CHECK_CLOCK))


# AuthenticatedQuote's slots, set directly by _sealed_quote, which must set them all:
# checked here, at import, so that a field added later cannot be left unset.
_QUOTE_FIELDS = ("info", "pcrs", "boot_event", "checks_run", "_seal")
if tuple(f.name for f in fields(AuthenticatedQuote)) != _QUOTE_FIELDS:
    raise TypeError("AuthenticatedQuote: _sealed_quote no longer matches its fields")
_SET_INFO, _SET_PCRS, _SET_BOOT_EVENT, _SET_CHECKS_RUN, _SET_SEAL = (
    AuthenticatedQuote.__dict__[name].__set__ for name in _QUOTE_FIELDS
)


def _sealed_quote(
    info: QuoteInfo, pcrs: Mapping[str, Mapping[int, bytes]], boot_event: str
) -> AuthenticatedQuote:
    """The AuthenticatedQuote of a quote that passed every check, with its seal.

    Its builder sets the slots itself, as the frozen dataclass's ``__init__`` would
    (through ``object.__setattr__``), and skips ``__post_init__``, whose seal check
    would hold by construction: half the cost of the constructor, per quote.
    Everyone else goes through ``__init__`` and that check.
    """
    quote: AuthenticatedQuote = object.__new__(AuthenticatedQuote)
    _SET_INFO(quote, info)
    _SET_PCRS(quote, pcrs)
    _SET_BOOT_EVENT(quote, boot_event)
    _SET_CHECKS_RUN(quote, _ALL_CHECKS)
    _SET_SEAL(quote, _Seal(info, pcrs, boot_event, _ALL_CHECKS))
    return quote


def _fail(code: str, detail: str, done: tuple[str, ...]) -> NoReturn:
    raise VerificationError(Reason(code, detail), done)


# The hash constructors for the banks HASH_SIZES knows (hashlib.new is slower).
_HASHERS = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha384": hashlib.sha384,
    "sha512": hashlib.sha512,
}


_NO_VALUES: Mapping[int, bytes] = MappingProxyType({})
_NONE_QUOTED: frozenset[int] = frozenset()


def _covered_pcrs(
    info: QuoteInfo,
    reported: Mapping[str, Mapping[int, bytes]],
    digest_alg: str,
    done: tuple[str, ...],
) -> Mapping[str, Mapping[int, bytes]]:
    """Check the reported values against pcrDigest; return only the covered ones."""
    # TPM 2.0 Part 3, 18.4: banks in TPML order, PCRs ascending, hashed with the
    # signing scheme's hash.
    covered: dict[str, Mapping[int, bytes]] = {}
    ordered: list[bytes] = []
    for selection in info.pcr_selection:
        bank = selection.hash_algorithm
        size = HASH_SIZES[bank]
        values = reported.get(bank, _NO_VALUES)
        bank_values: dict[int, bytes] = {}
        for index in selection.pcrs:
            value = values.get(index)
            # Exact bytes of the exact length only; anything else (a missing value,
            # a bytearray to copy, a wrong length) takes the path that reports it.
            if type(value) is not bytes or len(value) != size:
                break
            bank_values[index] = value
        else:
            covered[bank] = MappingProxyType(bank_values)
            ordered += bank_values.values()
            continue
        covered, ordered = _checked_values(info, reported, done)
        break
    digest = _HASHERS[digest_alg](b"".join(ordered)).digest()
    if not hmac.compare_digest(digest, info.pcr_digest):
        _fail(
            "tpm.quote.pcr_digest_mismatch",
            f"{digest_alg} of the reported PCR values != quoted pcrDigest",
            done,
        )
    return MappingProxyType(covered)


def _checked_values(
    info: QuoteInfo, reported: Mapping[str, Mapping[int, bytes]], done: tuple[str, ...]
) -> tuple[dict[str, Mapping[int, bytes]], list[bytes]]:
    """The covered values one by one: every missing and every malformed one named
    (in selection order), private ``bytes`` copies of the others."""
    covered: dict[str, Mapping[int, bytes]] = {}
    ordered: list[bytes] = []
    missing: list[str] = []
    malformed: list[str] = []
    for selection in info.pcr_selection:
        bank = selection.hash_algorithm
        size = HASH_SIZES[bank]
        values = reported.get(bank, _NO_VALUES)
        bank_values: dict[int, bytes] = {}
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
        covered[bank] = MappingProxyType(bank_values)
    if missing:
        _fail("tpm.quote.pcr_values_missing", "no value for " + ", ".join(missing), done)
    if malformed:
        _fail("tpm.quote.pcr_value_malformed", "wrong length: " + ", ".join(malformed), done)
    return covered, ordered


def _selection_incomplete(
    selected: Mapping[str, frozenset[int]],
    required_pcrs: Mapping[str, Collection[int]],
    done: tuple[str, ...],
) -> NoReturn:
    not_selected = sorted(
        (bank, index)
        for bank, indices in required_pcrs.items()
        for index in indices
        if index not in selected.get(bank, ())
    )
    detail = "not quoted: " + ", ".join(f"{bank}:{index}" for bank, index in not_selected)
    _fail("tpm.quote.pcr_selection_incomplete", detail, done)


def _boot_event(current: ClockInfo, previous: ClockInfo | None, done: tuple[str, ...]) -> str:
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


def _attestation_key(ak: TpmPublic) -> PublicKey:
    """``attestation_public_key``, its refusal reported as a signature-stage failure."""
    try:
        return attestation_public_key(ak)  # check_attestation_key, and its key
    except VerificationError as exc:
        raise VerificationError(exc.reason, _BEFORE_SIGNATURE) from exc


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
    # Both structures framed in one C call where they parse; otherwise (and where the
    # C module is not built) the Python parsers, one by one, name the fault.
    parsed = parse_quote_and_signature(attest, signature)
    if parsed is not None:
        info, sig = parsed
        public = _attestation_key(ak)
    else:
        try:
            info = parse_quote_attest(attest)
        except ParseError as exc:
            _fail(_PARSE_CODES.get(exc.code, "tpm.quote.malformed"), str(exc), ())
        public = _attestation_key(ak)
        try:
            sig = parse_signature(signature)
        except ParseError as exc:
            _fail("tpm.quote.signature_malformed", str(exc), _BEFORE_SIGNATURE)
    signed = attest if type(attest) is bytes else bytes(attest)
    try:
        verify_tpm_signature(signed, sig, ak, allow_sha1=allow_sha1_signatures, public=public)
    except SignatureCheckError as exc:
        # The kinds are named after the quote codes: tpm.quote.signature_invalid etc.
        _fail(f"tpm.quote.{exc.kind}", exc.detail, _BEFORE_SIGNATURE)

    # bytes(): a private copy of a bytearray/memoryview; bytes are taken as they are
    # (bytes(b) of a bytes object is that object, so skipping the call is the same).
    expected = (
        expected_qualifying_data
        if type(expected_qualifying_data) is bytes
        else bytes(expected_qualifying_data)
    )
    if not hmac.compare_digest(info.extra_data, expected):
        # Tell a replayed old quote from a merely wrong one: the former is an attack signal.
        if any(hmac.compare_digest(info.extra_data, bytes(c)) for c in consumed_qualifying_data):
            _fail(
                "tpm.quote.nonce_replayed", "extraData is a nonce already consumed", _BEFORE_NONCE
            )
        _fail(
            "tpm.quote.nonce_mismatch",
            "extraData != the nonce issued for this quote",
            _BEFORE_NONCE,
        )

    # Each required bank against its selection, found by a scan rather than through a
    # bank -> PCRs dict built per quote (parse refused repeated banks, so the first
    # match is the only one); a bank not quoted selects nothing.
    selections = info.pcr_selection
    for bank, indices in required_pcrs.items():
        for selection in selections:
            if selection.hash_algorithm == bank:
                quoted = selection.pcr_set
                break
        else:
            quoted = _NONE_QUOTED
        if not quoted.issuperset(indices):
            _selection_incomplete(
                {s.hash_algorithm: s.pcr_set for s in selections},
                required_pcrs,
                _BEFORE_PCR_SELECTION,
            )

    pcrs = _covered_pcrs(info, reported_pcrs, sig.hash_algorithm, _BEFORE_PCR_DIGEST)

    boot_event = _boot_event(info.clock_info, previous_clock, _BEFORE_CLOCK)

    return _sealed_quote(info, pcrs, boot_event)
