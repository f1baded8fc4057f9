"""The opaque data of an NVIDIA MEASUREMENTS response: TLV fields, decoded by name.

SPDM 1.1 (DSP0274 1.1, 10.11 MEASUREMENTS) leaves OpaqueData to the vendor. NVIDIA
fills it with fields ``type u16 | size u16 | value`` (little endian). Field numbers
are NVIDIA's (their verifiers' OPAQUE_FIELD_ID_* tables); decoding below covers the
fields seen in the shared vectors, and every other type is kept raw with its
number. Type 22 means different things on the two devices (PROVENANCE.md section
5): the list of connected switches' PDIs in a GPU report, the switch's own PDI in
an NVSwitch report.

Layouts are versioned: drivers before 580 send no OPAQUE_DATA_VERSION field
(``LEGACY``), Blackwell firmware sends version 0 and Hopper with driver 580+ sends 1.
CUDA 13.5 drivers change the layout; any version not listed here is refused with
``unknown_opaque_layout`` rather than decoded by guesswork.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from verifier.evidence.nvidia.spdm_reader import Reader, ReportParseError

# A GPU report's opaque data is 354-579 bytes in the vectors; SPDM 1.1 (10.11,
# OpaqueLength) caps it at 1024, so at most 256 empty TLVs fit: no count bound needed
# beyond the byte bound the caller enforces.
PDI_SIZE = 8  # Platform Device Identifier: 64-bit
FWID_SIZE = 48  # SHA-384 of the firmware, matched against the device certificate


class OpaqueLayout(enum.Enum):
    LEGACY = "legacy"  # no OPAQUE_DATA_VERSION field
    V0 = "v0"
    V1 = "v1"


_LAYOUT_BY_VERSION = {0: OpaqueLayout.V0, 1: OpaqueLayout.V1}


class DeviceKind(enum.Enum):
    GPU = "gpu"
    NVSWITCH = "nvswitch"


class FieldType(enum.IntEnum):
    """NVIDIA's opaque field numbers that this module decodes."""

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
    PDI = 22  # GPU: SWITCH_PDI list; NVSwitch: DEVICE_PDI
    FLOORSWEPT_PORTS = 23
    POSITION_ID = 24
    LOCK_SWITCH_STATUS = 25
    SWITCH_GPU_PDIS = 26
    SYS_ENABLE_STATUS = 33
    OPAQUE_DATA_VERSION = 34
    FEATURE_FLAG = 36


# Only NVSwitch firmware sends these; their presence tells the two devices apart
# without trusting a caller-supplied architecture label.
_SWITCH_ONLY = frozenset(
    {FieldType.POSITION_ID, FieldType.LOCK_SWITCH_STATUS, FieldType.SWITCH_GPU_PDIS}
)

_T = TypeVar("_T")

FEATURE_FLAG_NAMES = {0: "SPT", 2: "PPCIE"}  # values seen in the vectors


@dataclass(frozen=True)
class OpaqueField:
    """One TLV exactly as sent; ``offset`` is where its type field starts in the report."""

    type: int
    value: bytes
    offset: int


@dataclass(frozen=True)
class OpaqueData:
    layout: OpaqueLayout
    device: DeviceKind
    fields: tuple[OpaqueField, ...]  # every field, in report order
    unknown: tuple[OpaqueField, ...]  # types this module does not decode
    driver_version: str | None = None
    vbios_version: str | None = None
    board_id: int | None = None
    chip_sku: str | None = None
    chip_sku_mod: str | None = None
    project: str | None = None
    project_sku: str | None = None
    project_sku_mod: str | None = None
    gpu_info: bytes | None = None
    msrscnt: tuple[int, ...] | None = None
    cprinfo: bytes | None = None
    nvdec0_status: int | None = None
    fwid: bytes | None = None
    protected_pcie_status: int | None = None
    # PDIs as integers: a GPU lists them little-endian, a switch sends its own
    # big-endian; as integers the two sides compare equal (8-GPU PPCIe vectors).
    switch_pdis: tuple[int, ...] | None = None  # GPU: the NVSwitches it is connected to
    device_pdi: int | None = None  # NVSwitch: its own PDI
    # Raw 8-byte entries: no vector shows which byte order the GPUs' side uses here.
    switch_gpu_pdis: tuple[bytes, ...] | None = None  # NVSwitch: the GPUs on its ports
    floorswept_ports: bytes | None = None
    position_id: int | None = None
    lock_switch_status: int | None = None
    sys_enable_status: bytes | None = None
    opaque_data_version: int | None = None
    feature_flag: int | None = None

    @property
    def feature_flag_name(self) -> str | None:
        if self.feature_flag is None:
            return None
        return FEATURE_FLAG_NAMES.get(self.feature_flag, f"UNKNOWN_{self.feature_flag}")


def _bad(field: OpaqueField, why: str) -> ReportParseError:
    name = FieldType(field.type).name
    return ReportParseError(
        f"opaque field {name}: {why}", code="bad_opaque_field", offset=field.offset
    )


def _sized(field: OpaqueField, size: int) -> bytes:
    if len(field.value) != size:
        raise _bad(field, f"{len(field.value)} bytes, expected {size}")
    return field.value


def _uint(field: OpaqueField, size: int) -> int:
    return int.from_bytes(_sized(field, size), "little")


def _text(field: OpaqueField) -> str:
    """NUL-padded printable ASCII (version strings, SKU and project codes)."""
    text, _, padding = field.value.partition(b"\x00")
    if padding.strip(b"\x00") or not all(0x20 <= c < 0x7F for c in text):
        raise _bad(field, "not NUL-padded printable ASCII")
    return text.decode("ascii")


def _pdis(field: OpaqueField) -> tuple[bytes, ...]:
    value = field.value
    if not value or len(value) % PDI_SIZE:
        raise _bad(field, f"{len(value)} bytes is not a list of {PDI_SIZE}-byte PDIs")
    return tuple(value[i : i + PDI_SIZE] for i in range(0, len(value), PDI_SIZE))


def _gpu_vbios(field: OpaqueField) -> str:
    # A GPU sends the version as bytes m0 m1 m2 m3 m4 0 0 0, shown as m3.m2.m1.m0.m4
    # (the form RIM ids and NVIDIA's tools use, e.g. 96.00.74.00.20).
    raw = _sized(field, 8)
    if any(raw[5:]):
        raise _bad(field, "reserved bytes are not zero")
    return ".".join(f"{b:02x}" for b in (raw[3], raw[2], raw[1], raw[0], raw[4]))


def _split(data: bytes, base: int) -> list[OpaqueField]:
    reader = Reader(data, base=base)
    fields: list[OpaqueField] = []
    seen: set[int] = set()
    while reader.remaining:
        start = reader.offset
        if reader.remaining < 4:
            raise reader.fail("opaque field header cut short", code="opaque_field_overrun")
        field_type = reader.u16("opaque field type")
        size = reader.u16("opaque field size")
        value = reader.take(size, f"opaque field {field_type}", code="opaque_field_overrun")
        if field_type in seen:
            raise reader.fail(
                f"opaque field {field_type} repeated", code="duplicate_opaque_field", at=start
            )
        seen.add(field_type)
        fields.append(OpaqueField(field_type, value, start))
    return fields


def _layout(by_type: dict[int, OpaqueField]) -> OpaqueLayout:
    field = by_type.get(FieldType.OPAQUE_DATA_VERSION)
    if field is None:
        return OpaqueLayout.LEGACY
    if len(field.value) != 2:
        raise ReportParseError(
            f"OPAQUE_DATA_VERSION is {len(field.value)} bytes (0x{field.value.hex()}), expected 2",
            code="unknown_opaque_layout",
            offset=field.offset,
        )
    version = int.from_bytes(field.value, "little")
    if version not in _LAYOUT_BY_VERSION:
        raise ReportParseError(
            f"opaque data version {version} is not a known layout "
            f"(known: {sorted(_LAYOUT_BY_VERSION)} and none)",
            code="unknown_opaque_layout",
            offset=field.offset,
        )
    return _LAYOUT_BY_VERSION[version]


def _u32_list(field: OpaqueField) -> tuple[int, ...]:
    if len(field.value) % 4:
        raise _bad(field, f"{len(field.value)} bytes is not a list of u32 counters")
    return tuple(
        int.from_bytes(field.value[i : i + 4], "little") for i in range(0, len(field.value), 4)
    )


def _raw(field: OpaqueField) -> bytes:
    return field.value


def _u8(field: OpaqueField) -> int:
    return _uint(field, 1)


def _u16(field: OpaqueField) -> int:
    return _uint(field, 2)


def _u32(field: OpaqueField) -> int:
    return _uint(field, 4)


def _fwid(field: OpaqueField) -> bytes:
    return _sized(field, FWID_SIZE)


def _one_pdi(field: OpaqueField) -> int:
    return int.from_bytes(_sized(field, PDI_SIZE), "big")


def _pdi_list(field: OpaqueField) -> tuple[int, ...]:
    return tuple(int.from_bytes(pdi, "little") for pdi in _pdis(field))


def parse_opaque(data: bytes, *, base: int = 0) -> OpaqueData:
    """Split and decode opaque data; ``base`` is its offset in the report (for errors)."""
    fields = _split(data, base)
    by_type = {f.type: f for f in fields}
    layout = _layout(by_type)
    switch = any(t in by_type for t in _SWITCH_ONLY)

    def pick(t: FieldType, decode: Callable[[OpaqueField], _T]) -> _T | None:
        field = by_type.get(t)
        return None if field is None else decode(field)

    known = {int(t) for t in FieldType}
    pdi = FieldType.PDI
    return OpaqueData(
        layout=layout,
        device=DeviceKind.NVSWITCH if switch else DeviceKind.GPU,
        fields=tuple(fields),
        unknown=tuple(f for f in fields if f.type not in known),
        driver_version=pick(FieldType.DRIVER_VERSION, _text),
        # An NVSwitch sends its BIOS version as text ("96.10.55.00.01").
        vbios_version=pick(FieldType.VBIOS_VERSION, _text if switch else _gpu_vbios),
        board_id=pick(FieldType.BOARD_ID, _u32),
        chip_sku=pick(FieldType.CHIP_SKU, _text),
        chip_sku_mod=pick(FieldType.CHIP_SKU_MOD, _text),
        project=pick(FieldType.PROJECT, _text),
        project_sku=pick(FieldType.PROJECT_SKU, _text),
        project_sku_mod=pick(FieldType.PROJECT_SKU_MOD, _text),
        gpu_info=pick(FieldType.GPU_INFO, _raw),
        msrscnt=pick(FieldType.MSRSCNT, _u32_list),
        cprinfo=pick(FieldType.CPRINFO, _raw),
        nvdec0_status=pick(FieldType.NVDEC0_STATUS, _u8),
        fwid=pick(FieldType.FWID, _fwid),
        protected_pcie_status=pick(FieldType.PROTECTED_PCIE_STATUS, _u8),
        switch_pdis=None if switch else pick(pdi, _pdi_list),
        device_pdi=pick(pdi, _one_pdi) if switch else None,
        switch_gpu_pdis=pick(FieldType.SWITCH_GPU_PDIS, _pdis),
        floorswept_ports=pick(FieldType.FLOORSWEPT_PORTS, _raw),
        position_id=pick(FieldType.POSITION_ID, _u16),
        lock_switch_status=pick(FieldType.LOCK_SWITCH_STATUS, _u16),
        sys_enable_status=pick(FieldType.SYS_ENABLE_STATUS, _raw),
        opaque_data_version=pick(FieldType.OPAQUE_DATA_VERSION, _u16),
        feature_flag=pick(FieldType.FEATURE_FLAG, _u16),
    )
