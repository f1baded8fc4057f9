"""A simulated Intel TDX guest (``devsim.tdx``) answering as configfs-tsm would (tests, demos).

The simulated guest returns what the kernel's ``tdx_guest`` provider would: the
quote, with the PCK chain inside its certification data (no auxblob). The quote
chains to the guest's TEST root: a verifier accepts it only where that root's
SPKI SHA-256 is pinned explicitly.
"""

from __future__ import annotations

from pathlib import Path

from agent.collectors.snp_tsm import TsmReport, TsmUnavailable
from devsim.tdx import TdxGuestError, load_tdx_guest

__all__ = ["simulated_tdx_quote"]

REPORT_DATA_SIZE = 64


def simulated_tdx_quote(directory: Path, report_data: bytes) -> TsmReport | TsmUnavailable:
    """The simulated guest in ``directory`` quoting ``report_data`` (never raises for it)."""
    if len(report_data) != REPORT_DATA_SIZE:
        return TsmUnavailable(f"REPORTDATA of {len(report_data)} bytes, not {REPORT_DATA_SIZE}")
    try:
        guest = load_tdx_guest(directory)
    except TdxGuestError as exc:
        return TsmUnavailable(f"simulated TDX guest unavailable: {exc}")
    return TsmReport(report=guest.quote(report_data), auxblob=b"")
