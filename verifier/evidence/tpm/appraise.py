"""Appraise an authenticated quote's PCR values against reference values."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from verifier.evidence.tpm.authenticate import AuthenticatedQuote
from verifier.evidence.tpm.parse import HASH_SIZES
from verifier.verdict import Reason, Verdict

__all__ = ["CHECK_PCR_REFERENCE", "ReferencePcrs", "appraise_pcrs"]

CHECK_PCR_REFERENCE = "tpm.pcr.reference"

# PC Client TPMs implement 24 PCRs; the selection bitmap can name at most 32.
_MAX_PCR_INDEX = 31


@dataclass(frozen=True)
class ReferencePcrs:
    """Expected PCR values, per bank (``"sha256"``) and PCR index.

    Refuses to be built empty, or with an empty bank: an empty reference must never
    mean "accept anything". Values are copied into read-only mappings.
    """

    values: Mapping[str, Mapping[int, bytes]]

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("reference PCR values are empty")
        frozen: dict[str, Mapping[int, bytes]] = {}
        for bank, pcrs in self.values.items():
            if bank not in HASH_SIZES:
                raise ValueError(f"unknown PCR bank {bank!r}")
            if not pcrs:
                raise ValueError(f"reference bank {bank} has no PCRs")
            bank_values: dict[int, bytes] = {}
            for index, value in pcrs.items():
                if isinstance(index, bool) or not 0 <= index <= _MAX_PCR_INDEX:
                    raise ValueError(f"{bank}: bad PCR index {index!r}")
                if len(value) != HASH_SIZES[bank]:
                    raise ValueError(f"{bank} PCR{index}: {len(value)} bytes")
                bank_values[index] = bytes(value)
            frozen[bank] = MappingProxyType(bank_values)
        # frozen dataclass: set the normalised copy once, at construction.
        object.__setattr__(self, "values", MappingProxyType(frozen))

    def required(self) -> dict[str, frozenset[int]]:
        """The (bank, PCR) pairs a quote must cover to be appraised against this."""
        return {bank: frozenset(pcrs) for bank, pcrs in self.values.items()}


def appraise_pcrs(quote: AuthenticatedQuote, reference: ReferencePcrs) -> Verdict:
    """Compare every reference PCR with the quoted value; report every violation.

    Reasons: ``tpm.pcr.not_quoted`` (a reference PCR the quote does not cover) and
    ``tpm.pcr.mismatch`` (covered, but a different value), one per PCR, banks and
    indices in sorted order. Affirming when there are none.
    """
    if not isinstance(quote, AuthenticatedQuote):
        raise TypeError("appraise_pcrs needs an AuthenticatedQuote from authenticate_quote()")
    reasons: list[Reason] = []
    for bank in sorted(reference.values):
        quoted = quote.pcrs.get(bank, {})
        for index in sorted(reference.values[bank]):
            expected = reference.values[bank][index]
            got = quoted.get(index)
            if got is None:
                reasons.append(Reason("tpm.pcr.not_quoted", f"{bank} PCR{index}: not quoted"))
            elif not hmac.compare_digest(got, expected):
                reasons.append(
                    Reason(
                        "tpm.pcr.mismatch",
                        f"{bank} PCR{index}: expected {expected.hex()} got {got.hex()}",
                    )
                )
    checks = quote.checks_run | {CHECK_PCR_REFERENCE}
    if reasons:
        return Verdict.contraindicated(reasons, checks)
    return Verdict.affirming(checks)
