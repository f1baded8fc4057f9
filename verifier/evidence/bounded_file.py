"""Reading a small input file with a size bound, errors in the caller's own type.

Offline commands, config tables and trust directories all read files an operator
names: a wrong one (a disk image, a device) must cost at most ``limit`` bytes and
fail in one line that names it. The caller says how that line becomes its own
exception (``fail``), so every caller keeps its error type and wording.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cryptography import x509

__all__ = ["MAX_ROOT_FILE_BYTES", "read_bounded", "read_pem_certificates"]

# A vendor root file holds one or two certificates (an ARK and its ASK, say): bound
# what reading a wrong file costs.
MAX_ROOT_FILE_BYTES = 64 * 1024


def read_bounded(
    path: Path, limit: int, fail: Callable[[str], Exception], *, what: str = ""
) -> bytes:
    """At most ``limit`` bytes of ``path``; ``fail(message)`` is raised otherwise.

    Messages: ``cannot read [WHAT ]PATH: REASON``, ``[WHAT ]PATH: larger than LIMIT bytes``.
    """
    name = f"{what} {path}" if what else str(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(limit + 1)
    except OSError as exc:
        raise fail(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise fail(f"{name}: larger than {limit} bytes")
    return data


def read_pem_certificates(
    path: Path, limit: int, fail: Callable[[str], Exception]
) -> list[x509.Certificate]:
    """The PEM certificates of ``path`` (``PATH: not PEM certificates`` otherwise)."""
    data = read_bounded(path, limit, fail)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise fail(f"{path}: not PEM certificates") from None
