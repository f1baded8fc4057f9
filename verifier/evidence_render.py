"""Text output of ``weightgate evidence`` for people (``--json`` is the report itself)."""

from __future__ import annotations

from typing import Any

from verifier.evidence.report import EvidenceReport
from verifier.evidence.tpm.describe import pcr_ranges

__all__ = ["render_inspection", "render_report"]

_STATUS = {"passed": "passed", "failed": "FAILED", "not_run": "not run"}
_HEX_SHOWN = 16  # digest characters in tables; --json has them whole


def render_report(report: EvidenceReport) -> str:
    """Verdict, reasons, every check with its stage, then the decoded claims."""
    verdict = report.verdict
    lines = [f"verdict: {verdict.tier.value} ({report.kind})"]
    if verdict.reasons:
        lines.append("reasons:")
        lines.extend(f"  {reason}" for reason in verdict.reasons)
    if report.checks:
        lines.append("checks:")
        width = max(len(c.name) for c in report.checks)
        for check in report.checks:
            detail = f"  ({check.detail})" if check.detail and check.status != "failed" else ""
            row = f"  {_STATUS[check.status]:<8} {check.stage:<16} {check.name:<{width}}{detail}"
            lines.append(row.rstrip())
    claims = report.claims
    if "ak" in claims:
        lines.append("ak: " + _ak_line(claims["ak"]))
    if "quote" in claims:
        lines.append("quote: " + _quote_line(claims["quote"]))
    if "eventlog" in claims:
        lines.extend(_eventlog_lines(claims["eventlog"]))
    if "ima" in claims:
        lines.extend(_ima_lines(claims["ima"]))
    if "replay" in claims:
        lines.extend(_replay_lines(claims["replay"], full=True))
    return "\n".join(lines)


def _ima_lines(ima: dict[str, Any]) -> list[str]:
    templates = ", ".join(f"{name} x{count}" for name, count in ima["templates"].items())
    lines = [
        f"ima list: {ima['format']} ({ima['byte_order']}-endian), {ima['entry_count']} entries "
        f"({ima['violations']} violations), templates {templates or '(none)'}, "
        f"template hash {ima['template_hash_alg']}"
    ]
    if "replay" in ima:
        lines.extend(_replay_lines(ima["replay"], full=True))
    check = ima.get("boot_aggregate_check")
    if check:
        lines.append(
            f"  boot_aggregate {ima['boot_aggregate']}: {check['bank']} {check['rule']} "
            f"({check['source']})"
        )
    if "policy_findings" in ima:
        tolerated = ima.get("violations_tolerated", 0)
        extra = f", {tolerated} violation(s) tolerated" if tolerated else ""
        lines.append(f"  runtime policy: {ima['policy_findings']} finding(s){extra}")
    return lines


def _ak_line(ak: dict[str, Any]) -> str:
    key = f"{ak['key_type']}-{ak.get('curve') or ak['key_bits']}"
    name = f", name {ak['name']}" if "name" in ak else ""
    return f"{key} from {ak['format']}, attributes {ak['attributes']}{name}"


def _quote_line(quote: dict[str, Any]) -> str:
    clock = quote["clock_info"]
    state = "authenticated" if quote.get("authenticated") else "NOT authenticated"
    extra = quote["extra_data"] or "(empty)"
    return (
        f"{state}; PCRs {quote['pcr_selection_text']}; extraData {extra}; "
        f"clock {clock['clock_ms']} ms, resetCount {clock['reset_count']}, "
        f"restartCount {clock['restart_count']}; firmware {quote['firmware_version']}"
    )


def _eventlog_lines(log: dict[str, Any]) -> list[str]:
    lines = [
        f"event log: {log['format']}, banks {', '.join(log['banks']) or '(none known)'}, "
        f"{log['events']} events, PCR0 start locality {log['pcr0_start_locality']}"
    ]
    if "replay" in log:
        lines.extend(_replay_lines(log["replay"], full=False))
    if "events_checked_in" in log:
        banks = ", ".join(log["events_checked_in"])
        lines.append(f"  event data and structure checked against the {banks} digests")
    return lines


def _replay_lines(banks: dict[str, Any], *, full: bool) -> list[str]:
    """Per bank a summary line; with ``full``, every replayed PCR and its comparison."""
    lines: list[str] = []
    for bank, result in banks.items():
        if result["refusal"]:
            lines.append(f"  {bank}: cannot replay: {result['refusal']}")
            continue
        pcrs = result["pcrs"]
        quoted = tuple(int(p) for p, v in pcrs.items() if v.get("quoted"))
        note = ""
        if quoted:
            note = f", quoted: {pcr_ranges(quoted)}"
        elif any("quoted" in v for v in pcrs.values()):
            note = ", none quoted: compared with --pcrs only"
        lines.append(f"  {bank}: {result['status']} ({len(pcrs)} PCRs replayed{note})")
        for pcr, value in pcrs.items():
            if not full and value["status"] != "mismatch":
                continue
            status = {"match": "match", "mismatch": "MISMATCH", "not_given": "no value given"}
            row = f"    PCR{pcr:<3} {value['replayed']}  {status[value['status']]}"
            if value["status"] == "mismatch":
                row += f" (TPM: {value['expected']})"
            lines.append(row)
    return lines


def render_inspection(path: str, document: dict[str, Any]) -> str:
    """``inspect`` output: the kind, then its fields; event logs as a table."""
    kind = document["kind"]
    lines = [f"{path}: {kind}"]
    if document.get("error"):
        lines.append(f"  malformed: {document['error']}")
    if document.get("hint"):
        lines.append(f"  hint: {document['hint']}")
    fields = dict(document.get("fields", {}))
    events = fields.pop("events", None)
    entries = fields.pop("entries", None)
    lines.extend(_field_lines(fields, indent=2))
    if entries:
        lines.append(f"  {'#':>4} {'PCR':>4} {'template':<8} {'digest':<28} name")
        for entry in entries:
            digest = (entry["digest"] or "-")[: _HEX_SHOWN + 12]
            flag = "  (violation)" if entry["violation"] else ""
            lines.append(
                f"  {entry['index']:>4} {entry['pcr']:>4} {entry['template']:<8} "
                f"{digest:<28} {entry['name']}{flag}"
            )
    if events is not None:
        lines.append(f"  {'#':>4} {'PCR':>4} {'type':<34} {'digest (first bank)':<18} data")
        for event in events:
            digests = list(event["digests"].values())
            digest = digests[0][:_HEX_SHOWN] if digests else "-"
            lines.append(
                f"  {event['index']:>4} {event['pcr']!s:>4} {event['type']:<34} "
                f"{digest:<18} {event['data']}"
            )
    return "\n".join(lines)


def _field_lines(fields: dict[str, Any], *, indent: int) -> list[str]:
    lines: list[str] = []
    pad = " " * indent
    for key, value in fields.items():
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines.extend(_field_lines(value, indent=indent + 2))
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: {', '.join(map(str, value)) or '(none)'}")
        else:
            lines.append(f"{pad}{key}: {value}")
    return lines
