"""Waiting for a condition that has no event to await: poll it, with a generous deadline.

A loaded 2-core machine can be many times slower than a quiet one, so the deadline only
guards against a hang; the poll returns as soon as the condition holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

__all__ = ["wait_until"]


async def wait_until(
    check: Callable[[], Any], what: str, timeout: float = 15.0, interval: float = 0.01
) -> Any:
    """Until ``check()`` (awaited when it returns a coroutine) is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)
