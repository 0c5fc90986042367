"""The debounced push queue: quiet period, maximum delay, one firing at a time."""

from __future__ import annotations

import asyncio

from pilot.xds.debounce import Batch, DebounceConfig, Debouncer


async def _collect(config: DebounceConfig) -> tuple[Debouncer, list[tuple[float, Batch]]]:
    loop = asyncio.get_running_loop()
    fired: list[tuple[float, Batch]] = []

    async def fire(batch: Batch) -> None:
        fired.append((loop.time(), batch))

    d = Debouncer(fire, config, clock=loop.time)
    d.start()
    return d, fired


async def test_fires_once_after_the_quiet_period() -> None:
    # A quiet period far above the gaps between events: no firing in between, even on a
    # loaded machine.
    d, fired = await _collect(DebounceConfig(quiet=0.3, max_delay=5.0))
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for reason in ("config", "proxy", "config"):
            d.trigger(reason)
            await asyncio.sleep(0.005)
        last = loop.time()
        for _ in range(300):
            if fired:
                break
            await asyncio.sleep(0.01)
        [(at, batch)] = fired
        assert batch.events == 3 and batch.reasons == {"config", "proxy"}
        assert batch.first >= start and at - last >= 0.25
        assert not d.pending
    finally:
        await d.close()


async def test_a_steady_trickle_still_fires_at_the_max_delay() -> None:
    d, fired = await _collect(DebounceConfig(quiet=0.2, max_delay=0.3))
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < 1.0:
            d.trigger("config")
            await asyncio.sleep(0.01)
        assert len(fired) >= 2, "a quiet period never came, so only max_delay can fire"
        first_at, first = fired[0]
        assert 0.3 <= first_at - first.first < 0.3 + 0.2
        assert first.events > 5
    finally:
        await d.close()


async def test_a_failing_push_does_not_stop_later_ones() -> None:
    loop = asyncio.get_running_loop()
    calls: list[int] = []

    async def fire(batch: Batch) -> None:
        calls.append(batch.events)
        if len(calls) == 1:
            raise RuntimeError("boom")

    d = Debouncer(fire, DebounceConfig(quiet=0.01, max_delay=0.05), clock=loop.time)
    d.start()
    try:
        d.trigger("a")
        await asyncio.sleep(0.05)
        d.trigger("b")
        await asyncio.sleep(0.05)
        assert calls == [1, 1]
    finally:
        await d.close()
