"""NVIDIA SPDM attestation reports: every shared vector parses to the values listed in
``nvidia/expected_results.json``; one-byte mutations fail with one named code."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import vectors
from tests.vectors import vectors_dir
from verifier.evidence.errors import ParseError
from verifier.evidence.nvidia.opaque import DeviceKind, FieldType, OpaqueLayout
from verifier.evidence.nvidia.report import AttestationReport, parse_report
from verifier.evidence.nvidia.report_files import read_evidence_json, report_from_hex
from verifier.evidence.nvidia.spdm_reader import ReportParseError


def _expected_entries() -> list[dict[str, Any]]:
    path = vectors.testvectors_root() / "nvidia" / "expected_results.json"
    if not path.exists():
        return []
    entries: list[dict[str, Any]] = json.loads(path.read_text())["evidence"]
    return entries


def _raw(name: str) -> bytes:
    root = vectors_dir("nvidia")
    if name.endswith("]"):
        path, index = name[:-1].split("[")
        return read_evidence_json((root / path).read_bytes())[int(index)].report
    return report_from_hex((root / name).read_text())


# expected_results.json names fields as nv-local-gpu-verifier does: type 22 is
# "SWITCH_PDI" on both devices and type 26 has no name there (PROVENANCE.md section 5).
_ORACLE_NAMES = {int(FieldType.PDI): "SWITCH_PDI", int(FieldType.SWITCH_GPU_PDIS): "UNKNOWN_26"}


def _oracle_name(field_type: int) -> str:
    return _ORACLE_NAMES.get(field_type) or FieldType(field_type).name


def _nvidia_hex_version(raw: bytes) -> str:
    # How the oracle printed every VBIOS field: hex of the first 8 bytes read as a
    # little-endian integer, rotated left by one byte. Right for GPUs; for an NVSwitch
    # (which sends text) it is what NVIDIA's Python tools show, not the version.
    digits = f"{int.from_bytes(raw[:8], 'little'):x}"
    digits = digits if len(digits) % 2 == 0 else "0" + digits
    rotated = digits[2:] + digits[:2]
    return ".".join(rotated[i : i + 2] for i in range(0, len(rotated), 2))


ENTRIES = _expected_entries()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_vector_parses_to_expected_fields(entry: dict[str, Any]) -> None:
    raw = _raw(entry["file"])
    assert len(raw) == entry["report_len"]
    assert hashlib.sha256(raw).hexdigest() == entry["sha256_of_raw_report"]
    report = parse_report(raw)

    request = entry["request"]
    assert report.request.version == request["spdm_version"]
    assert report.request.param1 == request["param1"]
    assert report.request.measurement_operation == int(request["param2"], 16)
    assert report.request.nonce.hex() == request["nonce"]
    assert report.request.slot_id == request["slot"]
    if entry["claimed_nonce_in_json"] is not None:
        assert report.request.nonce.hex() == entry["claimed_nonce_in_json"]

    header = entry["response_header"]
    assert report.response_version == header["spdm_version"]
    assert report.response_param1 == header["param1"]
    assert report.response_param2 == header["param2"]
    assert len(report.blocks) == header["number_of_blocks"] == entry["n_measurement_blocks"]
    record_length = sum(7 + len(b.value) for b in report.blocks)
    assert record_length == header["measurement_record_length"]

    values = {str(b.index): b.value.hex() for b in report.blocks}
    assert values == entry["runtime_measurements_hex_by_spdm_index"]
    assert all(b.dmtf_type == 1 and b.is_digest for b in report.blocks)

    assert report.signed_bytes + report.signature == raw
    assert len(report.signature) == 96
    assert entry["trailing_bytes_after_signature"] == 0
    _check_opaque(report, entry)


def _check_opaque(report: AttestationReport, entry: dict[str, Any]) -> None:
    opaque = report.opaque
    assert [_oracle_name(f.type) for f in opaque.fields] == entry["opaque_fields_present"]
    assert opaque.unknown == ()
    switch = entry["n_measurement_blocks"] == 31
    assert opaque.device is (DeviceKind.NVSWITCH if switch else DeviceKind.GPU)
    decoded = entry["opaque_decoded"]
    vbios_raw = next(f.value for f in opaque.fields if f.type == FieldType.VBIOS_VERSION)
    assert _nvidia_hex_version(vbios_raw) == decoded["VBIOS_VERSION"]
    if switch:
        assert opaque.vbios_version == vbios_raw.decode("ascii")
        assert opaque.position_id == decoded["POSITION_ID"]
        assert opaque.lock_switch_status == decoded["LOCK_SWITCH_STATUS"]
        assert opaque.device_pdi is not None and opaque.switch_pdis is None
        return
    assert opaque.vbios_version == decoded["VBIOS_VERSION"]
    assert opaque.board_id == decoded["BOARD_ID"]
    assert opaque.chip_sku == decoded["CHIP_SKU"]
    assert opaque.project == decoded["PROJECT"]
    assert opaque.project_sku == decoded["PROJECT_SKU"]
    assert opaque.driver_version == decoded["DRIVER_VERSION"]
    assert opaque.nvdec0_status == decoded["NVDEC0_STATUS"]
    assert (opaque.fwid.hex() if opaque.fwid else None) == decoded.get("FWID")
    assert opaque.protected_pcie_status == decoded.get("PROTECTED_PCIE_STATUS")
    assert opaque.opaque_data_version == decoded.get("OPAQUE_DATA_VERSION")
    assert opaque.feature_flag_name == decoded.get("FEATURE_FLAG")
    layouts = {None: OpaqueLayout.LEGACY, 0: OpaqueLayout.V0, 1: OpaqueLayout.V1}
    assert opaque.layout is layouts[opaque.opaque_data_version]
    assert opaque.msrscnt is not None and len(opaque.msrscnt) == 64


def test_ppcie_gpus_list_the_attested_switches() -> None:
    # PROVENANCE.md 4.1: each of the 8 GPUs names the 4 switches of switch_evidence.json.
    base = vectors_dir("nvidia", "nvtrust", "ppcie-verifier-sdk-cpp", "tests", "data")
    gpus = [
        parse_report(e.report)
        for e in read_evidence_json((base / "gpu_evidence.json").read_bytes())
    ]
    switches = read_evidence_json((base / "switch_evidence.json").read_bytes())
    switch_pdis = {parse_report(e.report).opaque.device_pdi for e in switches}
    assert len(gpus) == 8 and len(switch_pdis) == 4
    for gpu in gpus:
        assert gpu.opaque.switch_pdis is not None
        assert set(gpu.opaque.switch_pdis) == switch_pdis


# --- one-mutation negative tests ----------------------------------------------------

V1_REPORT = "pypi_nv-local-gpu-verifier_2.0.0/attestationReport.txt"  # legacy layout
V1_LAYOUT = "attestation-sdk/common-test-data/serialized_test_evidence/hopper_evidence.json[0]"
SWITCH = "attestation-sdk/nv-attestation-sdk-cpp/unit-tests/testdata/switchAttestationReport.txt"
BLOCK2 = 45 + 55  # first block at 45: 4-byte header + 3-byte DMTF header + 48-byte digest


def _set(offset: int, value: bytes) -> Callable[[bytes, AttestationReport], bytes]:
    return lambda raw, _r: raw[:offset] + value + raw[offset + len(value) :]


def _opaque_at(report: AttestationReport, field_type: int, delta: int = 0) -> int:
    return next(f.offset for f in report.opaque.fields if f.type == field_type) + delta


def _opaque_len_at(report: AttestationReport) -> int:
    return report.opaque.fields[0].offset - 2


def _edit_opaque(
    field_type: int, delta: int, value: bytes
) -> Callable[[bytes, AttestationReport], bytes]:
    def edit(raw: bytes, report: AttestationReport) -> bytes:
        at = _opaque_at(report, field_type, delta)
        return raw[:at] + value + raw[at + len(value) :]

    return edit


def _edit_opaque_length(value: int) -> Callable[[bytes, AttestationReport], bytes]:
    def edit(raw: bytes, report: AttestationReport) -> bytes:
        at = _opaque_len_at(report)
        return raw[:at] + value.to_bytes(2, "little") + raw[at + 2 :]

    return edit


MUTATIONS: list[tuple[str, str, Callable[[bytes, AttestationReport], bytes], str]] = [
    ("empty", V1_REPORT, lambda raw, _r: b"", "truncated"),
    ("request cut", V1_REPORT, lambda raw, _r: raw[:36], "truncated"),
    ("signature cut", V1_REPORT, lambda raw, _r: raw[:-1], "truncated"),
    ("trailing byte", V1_REPORT, lambda raw, _r: raw + b"\x00", "trailing_bytes"),
    ("switch trailing byte", SWITCH, lambda raw, _r: raw + b"\x00", "trailing_bytes"),
    ("too large", V1_REPORT, lambda raw, _r: raw * 5, "too_large"),
    ("request version 1.2", V1_REPORT, _set(0, b"\x12"), "unsupported_spdm_version"),
    ("request code", V1_REPORT, _set(1, b"\xe1"), "bad_request"),
    ("no signature requested", V1_REPORT, _set(2, b"\x00"), "bad_request"),
    ("reserved slot bits", V1_REPORT, _set(36, b"\x10"), "bad_request"),
    ("response version", V1_REPORT, _set(37, b"\x10"), "unsupported_spdm_version"),
    ("response code", V1_REPORT, _set(38, b"\x61"), "bad_response"),
    ("block count 63", V1_REPORT, _set(41, b"\x3f"), "block_count_mismatch"),
    ("switch block count 32", SWITCH, _set(41, b"\x20"), "block_count_mismatch"),
    ("record length short", V1_REPORT, _set(42, (3520 - 1).to_bytes(3, "little")), "block_overrun"),
    ("record length huge", V1_REPORT, _set(42, b"\xff\xff\xff"), "truncated"),
    ("block spec not DMTF", V1_REPORT, _set(46, b"\x02"), "unsupported_measurement_spec"),
    ("block size long", V1_REPORT, _set(47, (52).to_bytes(2, "little")), "bad_block_size"),
    ("dmtf value size", V1_REPORT, _set(50, (47).to_bytes(2, "little")), "bad_block_size"),
    ("block index repeated", V1_REPORT, _set(BLOCK2, b"\x01"), "bad_block_index"),
    ("block index zero", V1_REPORT, _set(45, b"\x00"), "bad_block_index"),
    ("opaque over 1024", V1_REPORT, _edit_opaque_length(1025), "opaque_too_long"),
    ("opaque length short", V1_REPORT, _edit_opaque_length(353), "opaque_field_overrun"),
    (
        "opaque field overruns",
        V1_REPORT,
        _edit_opaque(FieldType.NVDEC0_STATUS, 2, b"\x02\x00"),
        "opaque_field_overrun",
    ),
    (
        "opaque field repeated",
        V1_REPORT,
        _edit_opaque(FieldType.BOARD_ID, 0, b"\x06\x00"),
        "duplicate_opaque_field",
    ),
    (
        "driver version not text",
        V1_REPORT,
        _edit_opaque(FieldType.DRIVER_VERSION, 4, b"\x01"),
        "bad_opaque_field",
    ),
    (
        "vbios reserved byte",
        V1_REPORT,
        _edit_opaque(FieldType.VBIOS_VERSION, 11, b"\x01"),
        "bad_opaque_field",
    ),
    (
        "board id size",
        V1_REPORT,
        _edit_opaque(FieldType.BOARD_ID, 2, b"\x03\x00"),
        "opaque_field_overrun",
    ),
    (
        "opaque version 2",
        V1_LAYOUT,
        _edit_opaque(FieldType.OPAQUE_DATA_VERSION, 4, b"\x02\x00"),
        "unknown_opaque_layout",
    ),
    (
        "opaque version ffff",
        V1_LAYOUT,
        _edit_opaque(FieldType.OPAQUE_DATA_VERSION, 4, b"\xff\xff"),
        "unknown_opaque_layout",
    ),
    (
        "switch pdi size",
        SWITCH,
        _edit_opaque(FieldType.PDI, 2, b"\x07\x00"),
        "opaque_field_overrun",
    ),
]


@pytest.mark.parametrize(
    ("name", "vector", "mutate", "code"), MUTATIONS, ids=[m[0] for m in MUTATIONS]
)
def test_one_mutation_fails_with_code(
    name: str, vector: str, mutate: Callable[[bytes, AttestationReport], bytes], code: str
) -> None:
    raw = _raw(vector)
    mutated = mutate(raw, parse_report(raw))
    assert mutated != raw, name
    with pytest.raises(ParseError) as caught:
        parse_report(mutated)
    assert caught.value.code == code, str(caught.value)


def test_error_names_offset_and_unknown_layout() -> None:
    raw = _raw(V1_LAYOUT)
    report = parse_report(raw)
    at = _opaque_at(report, FieldType.OPAQUE_DATA_VERSION)
    mutated = raw[: at + 4] + b"\x02\x00" + raw[at + 6 :]
    with pytest.raises(ReportParseError) as caught:
        parse_report(mutated)
    assert caught.value.offset == at
    assert "version 2" in str(caught.value)


def test_unknown_field_kept_raw() -> None:
    raw = _raw(V1_REPORT)
    report = parse_report(raw)
    at = _opaque_at(report, FieldType.CPRINFO)  # a field the verifier does not judge
    mutated = raw[:at] + (200).to_bytes(2, "little") + raw[at + 2 :]
    unknown = parse_report(mutated).opaque.unknown
    assert [(f.type, f.value, f.offset) for f in unknown] == [(200, bytes.fromhex("00c00100"), at)]


def test_signed_bytes_are_the_input_prefix() -> None:
    raw = _raw(V1_REPORT)
    report = parse_report(raw)
    assert report.signed_bytes == raw[:-96]
    assert report.signature == raw[-96:]
    assert report.block(10).value.hex().startswith("aca2223b")


# --- loaders ------------------------------------------------------------------------


def test_report_from_hex_accepts_whitespace_and_rejects_junk() -> None:
    assert report_from_hex(" 11e0\n") == b"\x11\xe0"
    for bad in ("", "1", "zz", "11 e0", "\uff11\uff11"):
        with pytest.raises(ParseError) as caught:
            report_from_hex(bad)
        assert caught.value.code == "bad_hex"


def test_evidence_json_entries() -> None:
    path = vectors_dir("nvidia") / "nvtrust/ppcie-verifier-sdk-cpp/tests/data/gpu_evidence.json"
    entries = read_evidence_json(path.read_bytes())
    assert len(entries) == 8
    assert {e.arch for e in entries} == {"HOPPER"}
    for entry in entries:
        assert entry.chain_pem.count(b"-----BEGIN CERTIFICATE-----") == 5
        assert parse_report(entry.report).request.nonce == entry.nonce


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{}",
        "[]",
        "[1]",
        '[{"arch": "HOPPER"}]',
        '[{"arch": 1, "nonce": "00"}]',
        '[{"arch": "A", "nonce": "zz", "evidence": "", "certificate": ""}]',
        '[{"arch": "A", "nonce": "00", "evidence": "!!", "certificate": ""}]',
    ],
)
def test_evidence_json_rejects(text: str) -> None:
    with pytest.raises(ParseError) as caught:
        read_evidence_json(text)
    assert caught.value.code == "bad_evidence_json"


def test_vectors_are_present() -> None:
    assert len(ENTRIES) >= 30 or not Path(vectors.testvectors_root()).exists()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=5000))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_report(data)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=3000))
def test_random_response_after_valid_request(body: bytes) -> None:
    request = bytes([0x11, 0xE0, 0x01, 0xFF]) + bytes(32) + b"\x00"
    with contextlib.suppress(ParseError):
        parse_report(request + bytes([0x11, 0x60]) + body)
