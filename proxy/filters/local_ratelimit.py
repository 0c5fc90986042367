"""``envoy.filters.http.local_ratelimit``: a token bucket per filter config (or per route)."""

from __future__ import annotations

from collections.abc import Callable

from proxy.config.model_http import LocalRateLimitConfig
from proxy.http.filter import (
    DownstreamCallbacks,
    FilterContext,
    FilterHeadersStatus,
    Headers,
    HttpFilter,
)
from proxy.http.headers import apply_header_options
from proxy.http.local_reply import ResponseFlag
from proxy.routing.ratelimit import LocalRateLimiter, RateLimitDecision

__all__ = ["LocalRateLimitFilter", "factory"]

_NAME = "envoy.filters.http.local_ratelimit"


class _Limiters:
    """One limiter per distinct config (the filter's own, and each route's override), kept
    for the life of the snapshot so buckets persist across requests."""

    def __init__(self, default: LocalRateLimitConfig, context: FilterContext) -> None:
        self._context = context
        self._by_id: dict[int, tuple[LocalRateLimitConfig, LocalRateLimiter]] = {}
        self.default = self.get(default)

    def get(self, config: LocalRateLimitConfig) -> LocalRateLimiter:
        entry = self._by_id.get(id(config))
        if entry is None:
            ctx = self._context
            limiter = LocalRateLimiter(config, ctx.clock, ctx.rng)
            self._by_id[id(config)] = entry = (config, limiter)
        return entry[1]


class LocalRateLimitFilter(HttpFilter):
    __slots__ = ("_limiters", "_stats")

    def __init__(self, limiters: _Limiters, stats: Callable[[str], None]) -> None:
        self._limiters = limiters
        self._stats = stats

    def decode_headers(
        self, cb: DownstreamCallbacks, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        override = cb.per_route_config(_NAME)
        limiter = (
            self._limiters.get(override)
            if isinstance(override, LocalRateLimitConfig)
            else self._limiters.default
        )
        decision = limiter.check()
        if decision is RateLimitDecision.DISABLED:
            return FilterHeadersStatus.CONTINUE
        config = limiter.config
        prefix = f"{config.stat_prefix}.http_local_rate_limit."
        self._stats(prefix + "enabled")
        if decision is RateLimitDecision.OK:
            self._stats(prefix + "ok")
            return FilterHeadersStatus.CONTINUE
        self._stats(prefix + "rate_limited")
        if decision is RateLimitDecision.LIMITED_NOT_ENFORCED:
            apply_header_options(headers, config.request_headers_to_add_when_not_enforced)
            return FilterHeadersStatus.CONTINUE
        self._stats(prefix + "enforced")
        extra: list[tuple[bytes, bytes]] = []
        apply_header_options(extra, config.response_headers_to_add)
        cb.send_local_reply(
            config.status,
            b"local_rate_limited",
            flag=ResponseFlag.RATE_LIMITED,
            headers=tuple(extra),
            details="local_rate_limited",
        )
        return FilterHeadersStatus.STOP_ITERATION


def factory(config: object, context: FilterContext) -> Callable[[], HttpFilter]:
    assert isinstance(config, LocalRateLimitConfig)
    limiters = _Limiters(config, context)
    store = context.stats

    def count(name: str) -> None:
        store.counter(name).value += 1

    return lambda: LocalRateLimitFilter(limiters, count)
