"""SEV-SNP report parsing on the shared vectors (PROVENANCE.md field values)."""

from __future__ import annotations

import pytest

from tests.snp_vectors import AZURE, GENOA, GOSEVGUEST, REPORTS, TRUSTEE_V2, VLEK, raw_report
from verifier.evidence.errors import ParseError
from verifier.evidence.snp.report import REPORT_SIZE, SIGNED_SIZE, SigningKey, parse_report
from verifier.evidence.snp.tcb import ProductLine, decode_tcb, product_from_cpuid


def test_gosevguest_fields() -> None:
    data = raw_report(GOSEVGUEST)
    r = parse_report(data)
    assert (r.version, r.guest_svn, r.vmpl, r.signature_algo) == (2, 0, 0, 1)
    assert r.policy.raw == 0xB0000
    assert r.policy.debug_allowed and r.policy.smt_allowed
    assert not r.policy.migration_agent_allowed and not r.policy.single_socket_required
    assert r.report_data == bytes.fromhex("0102030405") + bytes(59)
    assert r.measurement.hex() == (
        "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b"
        "6bdf8a9ece31a5a608eb0cf2e4872b01"
    )
    assert r.host_data == bytes(32) and r.id_key_digest == bytes(48)
    assert r.report_id_ma == b"\xff" * 32
    assert r.chip_id.hex().startswith("3ac3fe21") and r.chip_id.hex().endswith("6b5d")
    for raw in (r.reported_tcb, r.current_tcb, r.committed_tcb, r.launch_tcb):
        assert raw == 0x4405000000000002
    tcb = decode_tcb(r.reported_tcb, ProductLine.MILAN)
    assert (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == (2, 0, 5, 68)
    assert r.current_version == (1, 49, 3)
    assert r.platform_info.raw == 1 and r.platform_info.smt_enabled
    assert r.cpuid_family is None  # v2 has no CPUID fields
    assert r.signing_key == SigningKey.VCEK and not r.mask_chip_id
    assert r.signed_bytes == data[:SIGNED_SIZE]


def test_trustee_v2_provisional_firmware() -> None:
    r = parse_report(raw_report(TRUSTEE_V2))
    assert (r.guest_svn, r.policy.raw, r.policy.abi_minor) == (4, 0x3001F, 31)
    assert not r.policy.debug_allowed
    assert r.reported_tcb == r.committed_tcb == r.launch_tcb == 0x7308000000000003
    assert r.current_tcb == 0xCE08000000000003
    assert r.id_key_digest.hex().startswith("0356215882a8")


def test_vlek_v3_fields() -> None:
    r = parse_report(raw_report(VLEK))
    assert r.version == 3 and r.vmpl == 1 and r.signing_key == SigningKey.VLEK
    assert (r.cpuid_family, r.cpuid_model, r.cpuid_stepping) == (0x19, 0x01, 1)
    assert r.chip_id == bytes(64)
    assert r.platform_info.raw == 0x27 and r.platform_info.alias_check_complete
    assert r.current_version == (1, 55, 29)


def test_genoa_model_a0_is_genoa() -> None:
    r = parse_report(raw_report(GENOA))
    assert (r.cpuid_family, r.cpuid_model) == (0x19, 0xA0)
    assert product_from_cpuid(0x19, 0xA0) is ProductLine.GENOA
    assert product_from_cpuid(0x19, 0x01) is ProductLine.MILAN
    assert product_from_cpuid(0x1A, 0x02) is ProductLine.TURIN
    assert product_from_cpuid(0x17, 0x31) is None


def test_azure_embedded_report() -> None:
    r = parse_report(raw_report(AZURE))
    assert r.version == 2 and r.policy.raw == 0x3001F
    assert r.measurement.hex().startswith("9ac48fcac8a2")


def test_turin_tcb_layout() -> None:
    raw = int.from_bytes(bytes([1, 2, 3, 4, 0, 0, 0, 9]), "little")
    turin = decode_tcb(raw, ProductLine.TURIN)
    assert (turin.fmc, turin.bootloader, turin.tee, turin.snp, turin.microcode) == (1, 2, 3, 4, 9)
    milan = decode_tcb(raw, ProductLine.MILAN)
    assert milan.fmc is None and (milan.bootloader, milan.snp) == (1, 0)


@pytest.mark.parametrize("case", REPORTS, ids=lambda c: c.name)
def test_hex_input_is_the_same_report(case: object) -> None:
    data = raw_report(case)  # type: ignore[arg-type]
    as_hex = "\n".join(data[i : i + 32].hex() for i in range(0, len(data), 32)).encode()
    assert parse_report(as_hex) == parse_report(data)


@pytest.mark.parametrize(
    ("edit", "code"),
    [
        (lambda d: d[:-1], "truncated"),
        (lambda d: d + b"\0", "trailing_bytes"),
        (lambda d: b"", "truncated"),
        (lambda d: d * 4, "too_large"),
        (lambda d: d.hex().encode()[:-2], "truncated"),
        (lambda d: d.hex().encode() + b"00", "trailing_bytes"),
        (lambda d: b"\x04" + d[1:], "unsupported_version"),
        (lambda d: b"\x01" + d[1:], "unsupported_version"),
        (lambda d: d[:0x0A] + bytes([d[0x0A] & ~2]) + d[0x0B:], "bad_policy"),
        (lambda d: d[:0x30] + b"\x04" + d[0x31:], "bad_vmpl"),
        (lambda d: d[:0x400] + b"\x01" + d[0x401:], "reserved_nonzero"),
    ],
)
def test_malformed_reports(edit: object, code: str) -> None:
    data = raw_report(GOSEVGUEST)
    with pytest.raises(ParseError) as caught:
        parse_report(edit(data))  # type: ignore[operator]
    assert caught.value.code == code
    assert len(data) == REPORT_SIZE


def test_version_5_fields() -> None:
    data = bytearray(raw_report(GENOA))
    data[0] = 5
    data[0x1F8:0x200] = (7).to_bytes(8, "little")
    r = parse_report(bytes(data))
    assert r.version == 5 and r.launch_mit_vector == 7 and r.current_mit_vector == 0
