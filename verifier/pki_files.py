"""How the evaluation PKI writes its files: all or nothing, and keys never over anything.

Two kinds of write. :func:`write_new` is for keys, certificates and the
issued/revoked records: it refuses to replace a file, so a second ``pki issue``
of a name or a second record of a serial cannot silently rotate a key or
rewrite history. :func:`replace_file` is only for the CRL, a signed public
document that is meant to be re-issued: a reader (the verifier reloading it)
sees the old CRL or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from weightgate.checkpoint.durable import fsync_directory


class PkiError(Exception):
    """The PKI directory or a request to it is unusable."""


def _write_temporary(directory: Path, name: str, data: bytes, mode: int) -> Path:
    """A synced temporary file in ``directory`` holding ``data`` with ``mode``."""
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file at ``path`` with ``mode``: all or nothing, never over a file."""
    if path.exists():
        raise PkiError(f"{path} exists; refusing to overwrite it")
    tmp = _write_temporary(path.parent, path.name, data, mode)
    try:
        try:
            os.link(tmp, path)  # fails if path appeared meanwhile: no overwrite
        except FileExistsError:
            raise PkiError(f"{path} exists; refusing to overwrite it") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically put ``data`` at ``path`` (replacing what is there) with ``mode``."""
    tmp = _write_temporary(path.parent, path.name, data, mode)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)


def private_directory(path: Path) -> Path:
    """``path``, created if missing as a directory only its owner can enter (0700)."""
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)  # mkdir's mode is filtered by the umask; make it exact
    return path
