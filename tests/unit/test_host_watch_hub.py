"""The host-watch hub on its own: fan-out, filters, bounded queues, order, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from verifier.server.host_watch import (
    HostWatchHub,
    TooManyWatchers,
    WatchClosed,
    WatchFellBehind,
)
from verifier.store import HostRecord, HostStatus, HostTransition

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def host(host_id: str, status: HostStatus, *, site: str | None = None) -> HostRecord:
    return HostRecord(
        host_id=host_id,
        group="g",
        status=status,
        ek_public=None,
        ek_certificate=None,
        ak_public=None,
        ak_name=None,
        registered_at=T0,
        enrolled_at=None,
        last_attestation_at=None,
        last_clock=None,
        last_reasons=(),
        site=site,
    )


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


def test_each_watcher_gets_the_changes_of_the_hosts_it_asked_for() -> None:
    async def test() -> None:
        hub = HostWatchHub()
        with hub.subscribe() as everything, hub.subscribe(["a"]) as only_a:
            hub.publish(host("a", HostStatus.TRUSTED), previous=HostStatus.ENROLLED,
                        cause="attestation", at=T0)  # fmt: skip
            hub.publish(host("b", HostStatus.UNTRUSTED), previous=HostStatus.TRUSTED,
                        cause="attestation", at=T0)  # fmt: skip
            seen = [await anext(everything), await anext(everything)]
            assert [(c.host.host_id, c.previous_status, c.host.status) for c in seen] == [
                ("a", HostStatus.ENROLLED, HostStatus.TRUSTED),
                ("b", HostStatus.TRUSTED, HostStatus.UNTRUSTED),
            ]
            assert (await anext(only_a)).host.host_id == "a"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(only_a), 0.05)
        assert hub.watcher_count == 0

    run(test)


def test_a_watcher_that_falls_behind_is_ended_not_skipped_and_others_go_on() -> None:
    async def test() -> None:
        hub = HostWatchHub(queue_limit=3)
        slow = hub.subscribe()
        with hub.subscribe() as keeping_up:
            received: list[str] = []
            for index in range(5):
                # Publishing never waits for the slow watcher.
                hub.publish(host(f"h{index}", HostStatus.TRUSTED), previous=None,
                            cause="registered", at=T0)  # fmt: skip
                received.append((await anext(keeping_up)).host.host_id)
            assert received == ["h0", "h1", "h2", "h3", "h4"]
            # The fourth change overflowed the slow watcher's queue of three: it is
            # ended at once, without the three it still held (a gap it would not see).
            with pytest.raises(WatchFellBehind, match="fell behind by more than 3"):
                await anext(slow)
            assert hub.watcher_count == 1  # only the one keeping up
        slow.close()

    run(test)


def test_a_full_queue_holds_at_most_the_limit() -> None:
    async def test() -> None:
        hub = HostWatchHub(queue_limit=3)
        with hub.subscribe() as watcher:
            for _ in range(3):
                hub.publish(host("a", HostStatus.TRUSTED), previous=None, cause="x", at=T0)
            for _ in range(3):
                await anext(watcher)  # exactly at the limit: nothing lost, still subscribed
            assert hub.watcher_count == 1
            for _ in range(1000):
                hub.publish(host("a", HostStatus.TRUSTED), previous=None, cause="x", at=T0)
            assert watcher._queue.qsize() == 1  # just the end marker: memory stays bounded
            with pytest.raises(WatchFellBehind):
                await anext(watcher)

    run(test)


def test_only_a_change_of_status_or_site_is_published() -> None:
    async def test() -> None:
        hub = HostWatchHub()
        with hub.subscribe() as watcher:
            trusted = host("a", HostStatus.TRUSTED, site="dc-1")
            hub.publish_transition(HostTransition(trusted, HostStatus.TRUSTED, "dc-1", T0),
                                   cause="attestation")  # fmt: skip
            hub.publish_transition(HostTransition(trusted, HostStatus.TRUSTED, None, T0),
                                   cause="site_assigned")  # fmt: skip
            hub.publish_transition(HostTransition(trusted, HostStatus.ENROLLED, "dc-1", T0),
                                   cause="attestation")  # fmt: skip
            first, second = await anext(watcher), await anext(watcher)
            assert (first.cause, first.previous_status) == ("site_assigned", HostStatus.TRUSTED)
            assert (second.cause, second.previous_status) == ("attestation", HostStatus.ENROLLED)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(watcher), 0.05)

    run(test)


def test_closing_ends_every_watch_and_refuses_new_ones() -> None:
    async def test() -> None:
        hub = HostWatchHub()
        watcher = hub.subscribe()
        waiting = asyncio.ensure_future(anext(watcher))
        await asyncio.sleep(0)
        hub.close()
        with pytest.raises(WatchClosed):
            await waiting
        with pytest.raises(WatchClosed):
            hub.subscribe()
        assert hub.watcher_count == 0

    run(test)


def test_the_number_of_watchers_is_bounded() -> None:
    async def test() -> None:
        hub = HostWatchHub(max_watchers=2)
        first, _second = hub.subscribe(), hub.subscribe()
        with pytest.raises(TooManyWatchers):
            hub.subscribe()
        first.close()
        hub.subscribe()  # a slot came free

    run(test)


def test_publish_refuses_to_run_in_a_worker_thread() -> None:
    async def test() -> None:
        hub = HostWatchHub()
        with hub.subscribe(), pytest.raises(RuntimeError):
            await asyncio.to_thread(
                hub.publish, host("a", HostStatus.TRUSTED), previous=None, cause="x", at=T0
            )

    run(test)


def test_apply_publishes_one_hosts_writes_in_the_order_they_ran() -> None:
    async def test() -> None:
        hub = HostWatchHub()
        order: list[str] = []
        first_started = threading.Event()

        def write(status: HostStatus, delay: float) -> HostTransition:
            order.append(status.value)
            first_started.set()
            time.sleep(delay)
            return HostTransition(host("a", status), HostStatus.ENROLLED, None, T0)

        with hub.subscribe() as watcher:
            slow = asyncio.ensure_future(
                hub.apply("a", lambda: write(HostStatus.UNTRUSTED, 0.3), cause="attestation")
            )
            await asyncio.to_thread(first_started.wait)
            # Without the per-host order, this quick write would be published first.
            quick = asyncio.ensure_future(
                hub.apply("a", lambda: write(HostStatus.QUARANTINED, 0), cause="quarantine")
            )
            await asyncio.gather(slow, quick)
            published = [(await anext(watcher)).cause, (await anext(watcher)).cause]
        assert order == ["untrusted", "quarantined"]
        assert published == ["attestation", "quarantine"]
        assert hub._order_locks == {}  # nothing kept once the writes are done

    run(test)


def test_apply_publishes_a_committed_write_even_if_its_caller_is_cancelled() -> None:
    async def test() -> None:
        hub = HostWatchHub()

        def write() -> HostTransition:
            time.sleep(0.2)
            return HostTransition(host("a", HostStatus.QUARANTINED), HostStatus.TRUSTED, None, T0)

        with hub.subscribe() as watcher:
            caller = asyncio.ensure_future(hub.apply("a", write, cause="quarantine"))
            await asyncio.sleep(0.05)
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            change = await asyncio.wait_for(anext(watcher), 5)
        assert (change.cause, change.host.status) == ("quarantine", HostStatus.QUARANTINED)

    run(test)
