"""``envoy.filters.http.ratelimit``: ask the Rate Limit Service before the request goes on.

Per request (Envoy's ``RateLimitFilter``): the route's ``rate_limits`` actions of the filter's
``stage`` (and the virtual host's, as ``vh_rate_limits`` says) build the descriptors; none, no
call. Otherwise the headers wait (``STOP_ALL_ITERATION_AND_BUFFER``) while the service is
asked; its answer lets the request go on, refuses it with 429 and ``x-envoy-ratelimited:
true``, or, when the service fails or is late (``timeout``), lets it through or refuses it with
500 as ``failure_mode_deny`` says. Counted per route cluster as Envoy does:
``cluster.<name>.ratelimit.ok`` / ``over_limit`` / ``error`` / ``failure_mode_allowed``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from proxy.config.model_ratelimit import RateLimitFilterConfig, RateLimitPerRoute, VhRateLimits
from proxy.config.model_route import RouteAction, RouteActionType
from proxy.http.filter import (
    DownstreamCallbacks,
    FilterContext,
    FilterHeadersStatus,
    Headers,
    HttpFilter,
)
from proxy.http.local_reply import ResponseFlag
from proxy.routing.ratelimit_answer import LimitStatus, RlsAnswer, x_ratelimit_headers
from proxy.routing.ratelimit_descriptors import RequestFacts, build_descriptors, route_policies
from proxy.upstream.rls_client import RlsCall, RlsClient

__all__ = ["RateLimitFilter", "factory"]

NAME = "envoy.filters.http.ratelimit"
_RATELIMITED = (b"x-envoy-ratelimited", b"true")


class _State(enum.Enum):
    IDLE = 0
    CALLING = 1
    COMPLETE = 2
    RESPONDED = 3


class _Shared:
    """Per snapshot: the config, the service client, the node's cluster and stats."""

    __slots__ = ("client", "config", "count", "local_cluster")

    def __init__(self, config: RateLimitFilterConfig, context: FilterContext) -> None:
        self.config = config
        clusters = context.clusters
        target = config.service.cluster_name

        def pick() -> str | None:
            return clusters.pick_host(target) if clusters is not None else None

        self.client = RlsClient(pick, authority=config.service.authority)
        self.local_cluster = context.local_cluster
        store = context.stats

        def count(name: str) -> None:
            store.counter(name).value += 1

        self.count = count


class RateLimitFilter(HttpFilter):
    __slots__ = ("_call", "_cb", "_cluster", "_headers", "_response_headers", "_shared", "_state")

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._state = _State.IDLE
        self._call: RlsCall | None = None
        self._cb: DownstreamCallbacks | None = None
        self._headers: Headers | None = None
        self._response_headers: list[tuple[bytes, bytes]] | None = None
        self._cluster = ""

    def decode_headers(
        self, cb: DownstreamCallbacks, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        config = self._shared.config
        route = cb.route
        if route is None or not isinstance(route.action, RouteAction):
            return FilterHeadersStatus.CONTINUE
        if config.request_type != "both":
            internal = any(k == b"x-envoy-internal" and v == b"true" for k, v in headers)
            if internal != (config.request_type == "internal"):
                return FilterHeadersStatus.CONTINUE
        action = route.action
        vhost = cb.vhost
        per_route = cb.per_route_config(NAME)
        mode = per_route.vh_rate_limits if isinstance(per_route, RateLimitPerRoute) else None
        if action.include_vh_rate_limits:
            mode = VhRateLimits.INCLUDE
        policies = route_policies(
            action.rate_limits,
            vhost.rate_limits if vhost is not None else (),
            mode or VhRateLimits.OVERRIDE,
        )
        if not policies:
            return FilterHeadersStatus.CONTINUE
        cluster = action.cluster if action.kind is RouteActionType.CLUSTER else None
        facts = RequestFacts(
            headers=headers,
            method=cb.method,
            path=cb.path,
            scheme=cb.stream_info.connection.scheme,
            remote_address=cb.stream_info.connection.remote_host,
            destination_cluster=cluster,
            local_cluster=self._shared.local_cluster,
        )
        descriptors = build_descriptors(policies, config.stage, facts)
        if not descriptors:
            return FilterHeadersStatus.CONTINUE
        self._cb = cb
        self._headers = headers
        self._cluster = cluster or ""
        self._state = _State.CALLING
        self._call = self._shared.client.limit(
            config.domain, descriptors, config.timeout, self._complete
        )
        # The answer may have come at once (no host to ask): then the chain goes on here.
        if self._state is _State.RESPONDED:
            return FilterHeadersStatus.STOP_ITERATION
        if self._state is _State.COMPLETE:
            return FilterHeadersStatus.CONTINUE
        return FilterHeadersStatus.STOP_ALL_ITERATION_AND_BUFFER

    def _complete(self, answer: RlsAnswer) -> None:
        calling = self._state is _State.CALLING and self._call is not None
        self._state = _State.COMPLETE
        self._call = None
        cb = self._cb
        assert cb is not None
        shared = self._shared
        config = shared.config
        prefix = f"cluster.{self._cluster}.ratelimit." if self._cluster else "ratelimit."
        status = answer.status
        response = list(answer.response_headers)
        shared.count(prefix + status.value)
        if status is LimitStatus.OVER_LIMIT and not config.disable_x_envoy_ratelimited_header:
            response.append(_RATELIMITED)
        if config.enable_x_ratelimit_headers:
            response.extend(x_ratelimit_headers(answer.statuses))
        self._response_headers = response or None
        if status is LimitStatus.OVER_LIMIT:
            self._respond(cb, 429, ResponseFlag.RATE_LIMITED, "request_rate_limited")
        elif status is LimitStatus.ERROR and config.failure_mode_deny:
            self._respond(
                cb, config.status_on_error, ResponseFlag.RATELIMIT_SERVICE_ERROR,
                "rate_limiter_error",
            )  # fmt: skip
        else:
            if status is LimitStatus.ERROR:
                shared.count(prefix + "failure_mode_allowed")
            if answer.request_headers and self._headers is not None:
                self._headers.extend(answer.request_headers)
            if calling:
                cb.continue_decoding()

    def _respond(self, cb: DownstreamCallbacks, status: int, flag: str, details: str) -> None:
        self._state = _State.RESPONDED
        headers = tuple(self._response_headers or ())
        self._response_headers = None  # they go on the local reply, not again on encode
        cb.send_local_reply(status, b"", flag=flag, headers=headers, details=details)

    def encode_headers(
        self, cb: DownstreamCallbacks, status: int, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        extra = self._response_headers
        if extra:
            self._response_headers = None
            headers.extend(extra)
        return FilterHeadersStatus.CONTINUE

    def on_destroy(self) -> None:
        call = self._call
        if call is not None:
            self._call = None
            call.cancel()


def factory(config: object, context: FilterContext) -> Callable[[], HttpFilter]:
    assert isinstance(config, RateLimitFilterConfig)
    shared = _Shared(config, context)
    return lambda: RateLimitFilter(shared)
