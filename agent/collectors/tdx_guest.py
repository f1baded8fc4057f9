"""What /dev/tdx_guest can give where configfs-tsm is absent: a TDREPORT, not a quote.

include/uapi/linux/tdx-guest.h (Linux 6.2+)::

    struct tdx_report_req { u8 reportdata[64]; u8 tdreport[1024]; };   1088 = 0x440 bytes
    TDX_CMD_GET_REPORT0 = _IOWR('T', 1, struct tdx_report_req) = 0xC4405401

(3 << 30 | 0x440 << 16 | ord('T') = 0x54 << 8 | 1: see :mod:`agent.collectors.cvm_ioctl`.)

The TDREPORT that ioctl returns is MAC-ed with a key only this platform's TDX
module and quoting enclave hold: no remote verifier can check it. Turning it into
a quote takes the host's quote generation service (QGS, reached over vsock or the
VMM's GetQuote hypercall), which this agent does not speak. So the fallback does
not pretend: it opens the device only to say precisely what is there and what is
missing, and always answers unavailable.
"""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

from agent.collectors.cvm_ioctl import CharDevice, GuestDevice, errno_text, iowr, open_failure
from agent.collectors.snp_tsm import TsmUnavailable

__all__ = ["TDX_CMD_GET_REPORT0", "TDX_GUEST_DEVICE", "TdxReportRequest", "tdx_guest_fallback"]

TDX_GUEST_DEVICE = Path("/dev/tdx_guest")
_NO_QUOTE = (
    "gives a TDREPORT only (TDX_CMD_GET_REPORT0, MAC-ed for this platform, not a quote): "
    "a quote needs the host's quote generation service (QGS over vsock), not supported by "
    "this agent; use a kernel with configfs-tsm (Linux 6.7+, CONFIG_TSM_REPORTS)"
)


class TdxReportRequest(ctypes.Structure):
    """struct tdx_report_req (1088 bytes); its size makes TDX_CMD_GET_REPORT0."""

    _fields_ = [("reportdata", ctypes.c_uint8 * 64), ("tdreport", ctypes.c_uint8 * 1024)]


TDX_CMD_GET_REPORT0 = iowr("T", 1, ctypes.sizeof(TdxReportRequest))


def tdx_guest_fallback(report_data: bytes, *, device: GuestDevice | None = None) -> TsmUnavailable:
    """Why /dev/tdx_guest (``device``; the real one when None) gives no quote.

    ``report_data`` is not used: no request is made. The device is opened and
    closed to name what stands in the way (absent, refused, or present but giving
    a TDREPORT only).
    """
    del report_data  # nothing to bind: no quote can be asked for
    device = device or CharDevice(TDX_GUEST_DEVICE)
    try:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(device.open())
            except OSError as exc:
                reason = open_failure(
                    device.path, exc,
                    absent="not a TDX guest, or the tdx-guest driver is not loaded",
                )  # fmt: skip
                return TsmUnavailable(f"{reason}; in any case, {device.path} {_NO_QUOTE}")
    except OSError as exc:
        return TsmUnavailable(
            f"closing {device.path} failed: {errno_text(exc)}; in any case, it {_NO_QUOTE}"
        )
    return TsmUnavailable(f"{device.path} is present, but it {_NO_QUOTE}")
