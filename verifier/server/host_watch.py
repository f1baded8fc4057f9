"""Live host changes for WatchHosts: a hub that fans each change out to the watchers.

The hub is per verifier process, in memory: a watcher sees the changes made
through the process it is connected to. Verifiers that share one database each
have their own hub, so a watcher there must watch each of them (or poll
ListHosts); nothing is kept for a watcher that reconnects, which asks for the
current state again (``include_current``).

Publishers never wait for watchers. Each watcher has a bounded queue; one that
falls more than ``queue_limit`` changes behind is dropped, and its stream ends
with RESOURCE_EXHAUSTED, instead of being skipped silently or growing without
bound. Everything here runs on the verifier's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Self, TypeVar

from verifier.store import HostRecord, HostStatus, HostTransition

# How far one watcher may lag. A host's status moves at most once per
# attestation round, so even a fleet-wide incident of a few hundred hosts fits;
# a reader this far behind is stuck, and a snapshot on reconnect is cheaper.
QUEUE_LIMIT = 256
# Open watch streams per verifier: each holds a queue and a gRPC stream.
MAX_WATCHERS = 64

T = TypeVar("T", bound=HostTransition)


@dataclass(frozen=True, slots=True)
class HostChange:
    """A host's state after a change, its status before, when, and what changed it."""

    host: HostRecord
    previous_status: HostStatus | None  # None: a snapshot, or the host is new
    cause: str  # "snapshot", "registered", "enrolled", "attestation", "quarantine", ...
    at: datetime


class WatchEnded(Exception):  # noqa: N818 - named for what happened
    """A watch stream cannot go on; the client should reconnect."""


class WatchFellBehind(WatchEnded):
    def __init__(self, limit: int) -> None:
        super().__init__(f"watch fell behind by more than {limit} changes; reconnect")


class WatchClosed(WatchEnded):
    def __init__(self) -> None:
        super().__init__("the verifier is stopping; reconnect")


class TooManyWatchers(Exception):  # noqa: N818
    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} watch streams are open already; try again later")


class _HostOrder:
    """The lock that orders one host's writes, and how many tasks hold or await it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class _End(enum.Enum):
    FELL_BEHIND = "fell behind"
    CLOSED = "closed"


class Subscription:
    """One watcher: iterate it for changes; leave its ``with`` block to unsubscribe."""

    def __init__(self, hub: HostWatchHub, host_ids: frozenset[str] | None, limit: int) -> None:
        self._hub = hub
        self._host_ids = host_ids
        self._limit = limit
        # offer() keeps it within the limit and end() empties it before the end marker;
        # the queue's own bound is a second guard.
        self._queue: asyncio.Queue[HostChange | _End] = asyncio.Queue(limit)
        self._ended = False

    def wants(self, host_id: str) -> bool:
        return self._host_ids is None or host_id in self._host_ids

    def offer(self, change: HostChange) -> None:
        """Queue the change, or end the watch if the watcher is too far behind."""
        if self._ended:
            return
        if self._queue.qsize() >= self._limit:
            self.end(_End.FELL_BEHIND)
            return
        self._queue.put_nowait(change)

    def end(self, why: _End) -> None:
        """End the watch: what is queued is dropped, the watcher gets ``why`` next."""
        if self._ended:
            return
        self._ended = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(why)
        self._hub._unsubscribe(self)

    def close(self) -> None:
        """Stop receiving changes (the watcher went away)."""
        self._ended = True
        self._hub._unsubscribe(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> HostChange:
        item = await self._queue.get()
        if item is _End.FELL_BEHIND:
            raise WatchFellBehind(self._limit)
        if isinstance(item, _End):
            raise WatchClosed
        return item


class HostWatchHub:
    """Fans host changes out to WatchHosts streams (per process, see the module doc)."""

    def __init__(self, *, queue_limit: int = QUEUE_LIMIT, max_watchers: int = MAX_WATCHERS) -> None:
        if queue_limit < 1 or max_watchers < 1:
            raise ValueError("queue_limit and max_watchers must be at least 1")
        self._queue_limit = queue_limit
        self._max_watchers = max_watchers
        self._subscriptions: set[Subscription] = set()
        self._order_locks: dict[str, _HostOrder] = {}
        self._closed = False

    @property
    def watcher_count(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, host_ids: Iterable[str] | None = None) -> Subscription:
        """Start receiving the changes of ``host_ids`` (None: every host) from now on.

        Raises TooManyWatchers, or WatchClosed once the hub is closed.
        """
        if self._closed:
            raise WatchClosed
        if len(self._subscriptions) >= self._max_watchers:
            raise TooManyWatchers(self._max_watchers)
        wanted = None if host_ids is None else frozenset(host_ids)
        subscription = Subscription(self, wanted, self._queue_limit)
        self._subscriptions.add(subscription)
        return subscription

    def publish(
        self, host: HostRecord, *, previous: HostStatus | None, cause: str, at: datetime
    ) -> None:
        """Hand a change to every watcher of the host; never waits.

        Call it on the event loop (watcher queues are not thread-safe), and only
        for a real change of status or site: :meth:`apply` and
        :meth:`publish_transition` check that for you.
        """
        asyncio.get_running_loop()  # raises in a worker thread: publish on the loop
        change = HostChange(host, previous, cause, at)
        # A copy: a watcher that falls behind unsubscribes while we iterate.
        for subscription in list(self._subscriptions):
            if subscription.wants(host.host_id):
                subscription.offer(change)

    def publish_transition(self, transition: HostTransition, *, cause: str) -> None:
        """Publish the transition if the host's status or site moved."""
        if transition.changed:
            self.publish(
                transition.host,
                previous=transition.previous_status,
                cause=cause,
                at=transition.at,
            )

    async def apply(self, host_id: str, write: Callable[[], T], *, cause: str) -> T:
        """Run a store write of the host in a worker thread, then publish what it changed.

        Writes of one host are applied and published one at a time, so watchers
        see them in the order they were committed (two concurrent writes, say an
        attestation and a quarantine, could otherwise be published the other way
        round and leave watchers with a stale status). Once started, the write
        and its publication finish even if the caller is cancelled: a committed
        change must reach the watchers.
        """

        async def write_and_publish() -> T:
            async with self.ordered(host_id):
                transition = await asyncio.to_thread(write)
                self.publish_transition(transition, cause=cause)
                return transition

        return await asyncio.shield(asyncio.ensure_future(write_and_publish()))

    @contextlib.asynccontextmanager
    async def ordered(self, host_id: str) -> AsyncIterator[None]:
        """Hold across a write of the host and its publication (what :meth:`apply` does),
        for a write whose result is not a HostTransition."""
        order = self._order_locks.setdefault(host_id, _HostOrder())
        order.users += 1
        try:
            async with order.lock:
                yield
        finally:
            # Keep the dict as small as the set of hosts being written right now.
            order.users -= 1
            if order.users == 0:
                del self._order_locks[host_id]

    def close(self) -> None:
        """End every watch (the verifier is stopping) and refuse new ones."""
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.end(_End.CLOSED)

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
