"""ESAPI plumbing shared by the TPM collectors: the error, handles, exact inputs.

:class:`TpmError` is the one exception the collectors raise. The helpers check that
a handle is in the persistent range and exists, flush transient handles on the
way out (best effort), and unmarshal a verifier-supplied TPM2B structure exactly.
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from tpm2_pytss import TPM2_CAP, TSS2_Exception

__all__ = [
    "NV_RANGE",
    "TpmError",
    "check_persistent_handle",
    "flush_handle",
    "handle_exists",
    "persistent_handle_exists",
    "unmarshal_exact",
]

NV_RANGE = 0x01000000
_PERSISTENT_RANGE = 0x81000000


class TpmError(Exception):
    """A TPM operation failed; the message says which and why."""


def handle_exists(ectx: Any, handle: int, capability_range: int) -> bool:
    _, data = ectx.get_capability(TPM2_CAP.HANDLES, handle, 1)
    handles = list(data.data.handles)
    return (
        bool(handles)
        and int(handles[0]) == handle
        and handle & 0xFF000000 == capability_range & 0xFF000000
    )


def persistent_handle_exists(ectx: Any, handle: int) -> bool:
    return handle_exists(ectx, handle, _PERSISTENT_RANGE)


def check_persistent_handle(handle: int) -> None:
    if handle & 0xFF000000 != _PERSISTENT_RANGE:
        raise TpmError(f"0x{handle:08x} is not a persistent handle (0x81xxxxxx)")


def flush_handle(ectx: Any, handle: Any) -> None:
    # Best effort: the connection is closed right after, and a failed flush must
    # not hide the error that got us here.
    with suppress(TSS2_Exception):
        ectx.flush_context(handle)


def unmarshal_exact(cls: Any, data: bytes, what: str) -> Any:
    try:
        value, used = cls.unmarshal(data)
    except TSS2_Exception as e:
        raise TpmError(f"malformed {what}: {e}") from e
    if used != len(data):
        raise TpmError(f"malformed {what}: {len(data) - used} trailing bytes")
    return value
