"""The /dev/sev-guest and /dev/tdx_guest fallbacks, used where configfs-tsm is absent.

``FakeSevGuest`` stands in for the kernel's sev-guest driver and, behind it, the
hypervisor and the AMD firmware. It is handed the very ``struct
snp_guest_request_ioctl`` the collector passes to ioctl(2), checks the ioctl number
and ``msg_version``, reads the request structure from this process's memory at
``req_data`` (as the kernel's copy_from_user does: user_data at offset 0, vmpl at
64, zero reserved bytes, certs_address at 96, certs_len at 104), and answers as
sev-guest.c does: a MSG_REPORT_RSP (status, report_size, 24 reserved bytes, the
report) written at ``resp_data``, the certificate table at ``certs_address``, or
a failure: an errno with ``exitinfo2`` (fw_error, vmm_error) written back into the
structure, and for a too-small certificate buffer the size needed written back
into ``certs_len``. The report is a genuine one from devsim.snp signed over the
user_data the fake read, so the verifier's libraries check the whole path. It is
no kernel and no firmware: it shows what the collector does with each answer a
kernel can give. A few tests use the real ``os.open`` and ``fcntl.ioctl`` on paths
that are not the device (missing, or a regular file, which answers ENOTTY).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.collectors import snp as snp_module
from agent.collectors import tdx as tdx_module
from agent.collectors.cvm_ioctl import CharDevice, Ioctl, IoctlReport, iowr
from agent.collectors.sev_guest import (
    SNP_GET_EXT_REPORT,
    SNP_GET_REPORT,
    ExtReportRequest,
    GuestRequest,
    ReportRequest,
    sev_guest_report,
)
from agent.collectors.snp import snp_evidence_message
from agent.collectors.snp_tsm import TsmUnavailable
from agent.collectors.tdx import tdx_evidence_message
from agent.collectors.tdx_guest import TDX_CMD_GET_REPORT0, TdxReportRequest, tdx_guest_fallback
from devsim.snp import SnpHost, create_snp_host
from verifier.evidence.snp.appraise import check_report_data
from verifier.evidence.snp.authenticate import authenticate_report
from verifier.evidence.snp.certs import load_certificates
from verifier.evidence.snp.chain import load_amd_roots
from verifier.evidence.snp.report import parse_report
from verifier.evidence.snp.tcb import ProductLine
from weightgate.cvm_binding import snp_report_data, tdx_report_data
from weightgate.v1 import attestation_pb2

NONCE = bytes(range(32))
ATTEST = b"\xffTCG" + bytes(60)
REPORT_DATA = snp_report_data(NONCE, ATTEST)
TDX_REPORT_DATA = tdx_report_data(NONCE, ATTEST)
PAGE = 4096
EIO_INVALID_LEN = 1 << 32  # exitinfo2 with vmm_error = SNP_GUEST_VMM_ERR_INVALID_LEN


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> SnpHost:
    return create_snp_host(tmp_path_factory.mktemp("snp") / "host")


@dataclass(frozen=True)
class Seen:
    """One request as the fake kernel read it from the collector's memory."""

    number: int
    msg_version: int
    user_data: bytes
    vmpl: int
    reserved: bytes
    certs_len: int | None  # None: SNP_GET_REPORT (no certificate fields)


@dataclass
class FakeSevGuest:
    """The sev-guest driver, hypervisor and firmware played in-process (module docstring)."""

    host: SnpHost
    path: Path = Path("/dev/sev-guest")
    table: bytes | None = None  # the host's certificate table (None: the host's real one)
    kernel_max: int = 16 * 1024  # SEV_FW_BLOB_MAX_SIZE: larger certs_len is EINVAL
    status: int = 0  # MSG_REPORT_RSP status
    report_size: int | None = None  # None: the report's real size
    fail: tuple[int, int] | None = None  # (errno, exitinfo2) for every request
    open_error: OSError | None = None
    seen: list[Seen] = field(default_factory=list)
    opened: int = 0
    closed: int = 0

    @contextlib.contextmanager
    def open(self) -> Iterator[Ioctl]:
        if self.open_error is not None:
            raise self.open_error
        self.opened += 1
        try:
            yield self._ioctl
        finally:
            self.closed += 1

    def _ioctl(self, number: int, argument: ctypes.Structure) -> None:
        # The ioctl number carries the argument's size (bits 16..29): the kernel
        # copies exactly that many bytes from the address ioctl(2) was given.
        assert number in (SNP_GET_REPORT, SNP_GET_EXT_REPORT)
        assert (number >> 16) & 0x3FFF == ctypes.sizeof(argument) == 32
        raw = bytes(argument)
        msg_version, req_data, resp_data, exitinfo2 = struct.unpack("<B7xQQQ", raw)
        assert exitinfo2 == 0
        ext = number == SNP_GET_EXT_REPORT
        request = ctypes.string_at(req_data, 112 if ext else 96)
        certs_address, certs_len = struct.unpack_from("<QI", request, 96) if ext else (0, 0)
        user_data = request[:64]
        self.seen.append(
            Seen(
                number=number,
                msg_version=msg_version,
                user_data=user_data,
                vmpl=struct.unpack_from("<I", request, 64)[0],
                reserved=request[68:96],
                certs_len=certs_len if ext else None,
            )
        )
        if msg_version == 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        if self.fail is not None:
            argument.exitinfo2 = self.fail[1]
            raise OSError(self.fail[0], os.strerror(self.fail[0]))
        table = self.host.certificate_table() if self.table is None else self.table
        if ext and certs_len and certs_address:
            if certs_len > self.kernel_max or certs_len % PAGE:
                argument.exitinfo2 = 0xFF  # never reached the firmware
                raise OSError(errno.EINVAL, "Invalid argument")
            needed = -(-len(table) // PAGE) * PAGE
            if needed > certs_len:
                ctypes.memmove(req_data + 104, struct.pack("<I", needed), 4)
                argument.exitinfo2 = EIO_INVALID_LEN
                raise OSError(errno.EIO, "Input/output error")
            ctypes.memmove(certs_address, table.ljust(certs_len, b"\0"), certs_len)
        report = self.host.report(user_data)
        size = len(report) if self.report_size is None else self.report_size
        response = struct.pack("<II24x", self.status, size) + report
        ctypes.memmove(resp_data, response.ljust(4000, b"\0"), 4000)


@pytest.fixture
def device(host: SnpHost) -> FakeSevGuest:
    return FakeSevGuest(host)


def report_from(device: FakeSevGuest, **options: bool) -> IoctlReport:
    got = sev_guest_report(REPORT_DATA, device=device, **options)
    assert isinstance(got, IoctlReport), got
    return got


def reason_from(device: FakeSevGuest, report_data: bytes = REPORT_DATA) -> str:
    got = sev_guest_report(report_data, device=device)
    assert isinstance(got, TsmUnavailable), got
    assert device.opened == device.closed  # the device is always closed
    return got.reason


def assert_authenticates(host: SnpHost, message: attestation_pb2.SnpEvidence) -> None:
    chain = load_certificates(message.cert_chain)
    roots = load_amd_roots(chain[1:], pins={ProductLine(host.product): host.ark_sha256})
    auth = authenticate_report(
        parse_report(message.report),
        key_certificate=load_certificates(message.vcek)[0],
        intermediates=chain[:1],
        roots=roots,
        at=datetime.now(UTC),
    )
    assert check_report_data(REPORT_DATA, auth) == []


# --- ioctl numbers and structure layouts ------------------------------------------------


def test_ioctl_numbers_are_the_kernels() -> None:
    # _IOWR(type, nr, T) = 3 << 30 | sizeof(T) << 16 | type << 8 | nr
    assert ctypes.sizeof(GuestRequest) == 32
    assert SNP_GET_REPORT == 3 << 30 | 32 << 16 | ord("S") << 8 | 0 == 0xC0205300
    assert SNP_GET_EXT_REPORT == 3 << 30 | 32 << 16 | ord("S") << 8 | 2 == 0xC0205302
    assert ctypes.sizeof(TdxReportRequest) == 1088
    assert TDX_CMD_GET_REPORT0 == 3 << 30 | 1088 << 16 | ord("T") << 8 | 1 == 0xC4405401


def test_structure_layouts_match_the_uapi_header() -> None:
    assert ctypes.sizeof(ReportRequest) == 96
    assert ctypes.sizeof(ExtReportRequest) == 112
    assert (ExtReportRequest.certs_address.offset, ExtReportRequest.certs_len.offset) == (96, 104)
    offsets = [getattr(GuestRequest, f).offset for f in ("req_data", "resp_data", "exitinfo2")]
    assert offsets == [8, 16, 24]


@pytest.mark.parametrize(
    ("kind", "number", "size"), [("SS", 0, 32), ("S", 256, 32), ("S", 0, 1 << 14)]
)
def test_iowr_refuses_what_does_not_fit(kind: str, number: int, size: int) -> None:
    with pytest.raises(ValueError, match="ioctl"):
        iowr(kind, number, size)


# --- SNP_GET_EXT_REPORT and SNP_GET_REPORT -----------------------------------------------


def test_ext_report_with_certificates(host: SnpHost, device: FakeSevGuest) -> None:
    got = report_from(device)
    assert parse_report(got.report).report_data == REPORT_DATA
    assert got.auxblob.startswith(host.certificate_table()) and len(got.auxblob) == 16 * 1024
    assert device.seen == [
        Seen(SNP_GET_EXT_REPORT, 1, REPORT_DATA, vmpl=0, reserved=bytes(28), certs_len=16 * 1024)
    ]
    assert device.opened == device.closed == 1
    message = snp_module._message(got)
    assert message.unavailable == ""
    assert message.vcek == host.vcek_der
    assert message.cert_chain == host.cert_chain_pem
    assert_authenticates(host, message)


def test_plain_report_has_no_certificates(device: FakeSevGuest) -> None:
    got = report_from(device, certificates=False)
    assert parse_report(got.report).report_data == REPORT_DATA
    assert got.auxblob == b""
    assert [(s.number, s.msg_version, s.user_data, s.certs_len) for s in device.seen] == [
        (SNP_GET_REPORT, 1, REPORT_DATA, None)
    ]


def test_vmpl_is_passed_and_bounded(device: FakeSevGuest) -> None:
    got = sev_guest_report(REPORT_DATA, device=device, vmpl=2)
    assert isinstance(got, IoctlReport) and device.seen[0].vmpl == 2
    bad = sev_guest_report(REPORT_DATA, device=device, vmpl=4)
    assert bad == TsmUnavailable("VMPL 4 is not 0 to 3")


def test_host_without_certificates_gives_an_empty_table(device: FakeSevGuest) -> None:
    device.table = b""  # the kernel zero-fills the buffer: the table ends at once
    message = snp_module._message(report_from(device))
    assert message.unavailable == "" and message.report
    assert not message.vcek and not message.cert_chain


def test_certificates_too_small_then_retry(host: SnpHost, device: FakeSevGuest) -> None:
    # A kernel whose certificate limit is larger than today's 16 KiB, a host that needs 5 pages.
    device.kernel_max = 64 * 1024
    device.table = host.certificate_table().ljust(5 * PAGE - 100, b"\0")
    got = report_from(device)
    assert [s.certs_len for s in device.seen] == [16 * 1024, 5 * PAGE]
    assert [s.user_data for s in device.seen] == [REPORT_DATA] * 2
    assert device.opened == 1  # both requests on one open device
    message = snp_module._message(got)
    assert message.vcek == host.vcek_der
    assert_authenticates(host, message)


def test_certificates_beyond_the_kernels_limit_are_named(device: FakeSevGuest) -> None:
    device.table = bytes(24) + b"x" * (17 * 1024)  # today's kernel: 16 KiB at most
    reason = reason_from(device)
    assert reason == (
        "SNP_GET_EXT_REPORT on /dev/sev-guest failed: Invalid argument (EINVAL) "
        "(the kernel refused it before asking the firmware)"
    )
    assert [s.certs_len for s in device.seen] == [16 * 1024, 20 * 1024]


def test_certificates_beyond_our_limit_are_not_asked_for(device: FakeSevGuest) -> None:
    device.kernel_max = 1 << 20
    device.table = bytes(24) + b"x" * (70 * 1024)
    assert reason_from(device) == (
        "SNP_GET_EXT_REPORT on /dev/sev-guest: the host's certificates need 73728 bytes "
        "(at most 65536, in whole 4096-byte pages)"
    )
    assert len(device.seen) == 1


def test_certificates_still_too_small_are_given_up(device: FakeSevGuest) -> None:
    device.fail = (errno.EIO, EIO_INVALID_LEN)  # the kernel names no larger size
    assert reason_from(device) == (
        "SNP_GET_EXT_REPORT on /dev/sev-guest: the host's certificates still do not fit in "
        "16384 bytes (it asks for 16384)"
    )


@pytest.mark.parametrize(
    ("fail", "words"),
    [
        ((errno.EIO, 0x16), "Input/output error (EIO) (fw_error 0x16 (INVALID_PARAM))"),
        ((errno.EIO, 0x27), "(fw_error 0x27 (INVALID_KEY))"),
        ((errno.EIO, 0x99), "(fw_error 0x99 (unknown))"),
        ((errno.EIO, 0xFFFFFFFF << 32), "(vmm_error 0xffffffff (hypervisor failed the request))"),
        ((errno.ETIMEDOUT, 2 << 32), "(ETIMEDOUT) (vmm_error 0x2 (hypervisor busy"),
        ((errno.EIO, 0x16 | 0xFFFFFFFF << 32), "(fw_error 0x16 (INVALID_PARAM), vmm_error 0xf"),
        ((errno.ENOTTY, 0xFF), "most likely its VMPCK was wiped"),
        ((errno.EFAULT, 0), "failed: Bad address (EFAULT)"),
    ],
    ids=["invalid-param", "invalid-key", "unknown-fw", "vmm-generic", "busy-timeout",
         "both", "vmpck-wiped", "no-words"],
)  # fmt: skip
def test_ioctl_errors_are_decoded(device: FakeSevGuest, fail: tuple[int, int], words: str) -> None:
    device.fail = fail
    reason = reason_from(device)
    assert reason.startswith("SNP_GET_EXT_REPORT on /dev/sev-guest failed: ")
    assert words in reason
    assert len(device.seen) == 1  # never retried: the kernel wiped the VMPCK


def test_wrong_status_is_unavailable(device: FakeSevGuest) -> None:
    device.status = 0x16
    assert reason_from(device) == "firmware answered status 0x16 (INVALID_PARAM): no report"


@pytest.mark.parametrize("size", [0, 1000, 1185, 4000])
def test_report_size_other_than_1184_is_unavailable(device: FakeSevGuest, size: int) -> None:
    device.report_size = size
    assert reason_from(device) == f"firmware answered a report_size of {size}, not 1184"


def test_short_report_data_opens_nothing(device: FakeSevGuest) -> None:
    assert reason_from(device, b"x" * 32) == "REPORT_DATA of 32 bytes, not 64"
    assert device.opened == 0 and device.seen == []


def test_bad_certificate_table_names_the_device(device: FakeSevGuest) -> None:
    device.table = b"\x01" * (16 * 1024 - 8)  # entries and no terminator within the buffer
    message = snp_module._message(report_from(device))
    assert message.unavailable.startswith(
        "/dev/sev-guest SNP_GET_EXT_REPORT certificates: certificate table"
    )
    assert not message.report


# --- opening the device -----------------------------------------------------------------------


def test_missing_device_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "sev-guest"
    got = sev_guest_report(REPORT_DATA, device=CharDevice(path))
    assert got == TsmUnavailable(
        f"no {path} (not an SEV-SNP guest, or the sev-guest driver is not loaded)"
    )


def test_refused_open_is_unavailable(device: FakeSevGuest) -> None:
    device.open_error = PermissionError(errno.EACCES, "Permission denied")
    reason = reason_from(device)
    assert reason.startswith(
        "/dev/sev-guest: permission denied (EACCES): the agent needs read-write"
    )


def test_a_file_that_is_no_device_answers_enotty(tmp_path: Path) -> None:
    """The real os.open and fcntl.ioctl: a regular file has no such ioctl."""
    path = tmp_path / "sev-guest"
    path.write_bytes(b"")
    got = sev_guest_report(REPORT_DATA, device=CharDevice(path))
    assert got == TsmUnavailable(
        f"SNP_GET_EXT_REPORT on {path} failed: Inappropriate ioctl for device (ENOTTY)"
    )


# --- wiring: configfs-tsm first, the device only where its directory is absent -----------


@pytest.fixture
def snp_fallback(monkeypatch: pytest.MonkeyPatch, device: FakeSevGuest) -> FakeSevGuest:
    """The collector's SNP device with its fallback asking ``device``."""
    fallback = dataclasses.replace(
        snp_module._SNP, fallback=lambda data: sev_guest_report(data, device=device)
    )
    monkeypatch.setattr(snp_module, "_SNP", fallback)
    return device


def snp_message(tsm_dir: Path, report_data: bytes = REPORT_DATA) -> attestation_pb2.SnpEvidence:
    return snp_evidence_message(
        source="tsm", tsm_dir=tsm_dir, simulator_dir=None, report_data=report_data
    )


def test_without_configfs_tsm_the_device_answers(
    host: SnpHost, snp_fallback: FakeSevGuest, tmp_path: Path
) -> None:
    message = snp_message(tmp_path / "none")
    assert message.unavailable == ""
    assert_authenticates(host, message)
    assert len(snp_fallback.seen) == 1


def test_a_configfs_tsm_failure_is_not_bypassed(snp_fallback: FakeSevGuest, tmp_path: Path) -> None:
    message = snp_message(tmp_path)  # exists, but is no configfs: its own reason, no fallback
    assert message.unavailable == "configfs-tsm entry has no provider attribute"
    assert snp_fallback.opened == 0


def test_a_directory_that_cannot_be_looked_up_is_not_absent(
    snp_fallback: FakeSevGuest, tmp_path: Path
) -> None:
    (tmp_path / "file").write_bytes(b"")
    message = snp_message(tmp_path / "file" / "report")  # ENOTDIR, not ENOENT
    assert "no configfs-tsm report directory" in message.unavailable
    assert snp_fallback.opened == 0


def test_short_report_data_is_not_sent_to_the_device(
    snp_fallback: FakeSevGuest, tmp_path: Path
) -> None:
    assert (
        snp_message(tmp_path / "none", b"x" * 32).unavailable == "REPORT_DATA of 32 bytes, not 64"
    )
    assert snp_fallback.opened == 0


def test_without_either_both_reasons_are_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "sev-guest"
    monkeypatch.setattr(
        snp_module, "_SNP", dataclasses.replace(
            snp_module._SNP, fallback=lambda data: sev_guest_report(data, device=CharDevice(path))
        ),
    )  # fmt: skip
    message = snp_message(tmp_path / "none")
    assert message.unavailable == (
        f"{tmp_path / 'none'}: no configfs-tsm report directory (not an SEV-SNP guest, configfs "
        "not mounted, or a kernel without CONFIG_TSM_REPORTS); "
        f"no {path} (not an SEV-SNP guest, or the sev-guest driver is not loaded)"
    )


def test_a_device_failure_is_said_after_configfs_tsm(
    snp_fallback: FakeSevGuest, tmp_path: Path
) -> None:
    snp_fallback.status = 0x16
    message = snp_message(tmp_path / "none")
    assert message.unavailable.endswith(
        "; firmware answered status 0x16 (INVALID_PARAM): no report"
    )
    assert not message.report


# --- TDX: /dev/tdx_guest gives no quote ------------------------------------------------------


def test_tdx_missing_device_says_what_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "tdx_guest"
    got = tdx_guest_fallback(TDX_REPORT_DATA, device=CharDevice(path))
    assert got.reason.startswith(
        f"no {path} (not a TDX guest, or the tdx-guest driver is not loaded); in any case, "
        f"{path} gives a TDREPORT only"
    )


def test_tdx_present_device_gives_no_quote(tmp_path: Path) -> None:
    """A regular file stands in for the device: it is opened and closed, never ioctl-ed."""
    path = tmp_path / "tdx_guest"
    path.write_bytes(b"")
    got = tdx_guest_fallback(TDX_REPORT_DATA, device=CharDevice(path))
    assert got.reason == (
        f"{path} is present, but it gives a TDREPORT only (TDX_CMD_GET_REPORT0, MAC-ed for "
        "this platform, not a quote): a quote needs the host's quote generation service "
        "(QGS over vsock), not supported by this agent; use a kernel with configfs-tsm "
        "(Linux 6.7+, CONFIG_TSM_REPORTS)"
    )


def test_tdx_refused_open_is_named(device: FakeSevGuest) -> None:
    device.open_error = PermissionError(errno.EACCES, "Permission denied")
    got = tdx_guest_fallback(TDX_REPORT_DATA, device=dataclasses.replace(
        device, path=Path("/dev/tdx_guest")
    ))  # fmt: skip
    assert got.reason.startswith("/dev/tdx_guest: permission denied (EACCES)")
    assert "gives a TDREPORT only" in got.reason


def test_tdx_without_configfs_tsm_answers_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "tdx_guest"
    path.write_bytes(b"")
    monkeypatch.setattr(
        tdx_module, "_TDX", dataclasses.replace(
            tdx_module._TDX, fallback=lambda data: tdx_guest_fallback(data, device=CharDevice(path))
        ),
    )  # fmt: skip
    message = tdx_evidence_message(
        source="tsm", tsm_dir=tmp_path / "none", simulator_dir=None, report_data=TDX_REPORT_DATA
    )
    assert not message.quote
    assert message.unavailable.startswith(
        f"{tmp_path / 'none'}: no configfs-tsm report directory (not a TDX guest"
    )
    assert f"; {path} is present, but it gives a TDREPORT only" in message.unavailable
    assert "quote generation service" in message.unavailable
