"""Build and sign a version-3 SEV-SNP ATTESTATION_REPORT (SEV-SNP Firmware ABI).

1184 (0x4A0) bytes: the body at 0x000..0x29F, signed with the VCEK (ECDSA P-384
SHA-384), then the signature: r and s as 72-byte little-endian fields, the rest
of the 512-byte area zero. What a guest gets from SNP_GUEST_REQUEST(MSG_REPORT_REQ)
at VMPL 0 on an unmasked-CHIP_ID, VCEK-signing platform.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from devsim.snp.model import Platform

__all__ = [
    "GUEST_POLICY",
    "PLATFORM_INFO",
    "REPORT_DATA_SIZE",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "ReportIdentity",
    "signed_report",
]

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
REPORT_VERSION = 3  # the first layout with CPUID fields
REPORT_DATA_SIZE = 64
MEASUREMENT_SIZE = 48
CHIP_ID_SIZE = 64
REPORT_ID_SIZE = 32
_SIGNATURE_FIELD = 72
_ECDSA_P384_SHA384 = 1
# Guest policy: ABI 0.31 minimum, bit 17 (reserved, must be one), bit 16 SMT allowed
# (as every cloud guest launches); debug (bit 19), migration agent (18) and single
# socket (20) off.
GUEST_POLICY = (1 << 17) | (1 << 16) | (0 << 8) | 31
# PLATFORM_INFO: SMT enabled (bit 0) and TSME enabled (bit 1), a typical EPYC host.
PLATFORM_INFO = 0b11
# REPORT_ID_MA is all ones when the guest has no migration agent.
_NO_MIGRATION_AGENT = b"\xff" * REPORT_ID_SIZE


@dataclass(frozen=True)
class ReportIdentity:
    """The per-guest, per-chip values every report of one simulated VM repeats."""

    platform: Platform
    measurement: bytes  # the launch MEASUREMENT, 48 bytes
    chip_id: bytes  # 64 bytes, equal to the VCEK's hwID
    report_id: bytes  # 32 bytes, the guest's REPORT_ID

    def __post_init__(self) -> None:
        sizes = (
            ("measurement", self.measurement, MEASUREMENT_SIZE),
            ("chip_id", self.chip_id, CHIP_ID_SIZE),
            ("report_id", self.report_id, REPORT_ID_SIZE),
        )
        for name, value, size in sizes:
            if len(value) != size:
                raise ValueError(f"{name} must be {size} bytes, not {len(value)}")


def _version(triple: tuple[int, int, int]) -> bytes:
    major, minor, build = triple
    return bytes([build, minor, major, 0])


def report_body(identity: ReportIdentity, report_data: bytes) -> bytes:
    """The signed body, bytes 0x000..0x29F."""
    if len(report_data) != REPORT_DATA_SIZE:
        raise ValueError(f"REPORT_DATA must be {REPORT_DATA_SIZE} bytes, not {len(report_data)}")
    platform = identity.platform
    tcb = platform.tcb
    body = bytearray(SIGNED_SIZE)
    # VERSION, GUEST_SVN, POLICY; FAMILY_ID and IMAGE_ID stay zero (no ID block).
    struct.pack_into("<IIQ", body, 0x000, REPORT_VERSION, 0, GUEST_POLICY)
    # VMPL 0, SIGNATURE_ALGO, CURRENT_TCB, PLATFORM_INFO, flags: no author key,
    # CHIP_ID not masked, SIGNING_KEY 0 (VCEK).
    struct.pack_into("<IIQQI", body, 0x030, 0, _ECDSA_P384_SHA384, tcb, PLATFORM_INFO, 0)
    body[0x050:0x090] = report_data
    body[0x090:0x0C0] = identity.measurement
    # HOST_DATA, ID_KEY_DIGEST and AUTHOR_KEY_DIGEST stay zero (none given at launch).
    body[0x140:0x160] = identity.report_id
    body[0x160:0x180] = _NO_MIGRATION_AGENT
    struct.pack_into("<Q", body, 0x180, tcb)  # REPORTED_TCB
    body[0x188:0x18B] = bytes(
        [platform.cpuid_family, platform.cpuid_model, platform.cpuid_stepping]
    )
    body[0x1A0:0x1E0] = identity.chip_id
    struct.pack_into("<Q", body, 0x1E0, tcb)  # COMMITTED_TCB
    body[0x1E8:0x1EC] = _version(platform.firmware)  # CURRENT_BUILD/MINOR/MAJOR
    body[0x1EC:0x1F0] = _version(platform.firmware)  # COMMITTED_BUILD/MINOR/MAJOR
    struct.pack_into("<Q", body, 0x1F0, tcb)  # LAUNCH_TCB
    return bytes(body)


def signed_report(
    identity: ReportIdentity, report_data: bytes, vcek_key: ec.EllipticCurvePrivateKey
) -> bytes:
    """The 1184-byte report over ``report_data`` (64 bytes), signed with ``vcek_key``."""
    body = report_body(identity, report_data)
    r, s = decode_dss_signature(vcek_key.sign(body, ec.ECDSA(hashes.SHA384())))
    signature = r.to_bytes(_SIGNATURE_FIELD, "little") + s.to_bytes(_SIGNATURE_FIELD, "little")
    report = body + signature.ljust(REPORT_SIZE - SIGNED_SIZE, b"\x00")
    assert len(report) == REPORT_SIZE  # a layout bug, never input
    return report
