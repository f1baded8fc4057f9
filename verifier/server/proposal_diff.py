"""What a proposal would change, shown to approvers as "- old" / "+ new" lines.

Computed from the stored payload (never from the request) over the state it
replaces: the current state for a pending proposal, the state it was proposed
over once decided.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from verifier.group_document_kinds import (
    BOOT_REFERENCE,
    GPU_POLICY,
    GROUP_DOCUMENT_KINDS,
    IMA_POLICY,
    SNP_POLICY,
    TDX_POLICY,
)
from verifier.store.proposal_kinds import (
    BREAK_GLASS,
    HOST_SITE,
    REFERENCE_VALUES,
    REVIEW,
    SITE,
    TRUST_ANCHOR,
)


def diff_lines(kind: str, base: Mapping[str, Any] | None, payload: Mapping[str, Any]) -> list[str]:
    """What applying ``payload`` over ``base`` would change: "- old" / "+ new" lines."""
    if kind == REFERENCE_VALUES:
        lines = _pcr_diff(base["pcrs"] if base else {}, payload["pcrs"])
    elif kind == SITE:
        lines = _site_diff(base, payload)
    elif kind == HOST_SITE:
        old = base.get("site_id") if base else None
        new = payload["site_id"]
        lines = [] if old == new else [f"- site: {old or '(none)'}", f"+ site: {new}"]
    elif kind == REVIEW:
        lines = _review_diff(base, payload)
    elif kind == TRUST_ANCHOR:
        sign = "-" if payload["remove"] else "+"
        fingerprint = hashlib.sha256(bytes.fromhex(payload["certificate_der"])).hexdigest()
        lines = [f"{sign} {payload['purpose']} trust anchor sha256:{fingerprint}"]
    elif kind in _DOCUMENT_DIFFS:
        key = GROUP_DOCUMENT_KINDS[kind].key
        lines = _DOCUMENT_DIFFS[kind](base[key] if base else {}, payload[key])
    elif kind == BREAK_GLASS:
        lines = [
            f"+ break-glass: host {payload['host_id']} may receive model "
            f"{payload['manifest_digest']} for {payload['hours']} h without site clearance "
            "or review (attestation still required)"
        ]
    else:
        raise ValueError(f"unknown proposal kind {kind!r}")
    return lines or ["(no change)"]


# -- per kind ---------------------------------------------------------------------------

_Diff = Callable[[Mapping[str, Any], Mapping[str, Any]], list[str]]
_Values = Callable[[Mapping[str, Any], str], set[str]]


def canonical_json(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _document_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """One line per top-level key that differs (values as canonical JSON)."""
    lines: list[str] = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        if key in old:
            lines.append(f"- {key}: {canonical_json(old[key]).decode()}")
        if key in new:
            lines.append(f"+ {key}: {canonical_json(new[key]).decode()}")
    return lines


def _pcr_diff(
    old: Mapping[str, Mapping[str, str]], new: Mapping[str, Mapping[str, str]]
) -> list[str]:
    lines: list[str] = []
    for bank in sorted(set(old) | set(new)):
        before, after = old.get(bank, {}), new.get(bank, {})
        for pcr in sorted(set(before) | set(after), key=int):
            if before.get(pcr) == after.get(pcr):
                continue
            if pcr in before:
                lines.append(f"- {bank}[{pcr}] = {before[pcr]}")
            if pcr in after:
                lines.append(f"+ {bank}[{pcr}] = {after[pcr]}")
    return lines


def _site_diff(base: Mapping[str, Any] | None, payload: Mapping[str, Any]) -> list[str]:
    new_tiers = ", ".join(payload["cleared_risk_tiers"]) or "(none)"
    if base is None:
        return [
            f"+ site {payload['site_id']} (new)",
            f"+ cleared tiers: {new_tiers}",
            f"+ description: {payload['description']}",
        ]
    lines: list[str] = []
    if base["cleared_risk_tiers"] != payload["cleared_risk_tiers"]:
        old_tiers = ", ".join(base["cleared_risk_tiers"]) or "(none)"
        lines += [f"- cleared tiers: {old_tiers}", f"+ cleared tiers: {new_tiers}"]
    if base["description"] != payload["description"]:
        lines += [
            f"- description: {base['description']}",
            f"+ description: {payload['description']}",
        ]
    return lines


def _review_diff(base: Mapping[str, Any] | None, payload: Mapping[str, Any]) -> list[str]:
    controls = ", ".join(payload["required_controls"]) or "(none)"
    lines = [
        f"+ review of model {payload['manifest_digest']} for site {payload['site_id']}",
        f"+ risk tier: {payload['risk_tier']}",
        f"+ categories assessed: {', '.join(payload['categories_assessed'])}",
        f"+ required controls: {controls}",
        f"+ in force for {payload['valid_days']} days from approval",
    ]
    if base is not None:
        old_controls = ", ".join(base["required_controls"]) or "(none)"
        lines.insert(
            0,
            f"- review {base['review_id']} in force until {base['expires_at']} "
            f"(required controls: {old_controls})",
        )
    return lines


def _policy_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Paths whose allowed digests change, one line each, then the other keys."""
    lines = _keyed_diff(
        old.get("digests", {}),
        new.get("digests", {}),
        lambda path, digests: f"{path}: {', '.join(digests)}",
    )
    return lines + _rest_diff(old, new, ("digests",))


def _set_diff(
    old: Mapping[str, Any], new: Mapping[str, Any], keys: Iterable[str], values: _Values
) -> list[str]:
    """For each list key, its values no longer allowed ("-") and newly allowed ("+")."""
    lines: list[str] = []
    for key in keys:
        before, after = values(old, key), values(new, key)
        lines += [f"- {key}: {value}" for value in sorted(before - after)]
        lines += [f"+ {key}: {value}" for value in sorted(after - before)]
    return lines


def _keyed_diff(
    old: Mapping[str, Any], new: Mapping[str, Any], show: Callable[[str, Any], str]
) -> list[str]:
    """One "-" line per key whose value goes or changes, one "+" per key whose value
    comes or changes, in key order; ``show`` words a key and its value."""
    lines: list[str] = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if before is not None:
            lines.append(f"- {show(key, before)}")
        if after is not None:
            lines.append(f"+ {show(key, after)}")
    return lines


def _rest_diff(old: Mapping[str, Any], new: Mapping[str, Any], skip: Iterable[str]) -> list[str]:
    """The document diff of the keys not in ``skip``."""
    done = set(skip)
    rest_old = {k: v for k, v in old.items() if k not in done}
    rest_new = {k: v for k, v in new.items() if k not in done}
    return _document_diff(rest_old, rest_new)


_GPU_LISTS = ("allowed_rim_ids", "allowed_cc_states")


def _gpu_policy_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """RIM ids and CC states allowed or no longer allowed, one line each, then the rest."""
    return _set_diff(old, new, _GPU_LISTS, _gpu_list) + _rest_diff(old, new, _GPU_LISTS)


def _gpu_list(policy: Mapping[str, Any], key: str) -> set[str]:
    if key == "allowed_cc_states" and policy and key not in policy:
        return {"on"}  # the loader's default (verifier.evidence.nvidia.gpu_policy)
    return set(policy.get(key, ()))


# The SNP policy's lists of allowed values (verifier.evidence.snp.policy), one line each.
_SNP_LISTS = (
    "allowed_measurements",
    "allowed_signing_keys",
    "allowed_id_key_digests",
    "allowed_author_key_digests",
)


def _snp_policy_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Launch measurements, signing keys and key digests allowed or no longer allowed,
    one line each; the minimum TCB per product line; then the other keys."""
    lines = _set_diff(old, new, _SNP_LISTS, _snp_list)
    lines += _keyed_diff(
        old.get("min_tcb", {}),
        new.get("min_tcb", {}),
        lambda line, tcb: f"min_tcb[{line}]: {canonical_json(tcb).decode()}",
    )
    return lines + _rest_diff(old, new, (*_SNP_LISTS, "min_tcb"))


def _snp_list(policy: Mapping[str, Any], key: str) -> set[str]:
    if key == "allowed_signing_keys" and policy and key not in policy:
        return {"VCEK"}  # the loader's default (verifier.evidence.snp.policy)
    # Hex is case-insensitive to the loader: compare (and show) it in lower case.
    values = set(policy.get(key, ()))
    return values if key == "allowed_signing_keys" else {value.lower() for value in values}


# The TDX policy's lists of allowed values (verifier.evidence.tdx.policy), one line each.
_TDX_LISTS = (
    "mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner",
    "mrownerconfig", "mrseam", "mrservicetd", "xfam",
)  # fmt: skip


def _tdx_policy_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """MRTD, RTMR, MRCONFIGID and MROWNER values and accepted TCB statuses allowed or no
    longer allowed, one line each; then the other keys."""
    keys = (*_TDX_LISTS, "accepted_tcb_statuses")
    return _set_diff(old, new, keys, _tdx_list) + _rest_diff(old, new, keys)


def _tdx_list(policy: Mapping[str, Any], key: str) -> set[str]:
    if key == "accepted_tcb_statuses":
        if policy and key not in policy:
            return {"UpToDate"}  # the loader's default (verifier.evidence.tdx.policy)
        return set(policy.get(key, ()))
    # Hex is case-insensitive to the loader: compare (and show) it in lower case.
    return {value.lower() for value in policy.get(key, ())}


# How each per-group document's change is shown (verifier.group_document_kinds).
_DOCUMENT_DIFFS: Mapping[str, _Diff] = MappingProxyType(
    {
        BOOT_REFERENCE: _document_diff,
        IMA_POLICY: _policy_diff,
        GPU_POLICY: _gpu_policy_diff,
        SNP_POLICY: _snp_policy_diff,
        TDX_POLICY: _tdx_policy_diff,
    }
)
