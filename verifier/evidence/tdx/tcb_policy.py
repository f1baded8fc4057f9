"""The TCB part of a TDX policy: which collateral may rate a platform, and which ratings pass.

Keys of the TDX policy JSON (``policy.py``) read here::

    "accepted_tcb_statuses": ["UpToDate"],    # optional, default ["UpToDate"]
    "out_of_date_grace_days": 30,             # optional: accept OutOfDate for this
                                              # long after a newer TCB level appeared
    "min_tcb_evaluation_data_number": 17      # optional: refuse older collateral

``min_tcb_evaluation_data_number``: Intel raises ``tcbEvaluationDataNumber`` with
every TCB recovery, and collateral from before one still rates the TCB it
revoked by its old status (an older TCB Info can call a vulnerable TCB
UpToDate). With a minimum, the TCB Info and the QE Identity the quote is
judged with must each carry at least that number
(``tdx.collateral.tcb_evaluation_number_too_low``, naming the document);
without one any number is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from verifier.evidence.tdx.collateral import TCB_STATUSES
from verifier.evidence.tdx.tcb import TcbResult
from verifier.verdict import Reason

__all__ = [
    "DEFAULT_TCB_POLICY",
    "MIN_EVALUATION_NUMBER_KEY",
    "TCB_POLICY_KEYS",
    "TcbPolicy",
    "judge_evaluation_number",
    "judge_tcb",
    "load_tcb_policy",
]

MAX_GRACE_DAYS = 365  # a year-old unpatched TCB is not a grace period
MIN_EVALUATION_NUMBER_KEY = "min_tcb_evaluation_data_number"
# Intel's reference verifier reads tcbEvaluationDataNumber as a uint32.
MAX_EVALUATION_NUMBER = 0xFFFFFFFF
TCB_POLICY_KEYS = frozenset(
    {"accepted_tcb_statuses", "out_of_date_grace_days", MIN_EVALUATION_NUMBER_KEY}
)


@dataclass(frozen=True, slots=True)
class TcbPolicy:
    """Which TCB statuses pass; OutOfDate optionally within a grace window; the oldest
    collateral (``tcbEvaluationDataNumber``) that may rate the platform (None: any)."""

    accepted: frozenset[str] = frozenset({"UpToDate"})
    out_of_date_grace: timedelta | None = None
    min_evaluation_number: int | None = None


DEFAULT_TCB_POLICY = TcbPolicy()


def _min_evaluation_number(doc: Mapping[str, object], error: type[ValueError]) -> int | None:
    if MIN_EVALUATION_NUMBER_KEY not in doc:
        return None
    value = doc[MIN_EVALUATION_NUMBER_KEY]
    # bool is an int in Python; null is refused rather than read as "no minimum".
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not 0 <= value <= MAX_EVALUATION_NUMBER
    ):
        raise error(
            f"{MIN_EVALUATION_NUMBER_KEY} must be an integer 0..{MAX_EVALUATION_NUMBER}, "
            f"not {value!r}"
        )
    return value


def load_tcb_policy(doc: Mapping[str, object], error: type[ValueError]) -> TcbPolicy:
    """The TCB keys of a policy document (module docstring); ``error(message)`` otherwise."""
    statuses = doc.get("accepted_tcb_statuses", ["UpToDate"])
    if (
        not isinstance(statuses, list)
        or not statuses
        or not all(isinstance(s, str) and s in TCB_STATUSES for s in statuses)
    ):
        raise error(f"accepted_tcb_statuses must list some of {sorted(TCB_STATUSES)}")
    if "Revoked" in statuses:
        raise error("a Revoked TCB cannot be accepted")
    grace_days = doc.get("out_of_date_grace_days")
    grace = None
    if grace_days is not None:
        if not isinstance(grace_days, int) or isinstance(grace_days, bool):
            raise error("out_of_date_grace_days must be an integer")
        if not 0 < grace_days <= MAX_GRACE_DAYS:
            raise error(f"out_of_date_grace_days must be 1..{MAX_GRACE_DAYS}")
        grace = timedelta(days=grace_days)
    return TcbPolicy(frozenset(statuses), grace, _min_evaluation_number(doc, error))


def judge_evaluation_number(number: int, policy: TcbPolicy, *, what: str) -> list[Reason]:
    """[] if collateral ``what`` with ``tcbEvaluationDataNumber`` ``number`` is recent
    enough for ``policy``, else one named reason."""
    minimum = policy.min_evaluation_number
    if minimum is None or number >= minimum:
        return []
    return [
        Reason(
            "tdx.collateral.tcb_evaluation_number_too_low",
            f"{what} tcbEvaluationDataNumber {number} is below the policy's minimum {minimum} "
            "(collateral from before a TCB recovery the policy requires)",
        )
    ]


def _status_code(status: str) -> str:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in status).lstrip("_")
    return "tdx.tcb." + snake.replace("s_w_", "sw_")


def judge_tcb(result: TcbResult, policy: TcbPolicy, *, at: datetime) -> list[Reason]:
    """[] if ``result`` is acceptable under ``policy`` at ``at``, else one named reason.

    OutOfDate passes within ``out_of_date_grace`` after ``superseded_at`` (the
    tcbDate of the next newer level: when the platform's level went out of date).
    """
    status = result.status
    if status in policy.accepted:
        return []
    if (
        status == "OutOfDate"
        and policy.out_of_date_grace is not None
        and result.superseded_at is not None
        and at <= result.superseded_at + policy.out_of_date_grace
    ):
        return []
    advisories = f" ({', '.join(result.advisory_ids)})" if result.advisory_ids else ""
    return [Reason(_status_code(status), f"TCB status {status}{advisories} is not accepted")]
