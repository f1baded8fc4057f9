"""The result of an offline evidence command, shared by every ``evidence`` command.

A report is a :class:`~verifier.verdict.Verdict` plus what a person debugging a
host needs around it: every check in pipeline order with its stage and outcome
(``passed`` / ``failed`` / ``not_run`` with why), and the claims decoded on the
way. Its JSON form and exit status are the contract of ``weightgate evidence``
(issue 5, item 4), the same for every evidence kind:

``{"kind", "verdict", "reasons": [{"code", "message"}], "checks_run": [...],
"checks": [{"name", "stage", "status", "detail"}], "claims": {...}}``; exit 0
affirming (and ``none``: nothing was appraised), 1 contraindicated, 3 warning.
Exit 2 (unreadable input, bad usage) never has a report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from verifier.verdict import Reason, Tier, Verdict

__all__ = [
    "EXIT_AFFIRMING",
    "EXIT_REJECTED",
    "EXIT_USAGE",
    "EXIT_WARNING",
    "CheckOutcome",
    "EvidenceReport",
    "ReportBuilder",
    "Status",
    "exit_status",
    "verdict_from",
]

EXIT_AFFIRMING = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2
EXIT_WARNING = 3

Status = Literal["passed", "failed", "not_run"]


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """One check: ``stage`` groups checks as the test vectors' ``failing_stage`` does."""

    name: str
    stage: str
    status: Status
    detail: str = ""


@dataclass(frozen=True, slots=True)
class EvidenceReport:
    """What an evidence command concluded, and how (see the module docstring)."""

    kind: str
    verdict: Verdict
    checks: tuple[CheckOutcome, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)

    def failed_stages(self) -> tuple[str, ...]:
        """The stages with a failed check, in pipeline order."""
        stages: list[str] = []
        for check in self.checks:
            if check.status == "failed" and check.stage not in stages:
                stages.append(check.stage)
        return tuple(stages)

    def to_json(self) -> dict[str, Any]:
        """The machine-readable document (``--json``)."""
        return {
            "kind": self.kind,
            "verdict": self.verdict.tier.value,
            "reasons": [_reason(r) for r in self.verdict.reasons],
            "checks_run": sorted(self.verdict.checks_run),
            "checks": [
                {"name": c.name, "stage": c.stage, "status": c.status, "detail": c.detail}
                for c in self.checks
            ],
            "claims": dict(self.claims),
        }


def _reason(reason: Reason) -> dict[str, str]:
    return {"code": reason.code, "message": reason.detail}


def exit_status(verdict: Verdict) -> int:
    """The process exit status for ``verdict`` (module docstring)."""
    if verdict.tier is Tier.CONTRAINDICATED:
        return EXIT_REJECTED
    if verdict.tier is Tier.WARNING:
        return EXIT_WARNING
    return EXIT_AFFIRMING


def verdict_from(
    reasons: list[Reason], warnings: list[Reason], checks: tuple[CheckOutcome, ...]
) -> Verdict:
    """Contraindicated if any reason, else warning if any warning, else affirming.

    ``checks_run`` is the set of checks that passed, as in ``VerificationError``.
    """
    passed = frozenset(c.name for c in checks if c.status == "passed")
    if reasons:
        return Verdict.contraindicated([*reasons, *warnings], passed)
    if warnings:
        return Verdict(Tier.WARNING, tuple(warnings), passed)
    return Verdict.affirming(passed)


@dataclass(frozen=True, slots=True)
class RoundFindings:
    """What one round's check of evidence bound to the quote found (SEV-SNP, TDX)."""

    checks_run: frozenset[str]
    reasons: tuple[Reason, ...]

    @classmethod
    def failed(cls, code: str, detail: str) -> RoundFindings:
        return cls(frozenset(), (Reason(code, detail),))


def round_findings(report: EvidenceReport, *, attested: str, kind: str) -> RoundFindings:
    """The stream's reading of an offline report: only an affirming one passes, and
    then its checks include ``attested`` (what a release control requires); a warning
    is a finding (fail closed), named by its own reasons or ``<kind>.not_affirmed``."""
    checks = frozenset(c.name for c in report.checks if c.status == "passed")
    verdict = report.verdict
    if verdict.tier is Tier.AFFIRMING:
        return RoundFindings(checks | {attested}, ())
    not_affirmed = Reason(f"{kind}.not_affirmed", f"verdict {verdict.tier.value}")
    return RoundFindings(checks, verdict.reasons or (not_affirmed,))


@dataclass
class ReportBuilder:
    """Collects the outcome of each check as the stages run, then builds the report.

    Reasons reject; warnings make an accepted result a warning, never an affirmation.
    """

    checks: list[CheckOutcome] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    warnings: list[Reason] = field(default_factory=list)
    claims: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, stage: str, reasons: list[Reason], detail: str = "") -> None:
        """Record one check that ran, failed iff ``reasons``."""
        self.reasons.extend(reasons)
        status: Status = "failed" if reasons else "passed"
        summary = "; ".join(str(r) for r in reasons[:3]) + (" ..." if len(reasons) > 3 else "")
        self.checks.append(CheckOutcome(name, stage, status, summary or detail))

    def skip(self, names: tuple[str, ...], stage: str, why: str) -> None:
        """Record checks that did not run, and why."""
        self.checks.extend(CheckOutcome(name, stage, "not_run", why) for name in names)

    def build(self, kind: str) -> EvidenceReport:
        """The report; its verdict is ``none`` when no check ran and nothing was found."""
        checks = tuple(self.checks)
        verdict = verdict_from(self.reasons, self.warnings, checks)
        if verdict.affirms and not verdict.checks_run:
            verdict = Verdict(Tier.NONE)
        return EvidenceReport(kind, verdict, checks, self.claims)
