"""``envoy.filters.http.jwt_authn``: verify the request's JWTs against the requirement of the
first matching rule (or the route's ``PerRouteConfig``), with Envoy's answers.

A failure is a local reply: 401 (403 for "Audiences in Jwt are not allowed") with the status
text as body, ``WWW-Authenticate: Bearer realm="<scheme>://<host><path>"`` (plus
``error="invalid_token"`` unless the token is missing) and the details
``jwt_authn_access_denied{<status>}``. Verified payloads go to the
``envoy.filters.http.jwt_authn`` dynamic metadata, where RBAC reads ``request.auth.*``.

Remote JWKS are fetched through their cluster with the proxy's own HTTP client, one fetch per
provider at a time: requests that need keys the cache does not have wait for it (the filter
stops the chain); keys due for a refresh keep serving while the refresh runs, and a fetch that
fails keeps them (counted in ``jwks_fetch_failed``). Stats: ``http.<hcm>.jwt_authn.*``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog

from proxy.config.model_route import FilterDisabled
from proxy.config.translate.jwt_authn import JwtAuthnConfig, JwtPerRoute
from proxy.http.async_client import HttpCall
from proxy.http.filter import (
    DownstreamCallbacks,
    FilterContext,
    FilterHeadersStatus,
    Headers,
    HttpFilter,
)
from proxy.http.headers import get_header
from proxy.security.jwks import JwksCache, RemoteJwks
from proxy.security.jwt import JwtStatus, TokenMemo
from proxy.security.jwt_authn import (
    JwtProvider,
    Requirement,
    Verification,
    VerifyContext,
    verify,
)

if TYPE_CHECKING:
    from proxy.http.filter import Timers
    from proxy.runtime import RuntimeSnapshot

__all__ = ["JWT_METADATA", "JwtAuthnFilter", "factory"]

log = structlog.get_logger(__name__)

JWT_METADATA = "envoy.filters.http.jwt_authn"
_NAME = JWT_METADATA
_STATS = (
    "allowed",
    "denied",
    "cors_preflight_bypassed",
    "jwks_fetch_success",
    "jwks_fetch_failed",
    "jwt_cache_hit",
    "jwt_cache_miss",
)


class _Fetcher:
    """The JWKS fetch of one remote provider, and the requests waiting for it."""

    __slots__ = ("_call", "_clock", "_shared", "cache", "remote", "waiters")

    def __init__(self, remote: RemoteJwks, cache: JwksCache, shared: _Shared) -> None:
        self.remote = remote
        self.cache = cache
        self._shared = shared
        self._clock = shared.context.clock
        self._call: HttpCall | None = None
        self.waiters: list[Callable[[], None]] = []

    def start(self, runtime: RuntimeSnapshot, timers: Timers) -> None:
        if self._call is not None:
            return
        remote = self.remote
        cluster = runtime.clusters.get(remote.cluster)
        if cluster is None:
            self.on_call_failure(f"cluster {remote.cluster!r} not found")
            return
        url = urlsplit(remote.uri)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        headers = [(b"host", url.netloc.encode("latin-1"))]
        self._call = HttpCall.send(
            cluster,
            b"GET",
            path.encode("latin-1"),
            headers,
            b"",
            timeout=remote.timeout or None,
            timers=timers,
            callbacks=self,
        )

    def on_call_response(self, status: int, headers: Headers, body: bytes) -> None:
        self._call = None
        if status != 200:
            self._failed(f"JWKS fetch answered {status}")
            return
        error = self.cache.fetched(body, self._clock())
        if error is not None:
            self._shared.stat("jwks_fetch_failed")
            log.warning("jwks fetch: bad document", uri=self.remote.uri, error=str(error))
        else:
            self._shared.stat("jwks_fetch_success")
        self._wake()

    def on_call_failure(self, reason: str) -> None:
        self._call = None
        self._failed(reason)

    def _failed(self, reason: str) -> None:
        self.cache.failed(reason, self._clock())
        self._shared.stat("jwks_fetch_failed")
        log.warning("jwks fetch failed", uri=self.remote.uri, reason=reason)
        self._wake()

    def _wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for wake in waiters:
            wake()


class _Shared:
    """One filter config: its providers' JWKS caches and fetchers, its memo of token checks,
    and the stats."""

    def __init__(
        self, config: JwtAuthnConfig, context: FilterContext, wall: Callable[[], float]
    ) -> None:
        self.config = config
        self.context = context
        self.wall = wall
        self.caches = {
            name: JwksCache(p.remote, p.local_jwks) for name, p in config.providers.items()
        }
        self.memo = TokenMemo()
        self.fetchers = {
            name: _Fetcher(p.remote, self.caches[name], self)
            for name, p in config.providers.items()
            if p.remote is not None
        }
        extra = f"{config.stat_prefix}." if config.stat_prefix else ""
        prefix = f"http.{context.stat_prefix}.jwt_authn.{extra}"
        self.counters = {name: context.stats.counter(prefix + name) for name in _STATS}

    def stat(self, name: str, count: int = 1) -> None:
        self.counters[name].value += count

    def by_issuer(self, issuer: str) -> JwtProvider | None:
        """The first provider (by name) with this issuer, else the first without one."""
        providers = self.config.providers.values()
        for p in providers:
            if p.issuer == issuer:
                return p
        return next((p for p in providers if not p.issuer), None)

    def requirement(self, cb: DownstreamCallbacks, headers: Headers) -> Requirement | None:
        config = self.config
        override = cb.per_route_config(_NAME)
        if isinstance(override, FilterDisabled):
            return None
        if isinstance(override, JwtPerRoute):
            if override.disabled:
                return None
            return config.requirement_map.get(override.requirement_name)
        route = config.rule_table.match(config.rule_host, cb.method, cb.path, headers)
        return None if route is None else config.rule_requirements[int(route.name)]


def _preflight(cb: DownstreamCallbacks, headers: Headers) -> bool:
    return (
        cb.method == b"OPTIONS"
        and bool(get_header(headers, b"origin"))
        and bool(get_header(headers, b"access-control-request-method"))
    )


class JwtAuthnFilter(HttpFilter):
    __slots__ = ("_cb", "_ctx", "_shared", "_stopped", "_verification", "_waiting")

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._cb: DownstreamCallbacks | None = None
        self._ctx: VerifyContext | None = None
        self._verification: Verification | None = None
        self._waiting: _Fetcher | None = None
        self._stopped = False

    def decode_headers(
        self, cb: DownstreamCallbacks, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        shared = self._shared
        if shared.config.bypass_cors_preflight and _preflight(cb, headers):
            shared.stat("cors_preflight_bypassed")
            shared.stat("allowed")
            return FilterHeadersStatus.CONTINUE
        requirement = shared.requirement(cb, headers)
        if requirement is None:
            shared.stat("allowed")
            return FilterHeadersStatus.CONTINUE
        self._cb = cb
        self._ctx = VerifyContext(
            headers,
            cb.path,
            shared.wall(),
            shared.context.clock(),
            shared.by_issuer,
            shared.caches,
            shared.memo,
        )
        self._verification = verify(requirement, self._ctx)
        return self._advance()

    def _advance(self) -> FilterHeadersStatus:
        verification = self._verification
        assert verification is not None
        try:
            provider = next(verification)
        except StopIteration as done:
            return self._complete(done.value)
        cb = self._cb
        assert cb is not None
        fetcher = self._shared.fetchers[provider]
        self._waiting = fetcher
        fetcher.waiters.append(self._resume)
        fetcher.start(cb.runtime, cb.timers)
        if not self._is_waiting():  # the fetch ended at once (no cluster, no host)
            return self._advance()
        self._stopped = True
        return FilterHeadersStatus.STOP_ALL_ITERATION_AND_BUFFER

    def _is_waiting(self) -> bool:
        return self._waiting is not None

    def _resume(self) -> None:
        self._waiting = None
        if self._stopped and self._advance() is FilterHeadersStatus.CONTINUE:
            cb = self._cb
            assert cb is not None
            cb.continue_decoding()

    def _complete(self, status: JwtStatus) -> FilterHeadersStatus:
        shared = self._shared
        ctx = self._ctx
        cb = self._cb
        assert ctx is not None and cb is not None
        self._verification = None
        for provider in ctx.refresh:
            shared.fetchers[provider.name].start(cb.runtime, cb.timers)
        if ctx.cache_misses:
            shared.stat("jwt_cache_miss", ctx.cache_misses)
        if ctx.extracted:
            cb.stream_info.dynamic_metadata(JWT_METADATA).update(ctx.extracted)
        if status is JwtStatus.OK:
            shared.stat("allowed")
            if ctx.path is not cb.path:
                cb.path = ctx.path  # a verified token left the query
            if ctx.clear_route_cache:
                cb.clear_route_cache()
            return FilterHeadersStatus.CONTINUE
        shared.stat("denied")
        self._deny(cb, status)
        return FilterHeadersStatus.STOP_ITERATION

    def _deny(self, cb: DownstreamCallbacks, status: JwtStatus) -> None:
        message = status.message
        details = "jwt_authn_access_denied{" + message.replace(" ", "_") + "}"
        code = 403 if status is JwtStatus.AUDIENCE_NOT_ALLOWED else 401
        if self._shared.config.strip_failure_response:
            cb.send_local_reply(code, b"", details=details)
            return
        realm = f'Bearer realm="{_original_uri(cb)}"'
        if status is not JwtStatus.MISSED:
            realm += ', error="invalid_token"'
        cb.send_local_reply(
            code,
            message.encode(),
            headers=((b"www-authenticate", realm.encode("latin-1")),),
            details=details,
        )

    def on_destroy(self) -> None:
        waiting = self._waiting
        if waiting is not None:
            self._waiting = None
            waiting.waiters.remove(self._resume)  # still listed: the fetch has not ended
        if self._verification is not None:
            self._verification.close()
            self._verification = None


def _original_uri(cb: DownstreamCallbacks) -> str:
    """Envoy's ``buildOriginalUri``: the scheme the client used, its Host and the original
    path (with query)."""
    headers = cb.request_headers
    scheme = get_header(headers, b"x-forwarded-proto") or cb.stream_info.connection.scheme
    host = get_header(headers, b"host") or b""
    path = get_header(headers, b"x-envoy-original-path") or cb.path
    return (scheme + b"://" + host + path).decode("latin-1")


def factory(config: object, context: FilterContext) -> Callable[[], HttpFilter]:
    assert isinstance(config, JwtAuthnConfig)
    shared = _Shared(config, context, time.time)
    return lambda: JwtAuthnFilter(shared)
