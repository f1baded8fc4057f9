"""Build and sign a simulated GPU's SPDM 1.1 attestation report, byte for byte as NVML returns it.

The report is the 37-byte GET_MEASUREMENTS request the driver sent (the
verifier's nonce in it), then the device's MEASUREMENTS response (DSP0274 1.1,
10.11): 64 DMTF measurement blocks of SHA-384 digests, the responder's own
nonce, NVIDIA's opaque data (Hopper's v1 layout: ``type u16 | size u16 |
value`` little-endian TLVs), and last the raw ECDSA P-384 signature r || s over
SHA-384 of every byte before it, made with the GPU's FMC leaf key.
"""

from __future__ import annotations

import secrets
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from devsim.nvidia.model import BLOCK_COUNT, DIGEST_SIZE, GpuModel

NONCE_SIZE = 32  # SPDM 1.1 GET_MEASUREMENTS nonce
SPDM_VERSION_1_1 = 0x11
GET_MEASUREMENTS = 0xE0
MEASUREMENTS = 0x60
SIGNATURE_REQUESTED = 0x01  # request param1 bit 0: the response must be signed
ALL_MEASUREMENTS = 0xFF  # request param2
DMTF_SPEC = 0x01  # MeasurementSpecification: DMTF
DMTF_DIGEST_TYPE = 0x01  # DMTFSpecMeasurementValueType: firmware digest (bit 7 clear)
P384_SIZE = 48

# NVIDIA's opaque field numbers (its verifiers' OPAQUE_FIELD_ID_* tables).
DRIVER_VERSION = 3
GPU_INFO = 4
VBIOS_VERSION = 6
NVDEC0_STATUS = 11
MSRSCNT = 12
CPRINFO = 13
BOARD_ID = 14
CHIP_SKU = 15
CHIP_SKU_MOD = 16
PROJECT = 17
PROJECT_SKU = 18
PROJECT_SKU_MOD = 19
FWID = 20
PROTECTED_PCIE_STATUS = 21
OPAQUE_DATA_VERSION = 34
FEATURE_FLAG = 36

STATUS_DISABLED = 0x55  # NVDEC0 / protected PCIe: off (every real Hopper sample)
OPAQUE_LAYOUT_V1 = 1  # Hopper with driver 580+
FEATURE_SPT = 0  # single-GPU passthrough; PPCIe would be 2


def _tlv(field_type: int, value: bytes) -> bytes:
    return struct.pack("<HH", field_type, len(value)) + value


def _text(value: str, size: int) -> bytes:
    """NUL-padded ASCII in a fixed-size field, as the firmware writes SKU and project codes."""
    raw = value.encode("ascii")
    if len(raw) > size:
        raise ValueError(f"{value!r} does not fit {size} bytes")
    return raw.ljust(size, b"\x00")


def _vbios_bytes(version: str) -> bytes:
    # Shown as m3.m2.m1.m0.m4, sent as m0 m1 m2 m3 m4 and three zero bytes.
    m3, m2, m1, m0, m4 = (int(part, 16) for part in version.split("."))
    return bytes([m0, m1, m2, m3, m4, 0, 0, 0])


def opaque_data(model: GpuModel, fwid: bytes) -> bytes:
    """The v1 opaque data of a Hopper GPU in CC mode (field order as real reports send it)."""
    driver = model.driver_version.encode("ascii") + b"\x00"
    return b"".join(
        (
            _tlv(VBIOS_VERSION, _vbios_bytes(model.vbios_version)),
            _tlv(BOARD_ID, struct.pack("<I", model.board_id)),
            _tlv(CHIP_SKU, _text(model.chip_sku, 9)),
            _tlv(CHIP_SKU_MOD, _text("0", 5)),
            _tlv(PROJECT, _text(model.project, 5)),
            _tlv(PROJECT_SKU, _text(model.project_sku, 5)),
            _tlv(PROJECT_SKU_MOD, _text("", 2)),
            _tlv(DRIVER_VERSION, driver),
            _tlv(GPU_INFO, bytes.fromhex("8001000000000000")),
            _tlv(MSRSCNT, bytes(4 * BLOCK_COUNT)),  # a u32 change counter per block
            _tlv(CPRINFO, bytes.fromhex("00c00100")),
            _tlv(NVDEC0_STATUS, bytes([STATUS_DISABLED])),
            _tlv(FWID, fwid),
            _tlv(PROTECTED_PCIE_STATUS, bytes([STATUS_DISABLED])),
            _tlv(OPAQUE_DATA_VERSION, struct.pack("<H", OPAQUE_LAYOUT_V1)),
            _tlv(FEATURE_FLAG, struct.pack("<H", FEATURE_SPT)),
        )
    )


def measurement_record(model: GpuModel) -> bytes:
    blocks = []
    for index in range(1, BLOCK_COUNT + 1):
        value = model.measurement(index - 1)  # RIM entry k is block k+1
        if len(value) != DIGEST_SIZE:
            raise ValueError("measurement values are SHA-384 digests")
        body = struct.pack("<BH", DMTF_DIGEST_TYPE, len(value)) + value
        blocks.append(struct.pack("<BBH", index, DMTF_SPEC, len(body)) + body)
    return b"".join(blocks)


def request_bytes(nonce: bytes) -> bytes:
    """GET_MEASUREMENTS, signature requested, all measurements, slot 0."""
    if len(nonce) != NONCE_SIZE:
        raise ValueError(f"an SPDM nonce is {NONCE_SIZE} bytes, got {len(nonce)}")
    header = bytes([SPDM_VERSION_1_1, GET_MEASUREMENTS, SIGNATURE_REQUESTED, ALL_MEASUREMENTS])
    return header + nonce + b"\x00"


def signed_report(
    model: GpuModel, *, nonce: bytes, fwid: bytes, leaf_key: ec.EllipticCurvePrivateKey
) -> bytes:
    """Request + MEASUREMENTS response + r || s, exactly as the driver hands it to NVML."""
    record = measurement_record(model)
    opaque = opaque_data(model, fwid)
    response = (
        bytes([SPDM_VERSION_1_1, MEASUREMENTS, 0, 0, BLOCK_COUNT])
        + len(record).to_bytes(3, "little")
        + record
        # The responder's own nonce: fresh per response, as the GPU makes one.
        + secrets.token_bytes(NONCE_SIZE)
        + struct.pack("<H", len(opaque))
        + opaque
    )
    signed = request_bytes(nonce) + response
    der = leaf_key.sign(signed, ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    return signed + r.to_bytes(P384_SIZE, "big") + s.to_bytes(P384_SIZE, "big")
