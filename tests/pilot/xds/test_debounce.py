"""The debounced push queue: quiet period, maximum delay, one firing at a time.

The timing rules are checked on a clock the test moves (``due`` / ``take_due`` are pure);
the task that sleeps until ``due`` is checked on the real loop by waiting on events, with
lower bounds on time only."""

from __future__ import annotations

import asyncio

import pytest

from pilot.xds.debounce import Batch, DebounceConfig, Debouncer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _never(batch: Batch) -> None:
    raise AssertionError("the task is not started in fake-clock tests")


def test_fires_once_after_the_quiet_period() -> None:
    clock = Clock()
    d = Debouncer(_never, DebounceConfig(quiet=0.3, max_delay=5.0), clock=clock)
    assert d.due() is None and d.take_due(clock.now) is None
    for reason in ("config", "proxy", "config"):
        d.trigger(reason)
        clock.now += 0.1
    # The last event came at 100.2: due at 100.5, not before.
    assert d.due() == pytest.approx(100.5)
    assert d.take_due(100.49) is None and d.pending
    batch = d.take_due(100.5)
    assert batch is not None and batch.events == 3 and batch.reasons == {"config", "proxy"}
    assert (batch.first, batch.last) == (100.0, pytest.approx(100.2))
    assert not d.pending and d.take_due(200.0) is None


def test_a_steady_trickle_still_fires_at_the_max_delay() -> None:
    clock = Clock()
    d = Debouncer(_never, DebounceConfig(quiet=0.2, max_delay=0.3), clock=clock)
    fired: list[tuple[float, Batch]] = []
    for _ in range(100):  # an event every 10 ms for a second: never quiet for 200 ms
        d.trigger("config")
        batch = d.take_due(clock.now)
        if batch is not None:
            fired.append((clock.now, batch))
        clock.now += 0.01
    assert len(fired) >= 3
    first_at, first = fired[0]
    # Fired at the first tick past first + max_delay, holding the events up to then.
    assert first_at == pytest.approx(first.first + 0.3) and first.events == 31


def test_events_given_a_time_use_it() -> None:
    clock = Clock()
    d = Debouncer(_never, DebounceConfig(quiet=1.0, max_delay=10.0), clock=clock)
    d.trigger("proxy", at=50.0)
    d.trigger("proxy", at=40.0)  # late news does not move the batch back
    assert d.due() == 51.0


async def test_the_task_fires_after_the_quiet_period() -> None:
    loop = asyncio.get_running_loop()
    fired: list[tuple[float, Batch]] = []
    done = asyncio.Event()

    async def fire(batch: Batch) -> None:
        fired.append((loop.time(), batch))
        done.set()

    d = Debouncer(fire, DebounceConfig(quiet=0.05, max_delay=5.0), clock=loop.time)
    d.start()
    try:
        d.trigger("config")
        d.trigger("proxy")
        last = loop.time()
        await asyncio.wait_for(done.wait(), 30)
        [(at, batch)] = fired
        assert batch.events == 2 and at - last >= 0.05 - 0.005  # timer granularity
    finally:
        await d.close()


async def test_a_failing_push_does_not_stop_later_ones() -> None:
    loop = asyncio.get_running_loop()
    calls: list[int] = []
    called = asyncio.Queue[int]()

    async def fire(batch: Batch) -> None:
        calls.append(batch.events)
        called.put_nowait(len(calls))
        if len(calls) == 1:
            raise RuntimeError("boom")

    d = Debouncer(fire, DebounceConfig(quiet=0.01, max_delay=0.05), clock=loop.time)
    d.start()
    try:
        d.trigger("a")
        assert await asyncio.wait_for(called.get(), 30) == 1
        d.trigger("b")
        assert await asyncio.wait_for(called.get(), 30) == 2
        assert calls == [1, 1]
    finally:
        await d.close()
