"""Intel PCS collateral from a directory, as PCS serves it: one file per piece.

Used by ``evidence verify tdx --collateral DIR`` and by the attestation stream
(``[verifier.tdx] collateral_dir``), which re-reads the directory every round so
that an operator copying in Intel's newer TCB Info or CRLs takes effect at once,
without a restart and without network access from the verifier.

One directory serves a fleet of several platforms: TCB Info is per FMSPC and the
PCK CRL per issuing CA, so ``tcb_info_<fmspc hex>.json`` and
``pck_crl_<platform|processor>.der`` are used when present for the quote's
platform, ``tcb_info.json`` and ``pck_crl.der`` otherwise. The selection reads
unauthenticated fields only to pick a file: the chosen TCB Info must still name the
authenticated PCK's FMSPC, and the CRL must still be signed by its CA.
"""

from __future__ import annotations

from pathlib import Path

from verifier.evidence.bounded_file import read_bounded
from verifier.evidence.tdx.offline import TdxCollateral

__all__ = ["COLLATERAL_FILES", "CollateralFilesError", "read_collateral_dir"]

# File name -> TdxCollateral field.
COLLATERAL_FILES = {
    "tcb_info.json": "tcb_info",
    "qe_identity.json": "qe_identity",
    "tcb_signing_chain.pem": "tcb_signing_chain",
    "root_ca_crl.der": "root_ca_crl",
    "pck_crl.der": "pck_crl",
}
# The largest piece (TCB Info for a platform with many levels) is tens of KiB.
MAX_COLLATERAL_FILE_BYTES = 4 * 1024 * 1024


class CollateralFilesError(ValueError):
    """The directory or one of its files cannot be read; the message names it."""


def _read(path: Path) -> bytes:
    return read_bounded(path, MAX_COLLATERAL_FILE_BYTES, CollateralFilesError)


def _platform_specific(directory: Path, fmspc: bytes | None, pck_ca: str | None) -> dict[str, str]:
    """The file to read for each field whose collateral is per platform or per CA."""
    chosen: dict[str, str] = {}
    if fmspc is not None and (directory / f"tcb_info_{fmspc.hex()}.json").exists():
        chosen["tcb_info"] = f"tcb_info_{fmspc.hex()}.json"
    if pck_ca in ("platform", "processor") and (directory / f"pck_crl_{pck_ca}.der").exists():
        chosen["pck_crl"] = f"pck_crl_{pck_ca}.der"
    return chosen


def read_collateral_dir(
    directory: Path, *, fmspc: bytes | None = None, pck_ca: str | None = None
) -> TdxCollateral:
    """The pieces present in ``directory``; a missing piece stays None (reported later).

    ``fmspc`` and ``pck_ca`` ("platform" or "processor") pick the per-platform files
    described in the module docstring.
    """
    if not directory.is_dir():
        raise CollateralFilesError(f"{directory}: not a directory")
    names = {field: name for name, field in COLLATERAL_FILES.items()}
    names.update(_platform_specific(directory, fmspc, pck_ca))
    found = {
        field: _read(directory / name)
        for field, name in names.items()
        if (directory / name).exists()
    }
    if not found:
        raise CollateralFilesError(f"{directory}: none of {sorted(COLLATERAL_FILES)}")
    return TdxCollateral(**found)
