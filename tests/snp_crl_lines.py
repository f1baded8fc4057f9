"""TEST SEV-SNP lines whose ARK keeps its key, to issue AMD-style CRLs in tests.

Shared by tests/unit/test_snp_revocation*.py: a devsim.snp hierarchy (ARK, ASK,
VCEK) per product line, a report its VCEK signed over REPORT_DATA, and CRLs its
ARK issues (DER, parsed as the verifier parses them).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from devsim.snp.model import PRODUCTS
from devsim.snp.pki import Hierarchy, IssuingArk, Validity, make_hierarchy_with_ark
from devsim.snp.report import ReportIdentity, signed_report
from tests.snp_vectors import AT, snp
from verifier.evidence.snp.certs import load_certificates
from verifier.evidence.snp.crl import AmdCrl, load_crl
from weightgate.cvm_binding import snp_report_data

NOW = datetime.now(UTC).replace(microsecond=0)
NONCE, ATTEST = b"n" * 32, b"\xffTCG" + bytes(60)
REPORT_DATA = snp_report_data(NONCE, ATTEST)


@dataclass(frozen=True)
class Line:
    """One TEST product line: its chain, its ARK with key, a report its VCEK signed."""

    hierarchy: Hierarchy
    ark: IssuingArk
    report: bytes
    measurement: bytes

    @property
    def sha256(self) -> bytes:
        return self.ark.certificate.fingerprint(hashes.SHA256())

    def crl(self, name: str = "ark.crl", **kwargs: Any) -> AmdCrl:
        kwargs.setdefault("this_update", NOW - timedelta(hours=1))
        kwargs.setdefault("next_update", NOW + timedelta(days=7))
        return load_crl(self.ark.crl(**kwargs), name)


def make_line(product: str) -> Line:
    platform = PRODUCTS[product]
    chip_id = secrets.token_bytes(64)
    validity = Validity.starting(NOW - timedelta(days=30), 60)
    hierarchy, ark = make_hierarchy_with_ark(product, platform.spls, chip_id, validity)
    identity = ReportIdentity(
        platform=platform,
        measurement=secrets.token_bytes(48),
        chip_id=chip_id,
        report_id=secrets.token_bytes(32),
    )
    report = signed_report(identity, REPORT_DATA, hierarchy.vcek_key)
    return Line(hierarchy, ark, report, identity.measurement)


def policy_doc(milan: Line) -> dict[str, Any]:
    """A policy the Milan line's report satisfies."""
    return {"version": 1, "allowed_measurements": [milan.measurement.hex()],
            "min_tcb": {"Milan": dict(PRODUCTS["Milan"].spls)}, "allow_smt": True}  # fmt: skip


def current_crl(line: Line, **kwargs: Any) -> bytes:
    """A DER CRL of ``line``'s ARK, current at NOW."""
    return line.ark.crl(
        this_update=NOW - timedelta(hours=1), next_update=NOW + timedelta(days=7), **kwargs
    )


def amd_ark(line: str = "milan") -> x509.Certificate:
    certificates = load_certificates(snp(f"amd_{line}_ask_ark.pem").read_bytes())
    return next(c for c in certificates if c.issuer == c.subject)


def forged_amd_crl(milan: Line) -> bytes:
    """A CRL naming AMD's ARK-Milan as issuer, signed by a TEST key."""
    forger = IssuingArk(certificate=amd_ark(), key=milan.ark.key)
    return forger.crl(this_update=AT - timedelta(days=1), next_update=AT + timedelta(days=7))
