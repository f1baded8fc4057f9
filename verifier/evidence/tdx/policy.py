"""Policy for Intel TDX guests: golden measurements, TD attributes, accepted TCB statuses.

JSON format (unknown keys are refused so that a typo cannot drop a rule)::

    {
      "version": 1,
      "mrtd": ["<96 hex>", ...],              # required, non-empty: allowed MRTDs
      "rtmr0": ["<96 hex>", ...],             # optional, each of rtmr0..rtmr3
      "mrconfigid": ["<96 hex>", ...],        # optional
      "mrowner": ["<96 hex>", ...],           # optional
      "mrownerconfig": ["<96 hex>", ...],     # optional
      "mrseam": ["<96 hex>", ...],            # optional: allowed TDX module measurements
      "xfam": ["<16 hex>", ...],              # optional: allowed XFAM values (8 bytes, as
                                              # the quote carries them, little-endian)
      "mrservicetd": ["<96 hex>", ...],       # optional, see below
      "allow_debug": false,                   # optional, default false
      "allow_migratable": false,              # optional, default false
      "allow_sept_ve": false,                 # optional, default false
      "tdattributes": "<16 hex>",             # optional: the exact TDATTRIBUTES (quote
                                              # byte order, little-endian)
      "tdattributes_mask": "<16 hex>",        # optional, only with "tdattributes": compare
                                              # just these bits
      "accepted_tcb_statuses": ["UpToDate"],  # optional, default ["UpToDate"]
      "out_of_date_grace_days": 30,           # optional: accept OutOfDate for this
                                              # long after a newer TCB level appeared
      "min_tcb_evaluation_data_number": 17    # optional: the oldest collateral (TCB
                                              # Info and QE Identity) accepted
    }

The TCB keys are read and judged in ``tcb_policy.py``; see there why a minimum
``tcbEvaluationDataNumber`` matters (collateral from before a TCB recovery).

TDATTRIBUTES (Intel TDX Module ABI, "TDATTRIBUTES"; bit numbers of the
little-endian 64-bit value) is judged field by field, each violation named:

* bit 0, TUD.DEBUG: the host can read and write TD memory. Refused
  (``tdx.policy.debug_td``) unless ``allow_debug``;
* bits 1-7, the rest of the TD-under-debug group (reserved, must be zero): always
  refused (``tdx.policy.tud_bits_set``), whatever the policy says;
* bit 28, SEPT_VE_DISABLE: must be set, or the host can inject #VE on EPT
  violations, which a guest that does not expect them mishandles. A clear bit is
  refused (``tdx.policy.sept_ve_enabled``) unless ``allow_sept_ve``;
* bit 29, MIGRATABLE: the TD can be exported to another platform under a
  migration TD this quote does not appraise. Refused (``tdx.policy.migratable``)
  unless ``allow_migratable``;
* ``tdattributes`` (under ``tdattributes_mask``, default all bits): the value must
  match exactly (``tdx.policy.tdattributes_mismatch``). The loader refuses a value
  with bits outside its mask, a zero mask, and a value that the rules above
  always refuse (DEBUG or MIGRATABLE without their allow key, a TUD bit, a clear
  SEPT_VE_DISABLE without ``allow_sept_ve``).

MRSERVICETD (TD 1.5 bodies: the service TDs, e.g. a migration TD, bound to this
TD) must be all zero, no service TD, unless ``mrservicetd`` lists the allowed
values; then it must be one of them (list the zero value too to keep allowing
no service TD). A TD 1.0 body carries no MRSERVICETD and cannot bind a service
TD: it counts as zero. Violations: ``tdx.policy.mrservicetd_not_allowed``.

Each other list (``rtmr0``..``rtmr3``, ``mrconfigid``, ``mrowner``,
``mrownerconfig``, ``mrseam``, ``xfam``) is appraised only when present; a value
outside it is ``tdx.policy.<key>_mismatch``.

Deny by default: without a file nothing is appraised; a file must name its
MRTDs, an empty list is refused, and "Revoked" cannot be accepted (STYLE.md,
"Verifying evidence" 5).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from verifier.evidence.policy_json import optional_bool, policy_document
from verifier.evidence.tdx.authenticate import AuthenticatedQuote
from verifier.evidence.tdx.tcb_policy import (
    DEFAULT_TCB_POLICY,
    TCB_POLICY_KEYS,
    TcbPolicy,
    judge_tcb,
    load_tcb_policy,
)
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
_MEASUREMENT_SIZE = 48
_ATTRIBUTES_SIZE = 8  # TDATTRIBUTES and XFAM
# Allow-lists of fields of the TD report body (the order reasons are given in).
_REGISTERS = (
    "mrtd",
    "rtmr0",
    "rtmr1",
    "rtmr2",
    "rtmr3",
    "mrconfigid",
    "mrowner",
    "mrownerconfig",
    "mrseam",
    "xfam",
)
_SIZES = {"xfam": _ATTRIBUTES_SIZE}  # the others are 48-byte measurements
_KEYS = frozenset(
    {
        "version",
        "allow_debug",
        "allow_migratable",
        "allow_sept_ve",
        "tdattributes",
        "tdattributes_mask",
        "mrservicetd",
        *TCB_POLICY_KEYS,
        *_REGISTERS,
    }
)
# TDATTRIBUTES bits (Intel TDX Module ABI), of the little-endian 64-bit value.
ATTR_DEBUG = 1 << 0
ATTR_TUD_RESERVED = 0xFE  # bits 1-7: the rest of the TD-under-debug group, reserved
ATTR_SEPT_VE_DISABLE = 1 << 28
ATTR_MIGRATABLE = 1 << 29
_NO_SERVICE_TD = bytes(_MEASUREMENT_SIZE)


class PolicyError(ValueError):
    """A policy file is malformed or too permissive to load."""


@dataclass(frozen=True, slots=True)
class TdxPolicy:
    """Golden values (each register: allowed values; absent = not appraised except MRTD)."""

    mrtd: frozenset[bytes]
    registers: tuple[tuple[str, frozenset[bytes]], ...] = ()
    allow_debug: bool = False
    tcb: TcbPolicy = DEFAULT_TCB_POLICY
    allow_migratable: bool = False
    allow_sept_ve: bool = False
    tdattributes: tuple[int, int] | None = None  # (value, mask): value & ~mask == 0
    mrservicetd: frozenset[bytes] | None = None  # None: only all zero (no service TD)


def _values(
    doc: dict[str, object], key: str, size: int = _MEASUREMENT_SIZE
) -> frozenset[bytes] | None:
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
        if len(value) != size:
            raise PolicyError(f"{key}: values are {size} bytes")
        values.add(value)
    return frozenset(values)


def _attributes_hex(doc: dict[str, object], key: str) -> int | None:
    raw = doc.get(key)
    if raw is None:
        return None
    try:
        value = bytes.fromhex(raw) if isinstance(raw, str) else b""
    except ValueError:
        value = b""
    if len(value) != _ATTRIBUTES_SIZE:
        raise PolicyError(
            f"{key} must be {_ATTRIBUTES_SIZE} bytes of hex (as the quote carries it)"
        )
    return int.from_bytes(value, "little")


def _tdattributes(
    doc: dict[str, object], *, debug: bool, migratable: bool, sept_ve: bool
) -> tuple[int, int] | None:
    """(value, mask) of "tdattributes" / "tdattributes_mask"; refused when no quote
    could pass it (it requires what another rule always refuses) or it is ambiguous."""
    value = _attributes_hex(doc, "tdattributes")
    mask = _attributes_hex(doc, "tdattributes_mask")
    if value is None:
        if mask is not None:
            raise PolicyError("tdattributes_mask needs tdattributes")
        return None
    mask = (1 << 64) - 1 if mask is None else mask
    if mask == 0:
        raise PolicyError("tdattributes_mask must not be zero (it would compare nothing)")
    if value & ~mask:
        raise PolicyError("tdattributes sets bits outside tdattributes_mask")
    if value & ATTR_TUD_RESERVED:
        raise PolicyError("tdattributes sets TD-under-debug bits 1-7, which are always refused")
    if value & ATTR_DEBUG and not debug:
        raise PolicyError("tdattributes requires DEBUG but allow_debug is false")
    if value & ATTR_MIGRATABLE and not migratable:
        raise PolicyError("tdattributes requires MIGRATABLE but allow_migratable is false")
    if mask & ATTR_SEPT_VE_DISABLE and not value & ATTR_SEPT_VE_DISABLE and not sept_ve:
        raise PolicyError("tdattributes requires SEPT_VE_DISABLE clear but allow_sept_ve is false")
    return value, mask


def load_policy(data: bytes | str) -> TdxPolicy:
    """Parse and validate a policy JSON document (format in the module docstring)."""
    doc = policy_document(data, _KEYS, POLICY_FORMAT_VERSION, MAX_POLICY_BYTES, PolicyError)
    mrtd = _values(doc, "mrtd")
    if mrtd is None:
        raise PolicyError("mrtd must list at least one allowed MRTD")
    registers = tuple(
        (name, values)
        for name in _REGISTERS[1:]
        if (values := _values(doc, name, _SIZES.get(name, _MEASUREMENT_SIZE))) is not None
    )
    debug = optional_bool(doc, "allow_debug", PolicyError)
    migratable = optional_bool(doc, "allow_migratable", PolicyError)
    sept_ve = optional_bool(doc, "allow_sept_ve", PolicyError)
    tdattributes = _tdattributes(doc, debug=debug, migratable=migratable, sept_ve=sept_ve)
    return TdxPolicy(
        mrtd=mrtd,
        registers=registers,
        allow_debug=debug,
        tcb=load_tcb_policy(doc, PolicyError),
        allow_migratable=migratable,
        allow_sept_ve=sept_ve,
        tdattributes=tdattributes,
        mrservicetd=_values(doc, "mrservicetd"),
    )


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
        "mrownerconfig": body.mr_owner_config,
        "mrseam": body.mr_seam,
        "xfam": body.xfam,
    }


def _allowed(value: bytes, allowed: frozenset[bytes]) -> bool:
    return any(hmac.compare_digest(value, candidate) for candidate in allowed)


def _attribute_reasons(attributes: bytes, policy: TdxPolicy) -> list[Reason]:
    bits = int.from_bytes(attributes, "little")
    reasons = []
    if bits & ATTR_DEBUG and not policy.allow_debug:
        reasons.append(Reason("tdx.policy.debug_td", "TDATTRIBUTES.DEBUG is set"))
    if tud := bits & ATTR_TUD_RESERVED:
        set_bits = ", ".join(str(n) for n in range(1, 8) if tud >> n & 1)
        reasons.append(
            Reason("tdx.policy.tud_bits_set", f"TDATTRIBUTES TD-under-debug bits {set_bits} set")
        )
    if not bits & ATTR_SEPT_VE_DISABLE and not policy.allow_sept_ve:
        reasons.append(
            Reason(
                "tdx.policy.sept_ve_enabled",
                "TDATTRIBUTES.SEPT_VE_DISABLE is clear: the host can inject #VE",
            )
        )
    if bits & ATTR_MIGRATABLE and not policy.allow_migratable:
        reasons.append(Reason("tdx.policy.migratable", "TDATTRIBUTES.MIGRATABLE is set"))
    if policy.tdattributes is not None:
        value, mask = policy.tdattributes
        if bits & mask != value:
            reasons.append(
                Reason(
                    "tdx.policy.tdattributes_mismatch",
                    f"TDATTRIBUTES {attributes.hex()} is not "
                    f"{value.to_bytes(_ATTRIBUTES_SIZE, 'little').hex()} under mask "
                    f"{mask.to_bytes(_ATTRIBUTES_SIZE, 'little').hex()}",
                )
            )
    return reasons


def _service_td_reasons(service_td: bytes | None, policy: TdxPolicy) -> list[Reason]:
    # A TD 1.0 body cannot bind a service TD: it counts as all zero.
    value = _NO_SERVICE_TD if service_td is None else service_td
    allowed = frozenset({_NO_SERVICE_TD}) if policy.mrservicetd is None else policy.mrservicetd
    if _allowed(value, allowed):
        return []
    shown = "absent (TD 1.0 body, no service TD)" if service_td is None else value.hex()
    return [Reason("tdx.policy.mrservicetd_not_allowed", f"MRSERVICETD {shown} not allowed")]


def appraise_quote(
    quote: AuthenticatedQuote, policy: TdxPolicy, *, expected_report_data: bytes | None
) -> list[Reason]:
    """Every violation: TDATTRIBUTES, MRSERVICETD, each field outside its allowed
    values, REPORTDATA."""
    body = quote.quote.body
    reasons = _attribute_reasons(body.td_attributes, policy)
    reasons += _service_td_reasons(body.mr_servicetd, policy)
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
