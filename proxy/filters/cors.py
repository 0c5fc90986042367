"""``envoy.filters.http.cors``: preflight answers and CORS response headers from the
route's (or virtual host's) ``CorsPolicy``."""

from __future__ import annotations

from collections.abc import Callable

from proxy.config.model_route import CorsPolicy, RouteAction
from proxy.http.filter import (
    DownstreamCallbacks,
    FilterContext,
    FilterHeadersStatus,
    Headers,
    HttpFilter,
)
from proxy.http.headers import get_header

__all__ = ["CorsFilter", "factory"]

_NAME = "envoy.filters.http.cors"


def _policy(cb: DownstreamCallbacks) -> CorsPolicy | None:
    override = cb.per_route_config(_NAME)
    if isinstance(override, CorsPolicy):
        return override
    route = cb.route
    if route is not None and isinstance(route.action, RouteAction) and route.action.cors:
        return route.action.cors
    vhost = cb.vhost
    return vhost.cors if vhost is not None else None


class CorsFilter(HttpFilter):
    __slots__ = ("_origin", "_policy")

    def __init__(self) -> None:
        self._policy: CorsPolicy | None = None
        self._origin: bytes | None = None

    def decode_headers(
        self, cb: DownstreamCallbacks, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        origin = get_header(headers, b"origin")
        if origin is None:
            return FilterHeadersStatus.CONTINUE
        policy = _policy(cb)
        if policy is None or policy.filter_enabled <= 0.0:
            return FilterHeadersStatus.CONTINUE
        if not any(m.matches(origin) for m in policy.allow_origin_string_match):
            return FilterHeadersStatus.CONTINUE
        is_preflight = (
            cb.method == b"OPTIONS"
            and get_header(headers, b"access-control-request-method") is not None
        )
        if is_preflight:
            reply = [(b"access-control-allow-origin", origin)]
            if policy.allow_credentials:
                reply.append((b"access-control-allow-credentials", b"true"))
            if policy.allow_methods:
                reply.append((b"access-control-allow-methods", policy.allow_methods))
            if policy.allow_headers:
                reply.append((b"access-control-allow-headers", policy.allow_headers))
            if policy.expose_headers:  # Envoy sends it on preflights too
                reply.append((b"access-control-expose-headers", policy.expose_headers))
            if policy.max_age:
                reply.append((b"access-control-max-age", policy.max_age))
            cb.send_local_reply(200, b"", headers=tuple(reply), details="cors_preflight")
            return FilterHeadersStatus.STOP_ITERATION
        self._policy = policy
        self._origin = origin
        return FilterHeadersStatus.CONTINUE

    def encode_headers(
        self, cb: DownstreamCallbacks, status: int, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        policy = self._policy
        if policy is not None and self._origin is not None:
            headers.append((b"access-control-allow-origin", self._origin))
            if policy.allow_credentials:
                headers.append((b"access-control-allow-credentials", b"true"))
            if policy.expose_headers:
                headers.append((b"access-control-expose-headers", policy.expose_headers))
        return FilterHeadersStatus.CONTINUE


def factory(config: object, context: FilterContext) -> Callable[[], HttpFilter]:
    return CorsFilter
