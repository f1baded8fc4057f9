"""A CPU report through the kernel's configfs-tsm interface (Linux 6.7+): SEV-SNP and TDX.

Documentation/ABI/testing/configfs-tsm: a report request is a directory made
under ``/sys/kernel/config/tsm/report``; the kernel fills it with attributes.
The collector makes a fresh entry, checks ``provider`` is the expected one
(``sev_guest`` for an SEV-SNP report, ``tdx_guest`` for a TDX quote), writes
the 64-byte REPORT_DATA to ``inblob``, reads ``outblob`` (the report or quote;
reading it is what asks the firmware or the quoting enclave) and, for SEV-SNP,
``auxblob`` (the host's certificate table), then removes the entry, always.

``generation`` counts writes to the entry's attributes. Anyone allowed to write
there could replace our inblob between our write and our read of outblob, and
the report would answer their REPORT_DATA. So generation is read on a fresh entry
(expect 0), after our write (expect one more) and after reading the blobs (expect
no change); any other value means another writer raced us: the request is
repeated once on a new entry, then given up as unavailable.

Every failure comes back as a :class:`TsmUnavailable` reason, never an exception.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "REPORT_SIZE",
    "SEV_GUEST",
    "TDX_GUEST",
    "ConfigfsTsm",
    "TsmProvider",
    "TsmReport",
    "TsmUnavailable",
    "tsm_report",
]

PROVIDER = "sev_guest"
REPORT_DATA_SIZE = 64
REPORT_SIZE = 1184  # SEV_REPORT_SIZE: the kernel returns exactly the firmware's report
# Attribute reads are bounded: a report is 1184 bytes, the certificate table at most
# 16 KiB from the kernel (64 KiB leaves room); provider and generation are one word.
MAX_OUTBLOB = 4096
MAX_AUXBLOB = 64 * 1024
MAX_WORD = 64
# A TDX quote is about 5 KB (its PEM PCK chain dominates); the verifier refuses
# quotes over 64 KiB, so more is never worth sending.
MAX_TDX_QUOTE = 64 * 1024
ATTEMPTS = 2  # one retry after a generation race, then unavailable


@dataclass(frozen=True)
class TsmProvider:
    """What one configfs-tsm provider returns, and how the collector names it."""

    name: str  # the entry's ``provider`` attribute
    platform: str  # for reasons: "SEV-SNP", "TDX"
    guest: str  # for reasons: "an SEV-SNP guest"
    noun: str  # what outblob holds: "report", "quote"
    max_outblob: int
    outblob_size: int | None  # the exact size, or None where it varies (a quote)
    auxblob: bool  # whether the provider hands certificates in auxblob


SEV_GUEST = TsmProvider(
    name=PROVIDER,
    platform="SEV-SNP",
    guest="an SEV-SNP guest",
    noun="report",
    max_outblob=MAX_OUTBLOB,
    outblob_size=REPORT_SIZE,
    auxblob=True,
)
# The TDX quote carries its own PCK chain (certification data); there is no auxblob.
TDX_GUEST = TsmProvider(
    name="tdx_guest",
    platform="TDX",
    guest="a TDX guest",
    noun="quote",
    max_outblob=MAX_TDX_QUOTE,
    outblob_size=None,
    auxblob=False,
)


@dataclass(frozen=True)
class TsmReport:
    """What the kernel returned: the report (or TDX quote) and the certificate table
    (b"": none given, and always for TDX)."""

    report: bytes
    auxblob: bytes


@dataclass(frozen=True)
class TsmUnavailable:
    """Why no report could be had."""

    reason: str


class _RaceError(Exception):
    """Another writer changed the entry while we used it."""


class _AttemptError(Exception):
    """A named failure, carried out of the attempt as its reason."""


class ConfigfsTsm:
    """The configfs-tsm report directory ``root``: the few file operations the
    collector makes, in one place (tests stand a plain directory in for it)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def make_entry(self) -> Path:
        """A fresh, uniquely named report entry (configfs fills in its attributes)."""
        entry = self.root / f"weightgate-{os.getpid()}-{secrets.token_hex(8)}"
        os.mkdir(entry, 0o700)
        return entry

    def remove_entry(self, entry: Path) -> None:
        os.rmdir(entry)  # configfs removes an entry with its attributes

    def read(self, path: Path, limit: int) -> bytes:
        """At most ``limit`` + 1 bytes of ``path`` (one more than allowed tells "too long")."""
        with path.open("rb", buffering=0) as handle:
            return handle.read(limit + 1)

    def write(self, path: Path, data: bytes) -> None:
        # One write(2): configfs binary attributes take the whole value in one call.
        with path.open("wb", buffering=0) as handle:
            written = handle.write(data)
        if written != len(data):
            raise OSError(errno.EIO, f"short write ({written} of {len(data)} bytes)")


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _read(fs: ConfigfsTsm, entry: Path, name: str, limit: int) -> bytes:
    try:
        data = fs.read(entry / name, limit)
    except FileNotFoundError:
        raise _AttemptError(f"configfs-tsm entry has no {name} attribute") from None
    except OSError as exc:
        raise _AttemptError(f"reading configfs-tsm {name} failed: {_why(exc)}") from None
    if len(data) > limit:
        raise _AttemptError(f"configfs-tsm {name} is over {limit} bytes")
    return data


def _generation(fs: ConfigfsTsm, entry: Path) -> int:
    text = _read(fs, entry, "generation", MAX_WORD).strip()
    if not text.isdigit():
        raise _AttemptError(f"configfs-tsm generation {text[:16]!r} is not a number")
    return int(text)


def _attempt(fs: ConfigfsTsm, report_data: bytes, kind: TsmProvider) -> TsmReport:
    try:
        entry = fs.make_entry()
    except OSError as exc:
        raise _AttemptError(
            f"cannot create a configfs-tsm report entry in {fs.root}: {_why(exc)}"
        ) from None
    try:
        provider = _read(fs, entry, "provider", MAX_WORD).strip().decode("ascii", "replace")
        if provider != kind.name:
            raise _AttemptError(
                f"configfs-tsm provider is {provider!r}, not {kind.name!r} (not {kind.platform})"
            )
        start = _generation(fs, entry)
        try:
            fs.write(entry / "inblob", report_data)
        except OSError as exc:
            raise _AttemptError(f"writing configfs-tsm inblob failed: {_why(exc)}") from None
        before = _generation(fs, entry)
        report = _read(fs, entry, "outblob", kind.max_outblob)
        auxblob = _auxblob(fs, entry) if kind.auxblob else b""
        after = _generation(fs, entry)
        if before != start + 1 or after != before:
            raise _RaceError(f"generation {start} -> {before} -> {after}")
        if kind.outblob_size is not None and len(report) != kind.outblob_size:
            raise _AttemptError(
                f"configfs-tsm outblob is {len(report)} bytes, "
                f"not a {kind.outblob_size}-byte {kind.noun}"
            )
        if not report:
            raise _AttemptError(f"configfs-tsm outblob is empty: no {kind.noun}")
        return TsmReport(report=report, auxblob=auxblob)
    finally:
        # A failed removal leaves the entry until reboot; the evidence is still good.
        with contextlib.suppress(OSError):
            fs.remove_entry(entry)


def _auxblob(fs: ConfigfsTsm, entry: Path) -> bytes:
    # No auxblob attribute (older kernels) or an empty one (the host gave no
    # certificates) is no failure: the report is sent without certificates.
    try:
        data = fs.read(entry / "auxblob", MAX_AUXBLOB)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENODATA):
            return b""
        raise _AttemptError(f"reading configfs-tsm auxblob failed: {_why(exc)}") from None
    if len(data) > MAX_AUXBLOB:
        raise _AttemptError(f"configfs-tsm auxblob is over {MAX_AUXBLOB} bytes")
    return data


def tsm_report(
    fs: ConfigfsTsm, report_data: bytes, *, provider: TsmProvider = SEV_GUEST
) -> TsmReport | TsmUnavailable:
    """The report over ``report_data`` (64 bytes) and its certificate table, or why not.

    ``provider``: :data:`SEV_GUEST` (an SEV-SNP report and certificate table) or
    :data:`TDX_GUEST` (a TDX quote, which carries its own certificates). Blocking
    (the firmware or quoting enclave answers through the host): run it in a thread.
    """
    if len(report_data) != REPORT_DATA_SIZE:
        return TsmUnavailable(f"REPORT_DATA of {len(report_data)} bytes, not {REPORT_DATA_SIZE}")
    if not fs.root.is_dir():
        return TsmUnavailable(
            f"{fs.root}: no configfs-tsm report directory (not {provider.guest}, "
            "configfs not mounted, or a kernel without CONFIG_TSM_REPORTS)"
        )
    races: list[str] = []
    for _ in range(ATTEMPTS):
        try:
            return _attempt(fs, report_data, provider)
        except _AttemptError as exc:
            return TsmUnavailable(str(exc))
        except _RaceError as exc:
            races.append(str(exc))
    return TsmUnavailable(
        "another writer raced the configfs-tsm report entry twice "
        f"({'; '.join(races)}): the {provider.noun} might answer someone else's REPORT_DATA"
    )
