"""Build and sign a version-4 Intel TDX quote (Intel TDX DCAP Quote Generation Library,
"Quote Format"; all integers little-endian).

header (48) || TD 1.0 report body (584) || signature data length u32 || ECDSA
r||s of the attestation key over SHA-256(header || body) (64, big-endian halves)
|| attestation public key x||y (64) || certification data type 6 (QE report
certification data): the QE report (384), its signature by the PCK key (64),
the QE auth data (u16 size + data), and inner certification data type 5: the PEM
PCK chain (PCK leaf, PCK Platform CA, root). The QE report's REPORTDATA is
SHA-256(attestation key || QE auth data) followed by 32 zero bytes: the QE
vouching for the key that signs quotes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from devsim.tdx.model import Platform

__all__ = [
    "INTEL_QE_VENDOR_ID",
    "MEASUREMENT_SIZE",
    "REPORT_DATA_SIZE",
    "TdIdentity",
    "qe_report",
    "signed_quote",
]

QUOTE_VERSION = 4
ATTESTATION_KEY_ECDSA_P256 = 2
TEE_TYPE_TDX = 0x81
# The vendor id every Intel QE puts in the header (the verifier requires it).
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
CERT_DATA_PCK_CHAIN_PEM = 5
CERT_DATA_QE_REPORT = 6
HEADER_SIZE = 48
BODY_SIZE = 584
ENCLAVE_REPORT_SIZE = 384
REPORT_DATA_SIZE = 64
MEASUREMENT_SIZE = 48
USER_DATA_SIZE = 20
_HEADER = struct.Struct("<HHIHH16s20s")


@dataclass(frozen=True)
class TdIdentity:
    """The per-TD values every quote of one simulated guest repeats."""

    platform: Platform
    mr_td: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    user_data: bytes  # the header's 20 bytes: the QE's identifier, then zeros

    def __post_init__(self) -> None:
        for name, value in (("mr_td", self.mr_td), *(("rtmr", r) for r in self.rtmrs)):
            if len(value) != MEASUREMENT_SIZE:
                raise ValueError(f"{name} must be {MEASUREMENT_SIZE} bytes, not {len(value)}")
        if len(self.user_data) != USER_DATA_SIZE:
            raise ValueError(f"user_data must be {USER_DATA_SIZE} bytes")


def _rs(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def attestation_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """x||y of the attestation key, as the quote carries it (no 0x04 prefix)."""
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]


def qe_report(platform: Platform, attestation_key: bytes) -> bytes:
    """The QE's 384-byte SGX report body vouching for ``attestation_key`` (x||y)."""
    qe = platform.qe
    report = bytearray(ENCLAVE_REPORT_SIZE)
    report[0:16] = platform.cpu_svn
    struct.pack_into("<I", report, 16, qe.misc_select)
    report[48:64] = qe.attributes
    report[64:96] = qe.mr_enclave
    report[128:160] = qe.mr_signer
    struct.pack_into("<HH", report, 256, qe.isv_prod_id, qe.isv_svn)
    report[320:352] = hashlib.sha256(attestation_key + qe.auth_data).digest()
    return bytes(report)  # REPORTDATA[32:64] stays zero


def td_report_body(identity: TdIdentity, report_data: bytes) -> bytes:
    """The 584-byte TD 1.0 report body."""
    if len(report_data) != REPORT_DATA_SIZE:
        raise ValueError(f"REPORTDATA must be {REPORT_DATA_SIZE} bytes, not {len(report_data)}")
    platform = identity.platform
    zero = bytes(MEASUREMENT_SIZE)
    body = b"".join(
        (
            platform.tee_tcb_svn,
            platform.mr_seam,
            platform.mr_signer_seam,
            platform.seam_attributes,
            platform.td_attributes,
            platform.xfam,
            identity.mr_td,
            zero,  # MRCONFIGID: no host-provided configuration id
            zero,  # MROWNER
            zero,  # MROWNERCONFIG
            *identity.rtmrs,
            report_data,
        )
    )
    assert len(body) == BODY_SIZE  # a layout bug, never input
    return body


def signed_quote(
    identity: TdIdentity,
    report_data: bytes,
    *,
    attestation_key: ec.EllipticCurvePrivateKey,
    pck_key: ec.EllipticCurvePrivateKey,
    pck_chain_pem: bytes,
) -> bytes:
    """A v4 quote over ``report_data`` (64 bytes), signed as the QE and PCE would."""
    header = _HEADER.pack(
        QUOTE_VERSION,
        ATTESTATION_KEY_ECDSA_P256,
        TEE_TYPE_TDX,
        0,
        0,
        INTEL_QE_VENDOR_ID,
        identity.user_data,
    )
    signed = header + td_report_body(identity, bytes(report_data))
    public = attestation_public_key(attestation_key)
    report = qe_report(identity.platform, public)
    auth = identity.platform.qe.auth_data
    inner = struct.pack("<HI", CERT_DATA_PCK_CHAIN_PEM, len(pck_chain_pem)) + pck_chain_pem
    qe_data = report + _rs(pck_key, report) + struct.pack("<H", len(auth)) + auth + inner
    certification = struct.pack("<HI", CERT_DATA_QE_REPORT, len(qe_data)) + qe_data
    signature_data = _rs(attestation_key, signed) + public + certification
    return signed + struct.pack("<I", len(signature_data)) + signature_data
