"""The AMD SEV-SNP vectors (../shared/testvectors/snp, PROVENANCE.md), read in place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.vectors import vectors_dir
from verifier.evidence.snp.certs import load_certificates
from verifier.evidence.snp.chain import AmdRoots, load_amd_roots

# Inside every vector certificate's validity, the AWS VLEK's one-year window
# (2024-12-10..2025-12-10) and the Genoa VCEK's (from 2025-05-27) included.
AT = datetime(2025, 6, 1, tzinfo=UTC)
# After the VLEK expired (PROVENANCE: a verifier using "now" must reject it).
AFTER_VLEK = datetime(2026, 11, 29, tzinfo=UTC)


def snp(name: str) -> Path:
    return vectors_dir("snp") / name


@dataclass(frozen=True)
class Case:
    name: str
    report: str
    key: str
    chain: str
    hcl: bool = False


GOSEVGUEST = Case("gosevguest_milan_v2", "gosevguest_milan_v2_report.bin",
                  "gosevguest_milan_vcek.der", "amd_milan_ask_ark.pem")  # fmt: skip
TRUSTEE_V2 = Case("trustee_milan_v2", "trustee_milan_v2_report.bin",
                  "trustee_milan_vcek.der", "amd_milan_ask_ark.pem")  # fmt: skip
VLEK = Case("trustee_milan_v3_vlek", "trustee_milan_v3_vlek_report.bin",
            "trustee_milan_vlek.der", "amd_milan_asvk_ark.pem")  # fmt: skip
GENOA = Case("trustee_genoa_v3", "trustee_genoa_v3_report.derived.bin",
             "trustee_genoa_vcek.derived.der", "amd_genoa_ask_ark.pem")  # fmt: skip
AZURE = Case("azure_hcl", "trustee_azure_snp_hcl_report.bin",
             "trustee_azure_snp_vcek_ask_ark.pem", "amd_milan_ask_ark.pem", hcl=True)  # fmt: skip
VALID = (GOSEVGUEST, TRUSTEE_V2, VLEK, GENOA, AZURE)
REPORTS = (GOSEVGUEST, TRUSTEE_V2, VLEK, GENOA)  # the raw 1184-byte ones


def all_roots() -> AmdRoots:
    """The three pinned ARKs, from the vectors' KDS chains."""
    arks = [
        c
        for line in ("milan", "genoa", "turin")
        for c in load_certificates(snp(f"amd_{line}_ask_ark.pem").read_bytes())
        if c.issuer == c.subject
    ]
    return load_amd_roots(arks)


def intermediates(chain: str) -> list:  # type: ignore[type-arg]
    return [c for c in load_certificates(snp(chain).read_bytes()) if c.issuer != c.subject]


def raw_report(case: Case) -> bytes:
    data = snp(case.report).read_bytes()
    return data[0x20:0x4C0] if case.hcl else data
