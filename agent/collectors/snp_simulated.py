"""A simulated SEV-SNP guest (``devsim.snp``) answering as configfs-tsm would, for tests and demos.

The simulated host returns what the kernel would: the 1184-byte report and the
GHCB certificate table (VCEK, ASK, ARK in DER), so the agent's table parsing runs
exactly as on a real guest. The evidence chains to the host's TEST ARK: a
verifier accepts it only where that ARK is pinned explicitly.
"""

from __future__ import annotations

from pathlib import Path

from agent.collectors.snp_tsm import TsmReport, TsmUnavailable
from devsim.snp import SnpHostError, load_snp_host

__all__ = ["simulated_snp_report"]

REPORT_DATA_SIZE = 64


def simulated_snp_report(directory: Path, report_data: bytes) -> TsmReport | TsmUnavailable:
    """The simulated guest in ``directory`` reporting over ``report_data`` (never raises for it)."""
    if len(report_data) != REPORT_DATA_SIZE:
        return TsmUnavailable(f"REPORT_DATA of {len(report_data)} bytes, not {REPORT_DATA_SIZE}")
    try:
        host = load_snp_host(directory)
    except SnpHostError as exc:
        return TsmUnavailable(f"simulated SNP host unavailable: {exc}")
    return TsmReport(report=host.report(report_data), auxblob=host.certificate_table())
