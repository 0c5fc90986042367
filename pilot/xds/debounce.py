"""The debounced push queue: many config or proxy events, one push.

A burst of changes (an ``apply -f`` of twenty files, a thousand proxies connecting) must not
cost a push per event. Like Istio's ``debounce`` the queue fires ``quiet`` seconds after the
last event, but never later than ``max_delay`` after the first one, so a steady trickle of
events cannot starve the proxies of updates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

__all__ = ["Batch", "DebounceConfig", "Debouncer"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DebounceConfig:
    quiet: float = 0.1
    max_delay: float = 1.0


@dataclass(frozen=True, slots=True)
class Batch:
    """The events one firing covers: how many, why, and when the first one happened."""

    events: int
    reasons: frozenset[str]
    first: float
    last: float


class Debouncer:
    """Call ``fire(batch)`` after the events given to :meth:`trigger` settle.

    One firing runs at a time; events that arrive while it runs open the next batch.
    """

    def __init__(
        self,
        fire: Callable[[Batch], Awaitable[None]],
        config: DebounceConfig | None = None,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._fire = fire
        self._config = config or DebounceConfig()
        self._clock = clock
        self._events = 0
        self._reasons: set[str] = set()
        self._first = 0.0
        self._last = 0.0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.fired = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="debounce")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def pending(self) -> bool:
        return self._events > 0

    def trigger(self, reason: str, at: float | None = None) -> None:
        now = self._clock() if at is None else at
        if self._events == 0:
            self._first = now
        self._events += 1
        self._last = max(self._last, now)
        self._reasons.add(reason)
        self._wakeup.set()

    def due(self) -> float | None:
        """When the pending events should fire: ``quiet`` after the last one, but no later
        than ``max_delay`` after the first; None when nothing is pending. Pure: the loop
        below only sleeps until this time, so tests drive it with a clock of their own."""
        if not self._events:
            return None
        config = self._config
        return min(self._last + config.quiet, self._first + config.max_delay)

    def take_due(self, now: float) -> Batch | None:
        """The batch to fire at ``now``, if one is due (it is then no longer pending)."""
        due = self.due()
        if due is None or now < due:
            return None
        return self._take()

    def _take(self) -> Batch:
        batch = Batch(self._events, frozenset(self._reasons), self._first, self._last)
        self._events = 0
        self._reasons = set()
        self._wakeup.clear()
        return batch

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            while (batch := self.take_due(now := self._clock())) is None:
                due = self.due()
                assert due is not None
                await asyncio.sleep(due - now)
            self.fired += 1
            try:
                await self._fire(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failed push must not stop later ones: the next event retries with new state.
                log.exception("push failed", events=batch.events, reasons=sorted(batch.reasons))
