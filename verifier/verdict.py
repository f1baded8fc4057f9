"""The verdict: what the verifier concluded about a piece of evidence, as data.

A verdict is never a bool (STYLE.md, "Verifying evidence" 3): callers must look
at the tier, and ``__bool__`` raises so that ``if verdict:`` cannot silently
mean "trusted".
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field


class Tier(enum.Enum):
    """Trust tier, in the IETF EAR (EAT Attestation Results) vocabulary."""

    NONE = "none"
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"


@dataclass(frozen=True, slots=True)
class Reason:
    """One finding: a stable dotted code (``tpm.quote.nonce_mismatch``) and a detail.

    The code is the contract for tooling and tests; the detail is for humans and
    must never contain secrets.
    """

    code: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail else self.code


@dataclass(frozen=True, slots=True)
class Verdict:
    """Tier, every reason behind it, and the checks that actually ran."""

    tier: Tier
    reasons: tuple[Reason, ...] = ()
    checks_run: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.tier is Tier.AFFIRMING and self.reasons:
            raise ValueError("an affirming verdict carries no failure reasons")
        if self.tier is Tier.CONTRAINDICATED and not self.reasons:
            raise ValueError("a contraindicated verdict must say why")

    def __bool__(self) -> bool:
        raise TypeError("a Verdict is not a bool: inspect verdict.tier (or use .affirms)")

    @property
    def affirms(self) -> bool:
        return self.tier is Tier.AFFIRMING

    @classmethod
    def affirming(cls, checks_run: Iterable[str]) -> Verdict:
        return cls(Tier.AFFIRMING, (), frozenset(checks_run))

    @classmethod
    def contraindicated(cls, reasons: Iterable[Reason], checks_run: Iterable[str]) -> Verdict:
        return cls(Tier.CONTRAINDICATED, tuple(reasons), frozenset(checks_run))

    def reason_codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)


class VerificationError(Exception):
    """Authentication failed: the evidence cannot be trusted at all.

    Carries the named reason and the checks that had run before the failure, so
    the caller can turn it into a contraindicated Verdict without parsing text.
    """

    def __init__(self, reason: Reason, checks_run: Iterable[str] = ()) -> None:
        super().__init__(str(reason))
        self.reason = reason
        self.checks_run = frozenset(checks_run)

    def to_verdict(self) -> Verdict:
        return Verdict.contraindicated((self.reason,), self.checks_run)
