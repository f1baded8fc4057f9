"""A simulated SEV-SNP guest (``devsim.snp``) answering as configfs-tsm would, for tests and demos.

The simulated host returns what the kernel would: the 1184-byte report and the
GHCB certificate table (VCEK, ASK, ARK in DER), so the agent's table parsing runs
exactly as on a real guest. The evidence chains to the host's TEST ARK: a
verifier accepts it only where that ARK is pinned explicitly.
"""

from __future__ import annotations

from pathlib import Path

from agent.collectors.snp_tsm import TsmReport, TsmUnavailable
from agent.collectors.tsm_evidence import simulated_tsm_report
from devsim.snp import SnpHostError, load_snp_host

__all__ = ["simulated_snp_report"]


def simulated_snp_report(directory: Path, report_data: bytes) -> TsmReport | TsmUnavailable:
    """The simulated guest in ``directory`` reporting over ``report_data`` (never raises for it)."""
    return simulated_tsm_report(
        report_data,
        field="REPORT_DATA",
        what="simulated SNP host",
        load=lambda: load_snp_host(directory),
        error=SnpHostError,
        answer=lambda host: TsmReport(
            report=host.report(report_data), auxblob=host.certificate_table()
        ),
    )
