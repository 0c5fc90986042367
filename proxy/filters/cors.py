"""``envoy.filters.http.cors``: preflight answers and CORS response headers from the
route's (or virtual host's) ``CorsPolicy``."""

from __future__ import annotations

from collections.abc import Callable

from proxy.config.model_route import CorsPolicy, RouteAction
from proxy.http.filter import FilterContext, FilterStatus, FilterStream, HttpFilter
from proxy.http.headers import get_header

__all__ = ["CorsFilter", "factory"]

_NAME = "envoy.filters.http.cors"


def _policy(stream: FilterStream) -> CorsPolicy | None:
    override = stream.per_route_config(_NAME)
    if isinstance(override, CorsPolicy):
        return override
    route = stream.route
    if route is not None and isinstance(route.action, RouteAction) and route.action.cors:
        return route.action.cors
    vhost = getattr(stream, "vhost", None)
    return vhost.cors if vhost is not None else None


class CorsFilter(HttpFilter):
    __slots__ = ("_origin", "_policy")

    def __init__(self) -> None:
        self._policy: CorsPolicy | None = None
        self._origin: bytes | None = None

    def on_request_headers(self, stream: FilterStream) -> FilterStatus:
        origin = get_header(stream.request_headers, b"origin")
        policy = _policy(stream)
        if origin is None or policy is None or policy.filter_enabled <= 0.0:
            return FilterStatus.CONTINUE
        if not any(m.matches(origin) for m in policy.allow_origin_string_match):
            return FilterStatus.CONTINUE
        is_preflight = (
            stream.method == b"OPTIONS"
            and get_header(stream.request_headers, b"access-control-request-method") is not None
        )
        if is_preflight:
            headers = [(b"access-control-allow-origin", origin)]
            if policy.allow_credentials:
                headers.append((b"access-control-allow-credentials", b"true"))
            if policy.allow_methods:
                headers.append((b"access-control-allow-methods", policy.allow_methods))
            if policy.allow_headers:
                headers.append((b"access-control-allow-headers", policy.allow_headers))
            if policy.expose_headers:  # Envoy sends it on preflights too
                headers.append((b"access-control-expose-headers", policy.expose_headers))
            if policy.max_age:
                headers.append((b"access-control-max-age", policy.max_age))
            stream.send_local_reply(200, b"", headers=tuple(headers), details="cors_preflight")
            return FilterStatus.STOP
        self._policy = policy
        self._origin = origin
        return FilterStatus.CONTINUE

    def on_response_headers(
        self, stream: FilterStream, status: int, headers: list[tuple[bytes, bytes]]
    ) -> int:
        policy = self._policy
        if policy is not None and self._origin is not None:
            headers.append((b"access-control-allow-origin", self._origin))
            if policy.allow_credentials:
                headers.append((b"access-control-allow-credentials", b"true"))
            if policy.expose_headers:
                headers.append((b"access-control-expose-headers", policy.expose_headers))
        return status


def factory(config: object, context: FilterContext) -> Callable[[], HttpFilter]:
    return CorsFilter
