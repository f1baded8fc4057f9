"""Policy for Intel TDX guests: golden measurements, debug, accepted TCB statuses.

JSON format (unknown keys are refused so that a typo cannot drop a rule)::

    {
      "version": 1,
      "mrtd": ["<96 hex>", ...],              # required, non-empty: allowed MRTDs
      "rtmr0": ["<96 hex>", ...],             # optional, each of rtmr0..rtmr3
      "mrconfigid": ["<96 hex>", ...],        # optional
      "mrowner": ["<96 hex>", ...],           # optional
      "allow_debug": false,                   # optional, default false
      "accepted_tcb_statuses": ["UpToDate"],  # optional, default ["UpToDate"]
      "out_of_date_grace_days": 30            # optional: accept OutOfDate for this
                                              # long after a newer TCB level appeared
    }

Deny by default: without a file nothing is appraised; a file must name its
MRTDs, an empty list is refused, and "Revoked" cannot be accepted (STYLE.md,
"Verifying evidence" 5).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta

from verifier.evidence.policy_json import optional_bool, policy_document
from verifier.evidence.tdx.authenticate import AuthenticatedQuote
from verifier.evidence.tdx.collateral import TCB_STATUSES
from verifier.evidence.tdx.tcb import TcbResult
from verifier.verdict import Reason

__all__ = [
    "CHECK_POLICY",
    "DEFAULT_TCB_POLICY",
    "PolicyError",
    "TcbPolicy",
    "TdxPolicy",
    "appraise_quote",
    "judge_tcb",
    "load_policy",
]

CHECK_POLICY = "tdx.policy"
POLICY_FORMAT_VERSION = 1
MAX_POLICY_BYTES = 1 << 20  # a policy is a few KiB; bound what a bad file costs
MAX_GRACE_DAYS = 365  # a year-old unpatched TCB is not a grace period
_MEASUREMENT_SIZE = 48
_REGISTERS = ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner")
_KEYS = frozenset(
    {"version", "allow_debug", "accepted_tcb_statuses", "out_of_date_grace_days", *_REGISTERS}
)


class PolicyError(ValueError):
    """A policy file is malformed or too permissive to load."""


@dataclass(frozen=True, slots=True)
class TcbPolicy:
    """Which TCB statuses pass; OutOfDate optionally within a grace window."""

    accepted: frozenset[str] = frozenset({"UpToDate"})
    out_of_date_grace: timedelta | None = None


DEFAULT_TCB_POLICY = TcbPolicy()


@dataclass(frozen=True, slots=True)
class TdxPolicy:
    """Golden values (each register: allowed values; absent = not appraised except MRTD)."""

    mrtd: frozenset[bytes]
    registers: tuple[tuple[str, frozenset[bytes]], ...] = ()
    allow_debug: bool = False
    tcb: TcbPolicy = DEFAULT_TCB_POLICY


def _values(doc: dict[str, object], key: str) -> frozenset[bytes] | None:
    raw = doc.get(key)
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(v, str) for v in raw):
        raise PolicyError(f"{key} must be a non-empty list of hex strings")
    values = set()
    for text in raw:
        try:
            value = bytes.fromhex(str(text))
        except ValueError:
            raise PolicyError(f"{key}: {text!r} is not hex") from None
        if len(value) != _MEASUREMENT_SIZE:
            raise PolicyError(f"{key}: values are {_MEASUREMENT_SIZE} bytes")
        values.add(value)
    return frozenset(values)


def load_policy(data: bytes | str) -> TdxPolicy:
    """Parse and validate a policy JSON document (format in the module docstring)."""
    doc = policy_document(data, _KEYS, POLICY_FORMAT_VERSION, MAX_POLICY_BYTES, PolicyError)
    mrtd = _values(doc, "mrtd")
    if mrtd is None:
        raise PolicyError("mrtd must list at least one allowed MRTD")
    registers = tuple(
        (name, values) for name in _REGISTERS[1:] if (values := _values(doc, name)) is not None
    )
    debug = optional_bool(doc, "allow_debug", PolicyError)
    statuses = doc.get("accepted_tcb_statuses", ["UpToDate"])
    if not isinstance(statuses, list) or not statuses or not set(statuses) <= TCB_STATUSES:
        raise PolicyError(f"accepted_tcb_statuses must list some of {sorted(TCB_STATUSES)}")
    if "Revoked" in statuses:
        raise PolicyError("a Revoked TCB cannot be accepted")
    grace_days = doc.get("out_of_date_grace_days")
    grace = None
    if grace_days is not None:
        if not isinstance(grace_days, int) or isinstance(grace_days, bool):
            raise PolicyError("out_of_date_grace_days must be an integer")
        if not 0 < grace_days <= MAX_GRACE_DAYS:
            raise PolicyError(f"out_of_date_grace_days must be 1..{MAX_GRACE_DAYS}")
        grace = timedelta(days=grace_days)
    return TdxPolicy(
        mrtd=mrtd,
        registers=registers,
        allow_debug=debug,
        tcb=TcbPolicy(frozenset(statuses), grace),
    )


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


def _register_values(quote: AuthenticatedQuote) -> dict[str, bytes]:
    body = quote.quote.body
    return {
        "mrtd": body.mr_td,
        "rtmr0": body.rtmrs[0],
        "rtmr1": body.rtmrs[1],
        "rtmr2": body.rtmrs[2],
        "rtmr3": body.rtmrs[3],
        "mrconfigid": body.mr_config_id,
        "mrowner": body.mr_owner,
    }


def _allowed(value: bytes, allowed: frozenset[bytes]) -> bool:
    return any(hmac.compare_digest(value, candidate) for candidate in allowed)


def appraise_quote(
    quote: AuthenticatedQuote, policy: TdxPolicy, *, expected_report_data: bytes | None
) -> list[Reason]:
    """Every violation: debug TD, each register outside its golden values, REPORTDATA."""
    body = quote.quote.body
    reasons = []
    if body.debug and not policy.allow_debug:
        reasons.append(Reason("tdx.policy.debug_td", "TDATTRIBUTES.DEBUG is set"))
    values = _register_values(quote)
    for name, allowed in (("mrtd", policy.mrtd), *policy.registers):
        if not _allowed(values[name], allowed):
            reasons.append(
                Reason(f"tdx.policy.{name}_mismatch", f"{name} {values[name].hex()} not allowed")
            )
    if expected_report_data is not None and not hmac.compare_digest(
        body.report_data, expected_report_data
    ):
        reasons.append(Reason("tdx.policy.report_data_mismatch", "REPORTDATA differs"))
    return reasons
