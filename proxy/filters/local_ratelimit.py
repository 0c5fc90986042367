"""``envoy.filters.http.local_ratelimit``: a token bucket per filter config (or per route)."""

from __future__ import annotations

from collections.abc import Callable

from proxy.config.model_http import LocalRateLimitConfig
from proxy.config.model_ratelimit import VhRateLimits
from proxy.config.model_route import RouteAction, RouteActionType
from proxy.http.filter import (
    DownstreamCallbacks,
    FilterContext,
    FilterHeadersStatus,
    Headers,
    HttpFilter,
)
from proxy.http.headers import apply_header_options
from proxy.http.local_reply import ResponseFlag
from proxy.routing.ratelimit import LocalRateLimiter, RateLimitDecision, TokenBucket
from proxy.routing.ratelimit_descriptors import (
    Descriptor,
    RequestFacts,
    build_descriptors,
    route_policies,
)

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
    __slots__ = ("_bucket", "_limiters", "_local_cluster", "_stats")

    def __init__(
        self, limiters: _Limiters, stats: Callable[[str], None], local_cluster: str
    ) -> None:
        self._limiters = limiters
        self._stats = stats
        self._local_cluster = local_cluster
        self._bucket: TokenBucket | None = None

    def decode_headers(
        self, cb: DownstreamCallbacks, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        override = cb.per_route_config(_NAME)
        limiter = (
            self._limiters.get(override)
            if isinstance(override, LocalRateLimitConfig)
            else self._limiters.default
        )
        config = limiter.config
        if config.descriptors or config.enable_x_ratelimit_headers:
            decision, bucket = limiter.check_descriptors(self._descriptors(cb, headers, config))
            if config.enable_x_ratelimit_headers:
                self._bucket = bucket
        else:
            decision = limiter.check()
        if decision is RateLimitDecision.DISABLED:
            return FilterHeadersStatus.CONTINUE
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

    def _descriptors(
        self, cb: DownstreamCallbacks, headers: Headers, config: LocalRateLimitConfig
    ) -> list[Descriptor]:
        """The route's ``rate_limits`` actions of the filter's stage, as Envoy's local filter
        builds them (entries with a ``disable_key`` are skipped)."""
        route = cb.route
        if not config.descriptors or route is None or not isinstance(route.action, RouteAction):
            return []
        action = route.action
        vhost = cb.vhost
        mode = VhRateLimits(config.vh_rate_limits)
        if action.include_vh_rate_limits:
            mode = VhRateLimits.INCLUDE
        policies = [
            p
            for p in route_policies(
                action.rate_limits, vhost.rate_limits if vhost is not None else (), mode
            )
            if not p.disable_key
        ]
        if not policies:
            return []
        facts = RequestFacts(
            headers=headers,
            method=cb.method,
            path=cb.path,
            scheme=cb.stream_info.connection.scheme,
            remote_address=cb.stream_info.connection.remote_host,
            destination_cluster=(
                action.cluster if action.kind is RouteActionType.CLUSTER else None
            ),
            local_cluster=self._local_cluster,
        )
        return build_descriptors(policies, config.stage, facts)

    def encode_headers(
        self, cb: DownstreamCallbacks, status: int, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        bucket = self._bucket
        if bucket is not None:
            self._bucket = None
            limit, remaining, reset = bucket.x_ratelimit()
            headers.append((b"x-ratelimit-limit", str(limit).encode()))
            headers.append((b"x-ratelimit-remaining", str(remaining).encode()))
            headers.append((b"x-ratelimit-reset", str(reset).encode()))
        return FilterHeadersStatus.CONTINUE


def factory(config: object, context: FilterContext) -> Callable[[], HttpFilter]:
    assert isinstance(config, LocalRateLimitConfig)
    limiters = _Limiters(config, context)
    store = context.stats

    def count(name: str) -> None:
        store.counter(name).value += 1

    local_cluster = context.local_cluster
    return lambda: LocalRateLimitFilter(limiters, count, local_cluster)
