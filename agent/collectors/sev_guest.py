"""An SEV-SNP report through /dev/sev-guest's ioctls, where configfs-tsm is absent.

include/uapi/linux/sev-guest.h (Linux 5.19+)::

    struct snp_report_req { u8 user_data[64]; u32 vmpl; u8 rsvd[28]; };              96 bytes
    struct snp_ext_report_req { struct snp_report_req data; u64 certs_address;
                                u32 certs_len; };                                   112 bytes
    struct snp_report_resp { u8 data[4000]; };
    struct snp_guest_request_ioctl { u8 msg_version; u64 req_data; u64 resp_data;
        union { u64 exitinfo2; struct { u32 fw_error; u32 vmm_error; }; }; };       32 bytes
    SNP_GET_REPORT     = _IOWR('S', 0x0, struct snp_guest_request_ioctl) = 0xC0205300
    SNP_GET_EXT_REPORT = _IOWR('S', 0x2, struct snp_guest_request_ioctl) = 0xC0205302

(3 << 30 | 32 << 16 | ord('S') = 0x53 << 8 | nr: see :mod:`agent.collectors.cvm_ioctl`.)
``req_data`` and ``resp_data`` are addresses in this process: the kernel copies
the request in and the firmware's MSG_REPORT_RSP out (SEV-SNP firmware ABI,
MSG_REPORT_RSP: u32 status, u32 report_size, 24 reserved bytes, then the report).

SNP_GET_EXT_REPORT also asks the hypervisor for its certificate table (the GHCB
format :mod:`agent.collectors.snp_certtable` parses), copied to ``certs_address``.
``certs_len`` is in bytes, a multiple of the 4 KiB page, at most the kernel's
SEV_FW_BLOB_MAX_SIZE (16 KiB today) or the ioctl fails with EINVAL. Where the host
needs more, the kernel still completes a plain report request (so the message
sequence number moves on), then fails the ioctl with EIO, ``vmm_error`` =
SNP_GUEST_VMM_ERR_INVALID_LEN and the size needed written back to ``certs_len``:
the collector asks once more with that size. Any other failure reported by the
hypervisor or firmware makes the kernel wipe the VMPCK (it cannot risk reusing an
AES-GCM IV), so nothing else is retried: later requests answer ENOTTY until the
guest reboots.

Every byte of the answer is bounds-checked; every failure is a
:class:`TsmUnavailable` reason naming the errno and the decoded firmware and
hypervisor error words, never an exception.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import struct
from pathlib import Path

from agent.collectors.cvm_ioctl import (
    CharDevice,
    GuestDevice,
    Ioctl,
    IoctlReport,
    errno_text,
    iowr,
    open_failure,
)
from agent.collectors.snp_certtable import MAX_CERT_TABLE_BYTES
from agent.collectors.snp_tsm import REPORT_SIZE, TsmUnavailable

__all__ = [
    "SEV_GUEST_DEVICE",
    "SNP_GET_EXT_REPORT",
    "SNP_GET_REPORT",
    "ExtReportRequest",
    "GuestRequest",
    "ReportRequest",
    "sev_guest_report",
]

SEV_GUEST_DEVICE = Path("/dev/sev-guest")
USER_DATA_SIZE = 64  # SNP_REPORT_USER_DATA_SIZE: REPORT_DATA
RESPONSE_SIZE = 4000  # sizeof(struct snp_report_resp)
MSG_VERSION = 1  # the only MSG_REPORT_REQ version; the kernel refuses 0
PAGE_SIZE = 4096
# The kernel's own configfs-tsm path asks for SEV_FW_BLOB_MAX_SIZE (16 KiB) at
# once, and so do we: one firmware request for any table the kernel can carry.
CERTS_BYTES = 16 * 1024
# A retry asks for what the kernel says the host needs, but never more than the
# verifier would take as a certificate table.
MAX_CERTS_BYTES = MAX_CERT_TABLE_BYTES
_RESPONSE_HEADER = struct.Struct("<II24x")  # MSG_REPORT_RSP: status, report_size, reserved

SNP_GUEST_VMM_ERR_INVALID_LEN = 1  # the certificate buffer is too small
SNP_GUEST_VMM_ERR_BUSY = 2  # throttled (the kernel retries this itself for up to 60 s)
SNP_GUEST_VMM_ERR_GENERIC = 0xFFFFFFFF
_VMM_ERRORS = {
    SNP_GUEST_VMM_ERR_INVALID_LEN: "certificate buffer too small",
    SNP_GUEST_VMM_ERR_BUSY: "hypervisor busy (request throttled)",
    SNP_GUEST_VMM_ERR_GENERIC: "hypervisor failed the request",
}
# The kernel's placeholder in exitinfo2 until the request reaches the hypervisor
# (sev-guest.c, snp_guest_ioctl): seeing it means the kernel refused it first.
_NOT_SENT = 0xFF
# SEV firmware status codes (include/uapi/linux/psp-sev.h, sev_ret_code) a guest
# request can meet; others are shown by number.
_FW_ERRORS = {
    0x01: "INVALID_PLATFORM_STATE", 0x02: "INVALID_GUEST_STATE", 0x03: "INVALID_CONFIG",
    0x04: "INVALID_LEN", 0x07: "POLICY_FAILURE", 0x08: "INACTIVE", 0x09: "INVALID_ADDRESS",
    0x0A: "BAD_SIGNATURE", 0x0B: "BAD_MEASUREMENT", 0x10: "INVALID_GUEST",
    0x11: "INVALID_COMMAND", 0x15: "UNSUPPORTED", 0x16: "INVALID_PARAM",
    0x17: "RESOURCE_LIMIT", 0x18: "SECURE_DATA_INVALID", 0x1D: "AEAD_OFLOW",
    0x21: "BAD_SVN", 0x22: "BAD_VERSION", 0x27: "INVALID_KEY",
    0xFFFFFFFF: "NO_FW_CALL",
}  # fmt: skip


class ReportRequest(ctypes.Structure):
    """struct snp_report_req (96 bytes)."""

    _fields_ = [
        ("user_data", ctypes.c_uint8 * USER_DATA_SIZE),
        ("vmpl", ctypes.c_uint32),
        ("rsvd", ctypes.c_uint8 * 28),  # must be zero: ctypes zero-fills
    ]


class ExtReportRequest(ctypes.Structure):
    """struct snp_ext_report_req (112 bytes: certs_address at 96, certs_len at 104, padded)."""

    _fields_ = [
        ("data", ReportRequest),
        ("certs_address", ctypes.c_uint64),
        ("certs_len", ctypes.c_uint32),
    ]


class GuestRequest(ctypes.Structure):
    """struct snp_guest_request_ioctl (32 bytes: req_data at 8, resp_data at 16,
    exitinfo2 at 24, fw_error its low and vmm_error its high 32 bits)."""

    _fields_ = [
        ("msg_version", ctypes.c_uint8),
        ("req_data", ctypes.c_uint64),
        ("resp_data", ctypes.c_uint64),
        ("exitinfo2", ctypes.c_uint64),
    ]


_GUEST_REQUEST_SIZE = ctypes.sizeof(GuestRequest)
SNP_GET_REPORT = iowr("S", 0x0, _GUEST_REQUEST_SIZE)
SNP_GET_EXT_REPORT = iowr("S", 0x2, _GUEST_REQUEST_SIZE)
_ABSENT = "not an SEV-SNP guest, or the sev-guest driver is not loaded"
_NAMES = {SNP_GET_REPORT: "SNP_GET_REPORT", SNP_GET_EXT_REPORT: "SNP_GET_EXT_REPORT"}


class _FailedError(Exception):
    """A named failure, carried out as its reason."""


def _error_words(exitinfo2: int) -> str:
    if exitinfo2 == 0:
        return ""
    if exitinfo2 == _NOT_SENT:
        return " (the kernel refused it before asking the firmware)"
    fw, vmm = exitinfo2 & 0xFFFFFFFF, exitinfo2 >> 32
    words = []
    if fw:
        words.append(f"fw_error 0x{fw:x} ({_FW_ERRORS.get(fw, 'unknown')})")
    if vmm:
        words.append(f"vmm_error 0x{vmm:x} ({_VMM_ERRORS.get(vmm, 'unknown')})")
    return f" ({', '.join(words)})"


def _report_from(response: bytes) -> bytes:
    """The report in a MSG_REPORT_RSP, every field checked."""
    status, size = _RESPONSE_HEADER.unpack_from(response, 0)
    if status != 0:
        raise _FailedError(
            f"firmware answered status 0x{status:x} "
            f"({_FW_ERRORS.get(status, 'unknown')}): no report"
        )
    if size != REPORT_SIZE:
        raise _FailedError(f"firmware answered a report_size of {size}, not {REPORT_SIZE}")
    end = _RESPONSE_HEADER.size + size
    if end > len(response):  # cannot happen with REPORT_SIZE; kept in case either changes
        raise _FailedError(f"report of {size} bytes overruns the {len(response)}-byte response")
    return response[_RESPONSE_HEADER.size : end]


def _request(
    ioctl: Ioctl, request: int, payload: ctypes.Structure, path: Path
) -> tuple[bytes, OSError | None, int]:
    """One ioctl: the response buffer, the OSError (or None) and exitinfo2."""
    response = ctypes.create_string_buffer(RESPONSE_SIZE)
    argument = GuestRequest(
        msg_version=MSG_VERSION,
        req_data=ctypes.addressof(payload),
        resp_data=ctypes.addressof(response),
        exitinfo2=0,  # the kernel writes it back only where it is non-zero
    )
    try:
        ioctl(request, argument)
    except OSError as exc:
        return b"", exc, int(argument.exitinfo2)
    return response.raw, None, int(argument.exitinfo2)


def _failure(request: int, path: Path, exc: OSError, exitinfo2: int) -> _FailedError:
    if exc.errno == errno.ENOTTY and exitinfo2 == _NOT_SENT:
        return _FailedError(
            f"{_NAMES[request]} on {path} failed: {errno_text(exc)} (the kernel refused it "
            "before asking the firmware: most likely its VMPCK was wiped after an earlier "
            "failed request, which only a reboot restores)"
        )
    return _FailedError(
        f"{_NAMES[request]} on {path} failed: {errno_text(exc)}{_error_words(exitinfo2)}"
    )


def _plain_report(ioctl: Ioctl, path: Path, report_data: bytes, vmpl: int) -> IoctlReport:
    payload = ReportRequest(vmpl=vmpl)
    ctypes.memmove(payload.user_data, report_data, USER_DATA_SIZE)
    response, exc, exitinfo2 = _request(ioctl, SNP_GET_REPORT, payload, path)
    if exc is not None:
        raise _failure(SNP_GET_REPORT, path, exc, exitinfo2)
    return IoctlReport(report=_report_from(response), auxblob=b"")


def _ext_report(ioctl: Ioctl, path: Path, report_data: bytes, vmpl: int) -> IoctlReport:
    certs_len = CERTS_BYTES
    for attempt in (1, 2):
        certs = ctypes.create_string_buffer(certs_len)
        payload = ExtReportRequest(certs_address=ctypes.addressof(certs), certs_len=certs_len)
        payload.data.vmpl = vmpl
        ctypes.memmove(payload.data.user_data, report_data, USER_DATA_SIZE)
        response, exc, exitinfo2 = _request(ioctl, SNP_GET_EXT_REPORT, payload, path)
        if exc is None:
            return IoctlReport(
                report=_report_from(response),
                auxblob=certs.raw,  # the table, then zeros: the parser stops at its terminator
                certificates=f"{path} SNP_GET_EXT_REPORT certificates",
            )
        if exc.errno != errno.EIO or exitinfo2 >> 32 != SNP_GUEST_VMM_ERR_INVALID_LEN:
            raise _failure(SNP_GET_EXT_REPORT, path, exc, exitinfo2)
        needed = int(payload.certs_len)
        if attempt == 2 or needed <= certs_len:
            raise _FailedError(
                f"SNP_GET_EXT_REPORT on {path}: the host's certificates still do not fit in "
                f"{certs_len} bytes (it asks for {needed})"
            )
        if needed > MAX_CERTS_BYTES or needed % PAGE_SIZE:
            raise _FailedError(
                f"SNP_GET_EXT_REPORT on {path}: the host's certificates need {needed} bytes "
                f"(at most {MAX_CERTS_BYTES}, in whole {PAGE_SIZE}-byte pages)"
            )
        certs_len = needed
    raise AssertionError("unreachable: the second attempt returns or raises")


def sev_guest_report(
    report_data: bytes,
    *,
    device: GuestDevice | None = None,
    vmpl: int = 0,
    certificates: bool = True,
) -> IoctlReport | TsmUnavailable:
    """The SEV-SNP report over ``report_data`` (64 bytes) from ``device``, or why not.

    ``device``: /dev/sev-guest when None. ``vmpl``: the VMPL the report states (0:
    the guest kernel's own, where no SVSM runs below it). ``certificates``: use
    SNP_GET_EXT_REPORT and return the host's certificate table in ``auxblob``
    (else SNP_GET_REPORT, no certificates). Blocking: the firmware answers through
    the hypervisor; run it in a thread.

    Checks, in order: REPORT_DATA is 64 bytes; the device opens (a missing device,
    a refused open are named); the ioctl succeeds (errno, fw_error and vmm_error
    decoded; one retry with the size the kernel names where the certificate buffer
    was too small); the response's status is 0 and its report_size 1184.
    """
    device = device or CharDevice(SEV_GUEST_DEVICE)
    report_data = bytes(report_data)
    if len(report_data) != USER_DATA_SIZE:
        return TsmUnavailable(f"REPORT_DATA of {len(report_data)} bytes, not {USER_DATA_SIZE}")
    if not 0 <= vmpl <= 3:
        return TsmUnavailable(f"VMPL {vmpl} is not 0 to 3")
    collect = _ext_report if certificates else _plain_report
    try:
        with contextlib.ExitStack() as stack:
            try:
                ioctl = stack.enter_context(device.open())
            except OSError as exc:
                return TsmUnavailable(open_failure(device.path, exc, absent=_ABSENT))
            try:
                return collect(ioctl, device.path, report_data, vmpl)
            except _FailedError as exc:
                return TsmUnavailable(str(exc))
    except OSError as exc:  # closing the device failed: return nothing collected through it
        return TsmUnavailable(f"closing {device.path} failed: {errno_text(exc)}")
