"""One device collection at a time in a worker thread, waited on for at most N seconds.

Device evidence comes from calls that block in C or in the kernel (NVML, reading
configfs-tsm's outblob while the firmware or the quoting enclave answers), and a
thread cannot be interrupted: a hung driver or a stuck request would hold the
round past the verifier's deadline. So each collection runs in a worker thread,
the round waits at most ``timeout_seconds`` and then answers "unavailable" (the
verifier fails the round, naming it), and while that thread has not returned,
later rounds answer "unavailable" at once instead of stacking more threads on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

__all__ = ["BoundedCollector"]

Message = TypeVar("Message")
P = ParamSpec("P")


class BoundedCollector(Generic[Message]):
    """Runs blocking collections one at a time, each given at most ``timeout_seconds``.

    ``unavailable`` builds the message that says why there is no evidence;
    ``what`` names the collection ("SNP report request"), ``stuck`` what a
    collection that has not returned waits on ("NVML"), and ``timeout_hint`` is
    added to the timeout's reason (" (gpu_timeout_seconds)").
    """

    def __init__(
        self,
        *,
        timeout_seconds: float,
        unavailable: Callable[[str], Message],
        what: str,
        stuck: str,
        timeout_hint: str = "",
    ) -> None:
        self.timeout_seconds = timeout_seconds
        self._unavailable = unavailable
        self._what, self._stuck, self._timeout_hint = what, stuck, timeout_hint
        self._in_flight: asyncio.Future[Message] | None = None

    async def run(
        self, collect: Callable[P, Message], /, *args: P.args, **kwargs: P.kwargs
    ) -> Message:
        """``collect(*args, **kwargs)`` in a worker thread, or why there is no answer."""
        if self._in_flight is not None and not self._in_flight.done():
            return self._unavailable(
                f"the previous {self._what} has not returned ({self._stuck} not answering)"
            )
        work = asyncio.ensure_future(asyncio.to_thread(collect, *args, **kwargs))
        self._in_flight = work
        try:
            # shield: a timeout abandons the wait, not the thread (it cannot be stopped).
            return await asyncio.wait_for(asyncio.shield(work), self.timeout_seconds)
        except TimeoutError:
            return self._unavailable(
                f"{self._what} did not finish within {self.timeout_seconds:g} s{self._timeout_hint}"
            )
