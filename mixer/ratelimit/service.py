"""The Rate Limit Service: config snapshot + counters + clock → a decision per request.

Transport-free: :mod:`mixer.ratelimit.grpc` adapts it to ``envoy.service.ratelimit.v3``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from mixer.ratelimit.config import RateLimitConfig
from mixer.ratelimit.counters import CounterError, Counters, MemoryCounters
from mixer.ratelimit.decide import Decision, HeaderNames, Request, RequestError, decide, plan
from mixer.ratelimit.stats import RateLimitStats

__all__ = ["ConfigProvider", "RateLimitService", "StaticConfig"]

log = structlog.get_logger(__name__)


class ConfigProvider(Protocol):
    """Anything holding the current config snapshot (a watcher, or a fixed value)."""

    @property
    def current(self) -> RateLimitConfig: ...


@dataclass(frozen=True, slots=True)
class StaticConfig:
    """A config that never changes (tests, or no config given: no limits at all)."""

    current: RateLimitConfig = field(default_factory=RateLimitConfig)


class RateLimitService:
    """``ShouldRateLimit``. Raises :class:`RequestError` (a bad request) or
    :class:`CounterError` (the counter store failed); both are counted."""

    def __init__(
        self,
        config: ConfigProvider,
        counters: Counters,
        *,
        clock: Callable[[], float],
        stats: RateLimitStats,
        headers: HeaderNames | None = None,
        key_prefix: str = "",
    ) -> None:
        self.config = config
        self.counters = counters
        self.clock = clock
        self.stats = stats
        self.headers = headers
        self.key_prefix = key_prefix
        # The in-memory store answers synchronously: skip a coroutine per call for it.
        self._sync = counters.increment_now if isinstance(counters, MemoryCounters) else None

    async def should_rate_limit(self, request: Request) -> Decision:
        now = int(self.clock())
        try:
            todo = plan(self.config.current, request, now, self.key_prefix)
        except RequestError:
            self.stats.inc("call.should_rate_limit.service_error")
            raise
        if self._sync is not None:
            counts = self._sync(todo.hits)
        else:
            try:
                counts = await self.counters.increment(todo.hits)
            except CounterError as exc:
                self.stats.inc("call.should_rate_limit.redis_error")
                log.warning("rate limit counters unavailable", error=str(exc))
                raise
        return decide(todo, counts, now, self.stats, self.headers)
