"""Readers for the Intel TDX vectors (``../shared/testvectors/tdx``, read in place)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from tests.vectors import vectors_dir

# 2023-07-01: inside the validity of the 2023 collateral and both CRLs (PROVENANCE).
AT_2023 = datetime(2023, 7, 1, tzinfo=UTC)
# 2026-02-15: every real PCK is valid, the 2026 TCB Info too; the CRLs and the
# 2018 TCB Signing certificate are not.
AT_2026 = datetime(2026, 2, 15, tzinfo=UTC)
SPR_SIGNED_END = 4935  # gotdx_v4_quote_spr.dat: 39 bytes of text follow the quote


def tdx_dir() -> Path:
    return vectors_dir("tdx")


def tdx_file(name: str) -> bytes:
    return (tdx_dir() / name).read_bytes()


def intel_root() -> x509.Certificate:
    return x509.load_pem_x509_certificate(tdx_file("intel_sgx_root_ca.pem"))


def collateral_dir(target: Path, **files: str) -> Path:
    """``target`` with symlinks named as ``--collateral`` expects to vector files."""
    target.mkdir(parents=True, exist_ok=True)
    for name, vector in files.items():
        (target / name).symlink_to(tdx_dir() / vector)
    return target


COLLATERAL_2023 = {
    "tcb_info.json": "gotdx_tcbinfo_fmspc_50806f000000.json",
    "qe_identity.json": "gotdx_td_qe_identity_2023.json",
    "tcb_signing_chain.pem": "gotdx_tcb_signing_chain.extracted.pem",
    "root_ca_crl.der": "gotdx_intel_root_ca_crl.der",
    "pck_crl.der": "gotdx_pck_platform_crl.der",
}
