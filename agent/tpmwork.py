"""Running blocking TPM work off the event loop, one operation at a time.

Challenges, binding-key certification, transport-key unwrapping and erase receipts
may all want the TPM at once. A TPM without a resource manager (swtpm, /dev/tpm0)
shares transient handles between connections, so they are serialized here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from agent.collectors.tpm import Tpm

T = TypeVar("T")


async def finish_in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``asyncio.to_thread``, except that cancelling the caller waits for the thread
    to finish before the CancelledError propagates: the work it was doing (a TPM
    command, a file being written) is over by the time anyone acts on the cancel."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        raise


class TpmWorker:
    def __init__(self, tpm: Tpm) -> None:
        self.tpm = tpm
        self._lock = asyncio.Lock()

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        async with self._lock:
            return await finish_in_thread(fn, *args, **kwargs)
