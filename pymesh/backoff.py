"""Exponential back-off with jitter, for every reconnect and retry loop of the control plane
(xDS, SDS and access-log streams, certificate renewals)."""

from __future__ import annotations

import asyncio
import random

__all__ = ["Backoff", "sleep_before_retry"]


class Backoff:
    """Exponential from ``base`` to ``cap`` with "equal jitter": half the delay is fixed, the
    other half random, so a fleet of proxies does not retry in lockstep."""

    def __init__(self, rng: random.Random, base: float = 0.5, cap: float = 30.0) -> None:
        self.rng, self.base, self.cap, self.attempt = rng, base, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        # Bounded: a peer down for hours must not grow 2**attempt past a float's range.
        self.attempt = min(self.attempt + 1, 64)
        return float(delay / 2 + self.rng.uniform(0, delay / 2))

    def reset(self) -> None:
        self.attempt = 0


async def sleep_before_retry(delay: float) -> None:
    """The sleep of a retry loop. grpc.aio turns a cancellation that lands while a call is
    failing into the call's own error, and a loop that catches that error to retry would lose
    the cancellation and run on after ``stop()``, which then waits forever. The request is
    still counted in ``Task.cancelling()``: honour it here."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    await asyncio.sleep(delay)
