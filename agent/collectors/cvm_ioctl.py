"""What the /dev/sev-guest and /dev/tdx_guest fallbacks share: the device file and its ioctls.

Where configfs-tsm is absent (kernels before 6.7, or without CONFIG_TSM_REPORTS),
the guest drivers still answer ioctls on their character devices. The device is
reached through :class:`GuestDevice` (open, then ioctl calls on the open file), so
tests stand a fake kernel in for it and still drive the real request marshalling
and response parsing.

Ioctl numbers are computed as the kernel's ``_IOWR`` does (include/uapi/asm-generic/ioctl.h,
which x86, the only architecture with SEV-SNP and TDX guests, uses unchanged)::

    _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr
    _IOWR(type, nr, T)        = _IOC(_IOC_READ | _IOC_WRITE = 3, type, nr, sizeof(T))

with 8 bits for ``nr`` and ``type`` and 14 for ``size``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.collectors.snp_tsm import TsmReport

__all__ = [
    "CharDevice",
    "GuestDevice",
    "Ioctl",
    "IoctlReport",
    "errno_text",
    "iowr",
    "open_failure",
]

_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS = 8, 8, 14
_IOC_TYPESHIFT = _IOC_NRBITS  # 8
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS  # 16
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS  # 30
_IOC_WRITE, _IOC_READ = 1, 2

# ioctl(request, argument): the argument is read and written in place (the kernel
# copies the structure in and, where it has something to say, back out); raises
# OSError as ioctl(2) fails.
Ioctl = Callable[[int, ctypes.Structure], None]


def iowr(kind: str, number: int, size: int) -> int:
    """``_IOWR(kind, number, T)`` for a structure ``T`` of ``size`` bytes."""
    if len(kind) != 1 or not 0 <= ord(kind) < 1 << _IOC_TYPEBITS:
        raise ValueError(f"ioctl type {kind!r} is not one byte")
    if not 0 <= number < 1 << _IOC_NRBITS or not 0 <= size < 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl number {number} or size {size} out of range")
    return (
        (_IOC_READ | _IOC_WRITE) << _IOC_DIRSHIFT
        | size << _IOC_SIZESHIFT
        | ord(kind) << _IOC_TYPESHIFT
        | number
    )


class GuestDevice(Protocol):
    """A guest driver's character device: where it is, and how it is opened."""

    @property
    def path(self) -> Path: ...

    def open(self) -> AbstractContextManager[Ioctl]:
        """The open device's ioctl, closed on exit; OSError where it cannot be opened."""
        ...


@dataclass(frozen=True)
class CharDevice:
    """The real device file: ``os.open(O_RDWR)`` and ``fcntl.ioctl`` on it."""

    path: Path

    @contextlib.contextmanager
    def open(self) -> Iterator[Ioctl]:
        # Read-write, as go-sev-guest and the kernel's selftests open these devices.
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        try:

            def ioctl(request: int, argument: ctypes.Structure) -> None:
                # mutate_flag: the structure is passed by address and updated in place
                # (CPython copies it back even when ioctl(2) fails, so the error words
                # the kernel wrote are still read).
                fcntl.ioctl(fd, request, argument, True)  # noqa: FBT003 (typeshed: positional)

            yield ioctl
        finally:
            os.close(fd)


@dataclass(frozen=True)
class IoctlReport(TsmReport):
    """A report collected through a device's ioctl, not configfs-tsm.

    ``certificates``: where ``auxblob`` came from, for reasons about it.
    """

    certificates: str = ""


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def open_failure(path: Path, exc: OSError, *, absent: str) -> str:
    """Why ``path`` could not be opened; ``absent`` says what a missing device means."""
    if exc.errno == errno.ENOENT:
        return f"no {path} ({absent})"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"{path}: permission denied ({_errno_name(exc)}): the agent needs read-write "
            "access to it (run as root or grant it with a udev rule)"
        )
    if exc.errno in (errno.ENXIO, errno.ENODEV):
        return f"{path}: no driver answers it ({_errno_name(exc)}: {absent})"
    return f"cannot open {path}: {exc.strerror or exc} ({_errno_name(exc)})"


def errno_text(exc: OSError) -> str:
    """``exc`` as "strerror (ENAME)"."""
    return f"{exc.strerror or exc} ({_errno_name(exc)})"
