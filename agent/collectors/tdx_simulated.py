"""A simulated Intel TDX guest (``devsim.tdx``) answering as configfs-tsm would (tests, demos).

The simulated guest returns what the kernel's ``tdx_guest`` provider would: the
quote, with the PCK chain inside its certification data (no auxblob). The quote
chains to the guest's TEST root: a verifier accepts it only where that root's
SPKI SHA-256 is pinned explicitly.
"""

from __future__ import annotations

from pathlib import Path

from agent.collectors.snp_tsm import TsmReport, TsmUnavailable
from agent.collectors.tsm_evidence import simulated_tsm_report
from devsim.tdx import TdxGuestError, load_tdx_guest

__all__ = ["simulated_tdx_quote"]


def simulated_tdx_quote(directory: Path, report_data: bytes) -> TsmReport | TsmUnavailable:
    """The simulated guest in ``directory`` quoting ``report_data`` (never raises for it)."""
    return simulated_tsm_report(
        report_data,
        field="REPORTDATA",
        what="simulated TDX guest",
        load=lambda: load_tdx_guest(directory),
        error=TdxGuestError,
        answer=lambda guest: TsmReport(report=guest.quote(report_data), auxblob=b""),
    )
