"""Parse an NVIDIA GPU / NVSwitch attestation report (SPDM 1.1 GET_MEASUREMENTS + MEASUREMENTS).

The report is the 37-byte request the driver sent, followed by the device's signed
MEASUREMENTS response (DSP0274 1.1, 10.11). The last 96 bytes are the raw ECDSA
P-384 signature r||s over SHA-384 of everything before them (request included,
which is how the verifier's nonce gets signed). Parsing only checks structure;
the signature, the nonce and the values are judged by authentication and appraisal.
Every failure is a ParseError (``ReportParseError``) with a stable code and offset.
"""

from __future__ import annotations

from dataclasses import dataclass

from verifier.evidence.nvidia.opaque import OpaqueData, parse_opaque
from verifier.evidence.nvidia.spdm_reader import Reader, ReportParseError

SPDM_VERSION_1_1 = 0x11
GET_MEASUREMENTS = 0xE0  # DSP0274 1.1 Table 4, request codes
MEASUREMENTS = 0x60  # DSP0274 1.1 Table 5, response codes
NONCE_SIZE = 32
REQUEST_SIZE = 4 + NONCE_SIZE + 1
SIGNATURE_SIZE = 96  # ECDSA P-384: r (48) || s (48)
DIGEST_SIZE = 48  # NVIDIA devices negotiate TPM_ALG_SHA_384 for measurements
MEASUREMENT_SPEC_DMTF = 0x01  # DSP0274 1.1 10.11.1, MeasurementSpecification bit 0
DMTF_RAW_BIT_STREAM = 0x80  # DSP0274 1.1 Table 45: bit 7 set = raw bit stream, not digest
MAX_OPAQUE_SIZE = 1024  # DSP0274 1.1 Table 44: OpaqueLength "shall be <= 1024"
# NVML hands reports out in a 0x2000-byte buffer (NVML_CC_GPU_ATTESTATION_REPORT_SIZE);
# the largest vector is 4274 bytes. Twice the buffer leaves room for growth while
# keeping a hostile length from making us walk megabytes.
MAX_REPORT_SIZE = 0x4000


@dataclass(frozen=True)
class SpdmRequest:
    """GET_MEASUREMENTS as the requester sent it (DSP0274 1.1 Table 43)."""

    version: int
    param1: int  # bit 0: signature requested
    measurement_operation: int  # param2: 0xFF = all measurements
    nonce: bytes
    slot_id: int


@dataclass(frozen=True)
class MeasurementBlock:
    """One measurement block in DMTF form (DSP0274 1.1 10.11.1 / 10.11.1.1)."""

    index: int
    dmtf_type: int  # DMTFSpecMeasurementValueType, bit 7 included
    value: bytes
    offset: int  # where the block starts in the report

    @property
    def is_digest(self) -> bool:
        return not self.dmtf_type & DMTF_RAW_BIT_STREAM


@dataclass(frozen=True)
class AttestationReport:
    request: SpdmRequest
    response_version: int
    response_param1: int
    response_param2: int
    blocks: tuple[MeasurementBlock, ...]
    nonce: bytes  # the responder's own nonce (not the verifier's: that is request.nonce)
    opaque: OpaqueData
    signed_bytes: bytes  # exactly the input bytes before the signature, never rebuilt
    signature: bytes  # r || s

    def block(self, index: int) -> MeasurementBlock:
        """The block with SPDM measurement ``index`` (RIM index k is block k+1)."""
        for candidate in self.blocks:
            if candidate.index == index:
                return candidate
        raise KeyError(index)


def _parse_request(reader: Reader) -> SpdmRequest:
    version = reader.u8("request SPDMVersion")
    if version != SPDM_VERSION_1_1:
        raise reader.fail(f"request SPDM version 0x{version:02x}", code="unsupported_spdm_version")
    code = reader.u8("request code")
    if code != GET_MEASUREMENTS:
        raise reader.fail(f"request code 0x{code:02x} is not GET_MEASUREMENTS", code="bad_request")
    param1 = reader.u8("request param1")
    if param1 != 0x01:
        # Without bit 0 the request carries no nonce and the response no signature
        # (DSP0274 1.1 Table 43); other bits are reserved in 1.1.
        raise reader.fail(
            f"request param1 0x{param1:02x}: signature not requested", code="bad_request"
        )
    operation = reader.u8("request param2")
    nonce = reader.take(NONCE_SIZE, "request nonce")
    slot = reader.u8("request SlotIDParam")
    if slot > 7:  # bits 7:4 reserved, slots 0-7 (DSP0274 1.1 Table 43)
        raise reader.fail(f"request SlotIDParam 0x{slot:02x}", code="bad_request")
    return SpdmRequest(version, param1, operation, nonce, slot)


def _parse_block(reader: Reader) -> MeasurementBlock:
    start = reader.offset
    index = reader.u8("block index")
    spec = reader.u8("block MeasurementSpecification")
    if spec != MEASUREMENT_SPEC_DMTF:
        raise reader.fail(f"measurement spec 0x{spec:02x}", code="unsupported_measurement_spec")
    size = reader.u16("block MeasurementSize")
    body = Reader(reader.take(size, f"block {index}", code="block_overrun"), base=start + 4)
    dmtf_type = body.u8("DMTFSpecMeasurementValueType")
    value_size = body.u16("DMTFSpecMeasurementValueSize")
    if value_size + 3 != size:
        raise reader.fail(
            f"block {index}: value size {value_size} + 3 != MeasurementSize {size}",
            code="bad_block_size",
            at=start,
        )
    value = body.take(value_size, "DMTFSpecMeasurementValue")
    if not dmtf_type & DMTF_RAW_BIT_STREAM and value_size != DIGEST_SIZE:
        raise reader.fail(
            f"block {index}: digest of {value_size} bytes, expected {DIGEST_SIZE}",
            code="bad_block_size",
            at=start,
        )
    return MeasurementBlock(index, dmtf_type, value, start)


def _parse_record(record: bytes, *, count: int, base: int) -> tuple[MeasurementBlock, ...]:
    reader = Reader(record, base=base)
    blocks: list[MeasurementBlock] = []
    while reader.remaining:
        block = _parse_block(reader)
        # Index 0 and 0xFF are not block indexes (DSP0274 1.1 Table 43); strictly
        # increasing order rules out duplicates that could shadow each other.
        if not 0 < block.index < 0xFF or (blocks and block.index <= blocks[-1].index):
            raise reader.fail(
                f"block index {block.index} out of order or reserved",
                code="bad_block_index",
                at=block.offset,
            )
        blocks.append(block)
    if len(blocks) != count:
        raise reader.fail(
            f"NumberOfBlocks says {count}, record holds {len(blocks)}",
            code="block_count_mismatch",
            at=base - 4,
        )
    return tuple(blocks)


def parse_report(data: bytes) -> AttestationReport:
    """Parse a whole report: request, MEASUREMENTS response, opaque data, signature.

    Structural checks only, in order: size bound; request (SPDM 1.1, GET_MEASUREMENTS,
    signature requested, slot); response header; measurement record (each block DMTF,
    sizes consistent, indexes increasing, count as declared, record length exact);
    nonce; opaque data (length bound, TLVs, known layout); 96-byte signature and no
    trailing bytes.
    """
    data = bytes(data)
    if len(data) > MAX_REPORT_SIZE:
        raise ReportParseError(
            f"report of {len(data)} bytes exceeds {MAX_REPORT_SIZE}", code="too_large", offset=0
        )
    reader = Reader(data)
    request = _parse_request(reader)
    version = reader.u8("response SPDMVersion")
    if version != request.version:
        raise reader.fail(f"response SPDM version 0x{version:02x}", code="unsupported_spdm_version")
    code = reader.u8("response code")
    if code != MEASUREMENTS:
        raise reader.fail(f"response code 0x{code:02x} is not MEASUREMENTS", code="bad_response")
    param1 = reader.u8("response param1")
    param2 = reader.u8("response param2")
    count = reader.u8("NumberOfBlocks")
    record_length = reader.u24("MeasurementRecordLength")
    record_start = reader.offset
    record = reader.take(record_length, "measurement record")
    blocks = _parse_record(record, count=count, base=record_start)
    nonce = reader.take(NONCE_SIZE, "response nonce")
    opaque_length = reader.u16("OpaqueLength")
    if opaque_length > MAX_OPAQUE_SIZE:
        raise reader.fail(
            f"OpaqueLength {opaque_length} > {MAX_OPAQUE_SIZE}", code="opaque_too_long"
        )
    opaque_start = reader.offset
    opaque = parse_opaque(reader.take(opaque_length, "opaque data"), base=opaque_start)
    signed_end = reader.offset
    signature = reader.take(SIGNATURE_SIZE, "signature")
    if reader.remaining:
        raise reader.fail(f"{reader.remaining} bytes after the signature", code="trailing_bytes")
    return AttestationReport(
        request=request,
        response_version=version,
        response_param1=param1,
        response_param2=param2,
        blocks=blocks,
        nonce=nonce,
        opaque=opaque,
        signed_bytes=data[:signed_end],
        signature=signature,
    )
