"""Azure confidential VMs: the HCL report that wraps an SNP report.

Azure's paravisor (HCL) hands the guest a report of its own: a 32-byte header
("HCLA", version, total size, request type, status, reserved), the SNP
ATTESTATION_REPORT (0x20..0x4C0), then the IGVM request data: a 20-byte header
(data size, version, report type, hash type, variable data size) and the runtime
claims JSON (the vTPM's HCLAkPub / HCLEkPub and the VM configuration). The
paravisor puts a digest of that JSON in REPORT_DATA, which is how the SNP
signature covers the claims; the guest cannot choose REPORT_DATA on Azure, so
freshness must come from elsewhere (the vTPM quote over the verifier's nonce).

The IGVM header, hash type included, is outside the SNP signature: whoever
relays the report can rewrite it. So the hash type is not taken from it but
pinned to SHA-256 (1), what Azure's paravisor uses; any other declared type is
refused (``unsupported_hash``) rather than followed to a weaker or other digest.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from verifier.evidence.errors import ParseError
from verifier.evidence.snp.report import REPORT_SIZE
from verifier.verdict import Reason

__all__ = [
    "HCL_MAGIC",
    "HclReport",
    "check_runtime_claims",
    "is_hcl_report",
    "parse_hcl_report",
    "runtime_claims_digest",
]

HCL_MAGIC = b"HCLA"
HEADER_SIZE = 0x20
IGVM_HEADER_SIZE = 20
# Azure returns the HCL report in a fixed 2600-byte buffer (zero padded); twice
# that leaves room for larger runtime claims while bounding the work.
MAX_HCL_SIZE = 8 * 1024
# IGVM hash types (1 SHA-256, 2 SHA-384, 3 SHA-512): only SHA-256 is accepted
# (module docstring): the header declaring it is unsigned.
HASH_TYPE_SHA256 = 1


@dataclass(frozen=True, slots=True)
class HclReport:
    """The parts of an HCL report; ``snp_report`` is the exact embedded report bytes."""

    version: int
    request_type: int
    snp_report: bytes
    hash_type: int
    runtime_claims: bytes  # the JSON bytes as hashed, never re-encoded


def is_hcl_report(data: bytes) -> bool:
    return data[:4] == HCL_MAGIC


def parse_hcl_report(data: bytes) -> HclReport:
    """Split an HCL report. Checks: size bound, magic, declared sizes consistent
    (total = header + report + IGVM data, IGVM data = 20 + variable data), a known
    hash type of SHA-256 (1; unsigned, so pinned: ``unsupported_hash``), and only zero
    padding after the declared size. Raises ParseError."""
    if len(data) > MAX_HCL_SIZE:
        raise ParseError(f"HCL report over {MAX_HCL_SIZE} bytes", code="too_large")
    start = HEADER_SIZE + REPORT_SIZE
    if len(data) < start + IGVM_HEADER_SIZE:
        raise ParseError(f"HCL report of {len(data)} bytes is truncated", code="truncated")
    magic, version, total, request_type, _status = struct.unpack_from("<4sIIII", data, 0)
    if magic != HCL_MAGIC:
        raise ParseError("not an HCL report (no HCLA magic)", code="bad_magic")
    data_size, _igvm_version, _report_type, hash_type, variable_size = struct.unpack_from(
        "<IIIII", data, start
    )
    if data_size != IGVM_HEADER_SIZE + variable_size or total != start + data_size:
        raise ParseError("HCL report sizes are inconsistent", code="bad_size")
    if total > len(data):
        raise ParseError(f"HCL report declares {total} bytes, has {len(data)}", code="truncated")
    if any(data[total:]):
        raise ParseError("non-zero bytes after the HCL report", code="trailing_bytes")
    if hash_type != HASH_TYPE_SHA256:
        raise ParseError(
            f"IGVM hash type {hash_type} (only 1, SHA-256, is accepted)", code="unsupported_hash"
        )
    return HclReport(
        version=version,
        request_type=request_type,
        snp_report=data[HEADER_SIZE:start],
        hash_type=hash_type,
        runtime_claims=data[start + IGVM_HEADER_SIZE : total],
    )


def runtime_claims_digest(hcl: HclReport) -> bytes:
    """The digest the paravisor puts first in REPORT_DATA (the rest is zero): the
    SHA-256 of the runtime-claims bytes exactly as carried (never the declared type's)."""
    return hashlib.sha256(hcl.runtime_claims).digest()


def check_runtime_claims(hcl: HclReport, report_data: bytes) -> list[Reason]:
    """``snp.azure.runtime_claims_mismatch`` unless REPORT_DATA starts with the digest
    of the runtime claims and is zero after it (pass the *authenticated* REPORT_DATA)."""
    digest = runtime_claims_digest(hcl)
    expected = digest.ljust(len(report_data), b"\0")
    if hmac.compare_digest(expected, report_data):
        return []
    return [
        Reason(
            "snp.azure.runtime_claims_mismatch",
            "REPORT_DATA is not the digest of the HCL runtime claims",
        )
    ]
