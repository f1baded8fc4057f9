"""AMD CRLs from a directory: ``[verifier.snp] crl_dir``, read again every round.

As with the TDX collateral (``[verifier.tdx] collateral_dir``), the attestation
stream re-reads the directory each round, so that an operator copying in AMD's
newer CRLs takes effect at once, without a restart and without network access
from the verifier. Every ``*.crl`` and ``*.der`` file is a CRL (KDS serves
``/vcek/v1/<line>/crl`` and ``/vlek/v1/<line>/crl`` as DER); one that cannot be
read or parsed fails the round naming the file, never silently drops out.
Which CRL covers which chain is decided later (crl.check_revocation).
"""

from __future__ import annotations

from pathlib import Path

from verifier.evidence.bounded_file import read_bounded
from verifier.evidence.errors import ParseError
from verifier.evidence.snp.crl import MAX_CRL_BYTES, AmdCrl, load_crl

__all__ = ["CRL_SUFFIXES", "MAX_CRL_FILES", "CrlFilesError", "read_crl_dir"]

CRL_SUFFIXES = frozenset({".crl", ".der"})
# One CRL per product line and key kind (three lines, VCEK and VLEK: six), with
# room for an old copy beside each new one and for lines to come.
MAX_CRL_FILES = 32


class CrlFilesError(ValueError):
    """The directory or one of its files cannot be read or parsed; the message names it."""


def read_crl_dir(directory: Path) -> tuple[AmdCrl, ...]:
    """Every CRL file of ``directory``, parsed (none at all: an empty tuple)."""
    if not directory.is_dir():
        raise CrlFilesError(f"{directory}: not a directory")
    try:
        files = sorted(p for p in directory.iterdir() if p.suffix in CRL_SUFFIXES)
    except OSError as exc:
        raise CrlFilesError(f"cannot list {directory}: {exc.strerror or exc}") from None
    if len(files) > MAX_CRL_FILES:
        raise CrlFilesError(f"{directory}: {len(files)} CRL files, at most {MAX_CRL_FILES}")
    crls: list[AmdCrl] = []
    for path in files:
        data = read_bounded(path, MAX_CRL_BYTES, CrlFilesError)
        try:
            crls.append(load_crl(data, str(path)))
        except ParseError as exc:
            raise CrlFilesError(f"{path}: {exc}") from None
    return tuple(crls)
