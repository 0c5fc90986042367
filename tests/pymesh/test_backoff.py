"""The retry loops' sleep: a stop() must end the loop even when the call it cancelled
swallowed the cancellation (grpc.aio reports a call that fails at that moment as failed)."""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from pymesh.backoff import Backoff, sleep_before_retry


async def _retry_loop(attempts: list[int]) -> None:
    while True:
        attempts.append(1)
        # The call in flight; grpc.aio swallows the cancellation when the call fails then.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        await sleep_before_retry(0.01)


async def test_a_swallowed_cancellation_still_stops_the_loop() -> None:
    attempts: list[int] = []
    task = asyncio.create_task(_retry_loop(attempts))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert attempts == [1]


async def test_without_cancellation_it_sleeps_and_returns() -> None:
    await asyncio.wait_for(sleep_before_retry(0.01), 5)


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(random.Random(7), base=1.0, cap=8.0)
    delays = [backoff.next() for _ in range(6)]
    for n, delay in enumerate(delays):
        ceiling = min(8.0, 2.0**n)
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert 0.5 <= backoff.next() <= 1.0


def test_a_peer_down_for_hours_keeps_the_delay_at_the_cap() -> None:
    backoff = Backoff(random.Random(3), base=0.5, cap=30.0)
    delays = [backoff.next() for _ in range(5000)]  # 2**5000 is past a float's range
    assert 15.0 <= delays[-1] <= 30.0
