"""Read a kernel-exported file (securityfs) whole, bounded, saying why not when it fails.

securityfs files report size 0, so the size cannot be checked before reading;
the read stops one byte past the limit instead.
"""

from __future__ import annotations

from pathlib import Path


def read_kernel_file(path: Path, limit: int, *, what: str) -> bytes | str:
    """The file's bytes, or a one-line reason (missing, unreadable, too large, empty)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        return f"no {what} at {path}"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if len(data) > limit:
        return f"{path} is larger than {limit} bytes"
    if not data:
        return f"{path} is empty"
    return data
