"""HTTP filters end to end: fault, local rate limit, CORS, and a user-written filter."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from proxy.config.translate import FilterEntry, default_registry
from proxy.http.filter import (
    DownstreamCallbacks,
    FilterContext,
    FilterHeadersStatus,
    HttpFilter,
)
from proxy.http.headers import get_header
from tests.proxy.runtime.bootstrap import (
    bootstrap,
    cluster,
    cors_filter,
    fault_filter,
    fault_per_route,
    hcm,
    listener,
    local_ratelimit_filter,
    route,
    vhost,
)
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support.httpclient import AsyncConnection, concurrent_requests, request
from tests.support.upstream import Upstream

PERCENT_100 = {"numerator": 100, "denominator": "HUNDRED"}


def with_filters(
    listen: tuple[str, int],
    up: Upstream,
    filters: list[dict[str, Any]],
    routes: list[dict[str, Any]] | None = None,
    **vhost_extra: Any,
) -> dict[str, Any]:
    vh = vhost(routes or [route("/")], **vhost_extra)
    return bootstrap(
        [listener(listen, hcm([vh], http_filters=filters))], [cluster("backend", [up.address])]
    )


# -- fault ----------------------------------------------------------------------------------
async def test_fault_abort(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    fault = fault_filter(abort={"http_status": 503, "percentage": PERCENT_100})
    proxy = await start_proxy(with_filters(listen_address(), up, [fault]))
    async with await AsyncConnection.open(*proxy.address) as conn:
        for _ in range(3):
            r = await conn.request("GET", "/", host="svc")
            assert (r.status, r.body) == (503, b"fault filter abort")
            assert r.header("content-type") == "text/plain" and not r.will_close
        # Answered before its body was read: as Envoy, the connection is not reused.
        r = await conn.request("POST", "/", body=b"data", host="svc")
        assert (r.status, r.header("connection")) == (503, "close")
    assert up.stats.requests == 0 and up.stats.connections == 0
    assert proxy.stat("http.ingress.fault.aborts_injected") == 4


async def test_fault_delay_then_forward(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    fault = fault_filter(delay={"fixed_delay": "0.3s", "percentage": PERCENT_100})
    proxy = await start_proxy(with_filters(listen_address(), up, [fault]))
    started = time.monotonic()
    r = await request(*proxy.address, "POST", "/d", body=b"x" * 10_000, host_header="svc")
    assert r.status == 200 and time.monotonic() - started >= 0.28
    # The body that arrived while the chain was held reaches the upstream whole.
    assert r.json()["body_length"] == 10_000
    assert proxy.stat("http.ingress.fault.delays_injected") == 1


async def test_fault_percentages(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    fault = fault_filter(
        abort={"http_status": 500, "percentage": {"numerator": 30, "denominator": "HUNDRED"}}
    )
    proxy = await start_proxy(with_filters(listen_address(), up, [fault]), seed=3)
    # One event loop for client, proxy and upstream: a busy machine needs more than 5 s.
    results = await concurrent_requests(
        *proxy.address, 400, connections=8, host_header="svc", timeout=60.0
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    aborted = sum(1 for r in results if not isinstance(r, Exception) and r.status == 500)
    assert 80 <= aborted <= 160
    assert up.stats.requests == 400 - aborted


async def test_header_controlled_faults(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    fault = fault_filter(
        abort={"header_abort": {}, "percentage": PERCENT_100},
        delay={"header_delay": {}, "percentage": PERCENT_100},
    )
    proxy = await start_proxy(with_filters(listen_address(), up, [fault]))
    async with await AsyncConnection.open(*proxy.address) as conn:
        assert (await conn.request("GET", "/", host="svc")).status == 200
        r = await conn.request("GET", "/", [("x-envoy-fault-abort-request", "429")], host="svc")
        assert (r.status, r.body) == (429, b"fault filter abort")
        started = time.monotonic()
        r = await conn.request("GET", "/", [("x-envoy-fault-delay-request", "250")], host="svc")
        assert r.status == 200 and time.monotonic() - started >= 0.23
        r = await conn.request(
            "GET",
            "/",
            [
                ("x-envoy-fault-abort-request", "503"),
                ("x-envoy-fault-abort-request-percentage", "0"),
            ],
            host="svc",
        )
        assert r.status == 200
    assert up.stats.requests == 3


async def test_fault_per_route_config(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    fault = fault_filter(abort={"http_status": 503, "percentage": PERCENT_100})
    disabled = {
        "envoy.filters.http.fault": {
            "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
            "disabled": True,
        }
    }
    routes = [
        route(
            "/teapot",
            typed_per_filter_config=fault_per_route(
                abort={"http_status": 418, "percentage": PERCENT_100}
            ),
        ),
        route("/healthy", typed_per_filter_config=disabled),
        route("/"),
    ]
    proxy = await start_proxy(with_filters(listen_address(), up, [fault], routes))
    async with await AsyncConnection.open(*proxy.address) as conn:
        assert (await conn.request("GET", "/teapot", host="svc")).status == 418
        assert (await conn.request("GET", "/healthy", host="svc")).status == 200
        assert (await conn.request("GET", "/other", host="svc")).status == 503
    assert [rec.path for rec in up.received] == ["/healthy"]


# -- local rate limit ----------------------------------------------------------------------
async def test_local_ratelimit(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    limit = local_ratelimit_filter(
        3,
        response_headers_to_add=[{"header": {"key": "x-limited", "value": "yes"}}],
    )
    per_route = {
        "envoy.filters.http.local_ratelimit": {
            **local_ratelimit_filter(1)["typed_config"],
            "stat_prefix": "tight",
        }
    }
    routes = [route("/tight", typed_per_filter_config=per_route), route("/")]
    proxy = await start_proxy(with_filters(listen_address(), up, [limit], routes))
    async with await AsyncConnection.open(*proxy.address) as conn:
        statuses = [(await conn.request("GET", "/", host="svc")).status for _ in range(3)]
        assert statuses == [200, 200, 200]
        r = await conn.request("GET", "/", host="svc")
        assert (r.status, r.body) == (429, b"local_rate_limited")
        assert r.header("x-limited") == "yes" and not r.will_close
        # The route's own bucket is separate from the filter's.
        assert (await conn.request("GET", "/tight", host="svc")).status == 200
        assert (await conn.request("GET", "/tight", host="svc")).status == 429
    assert up.stats.requests == 4
    assert proxy.stat("http_local_rate_limiter.http_local_rate_limit.rate_limited") == 1
    assert proxy.stat("tight.http_local_rate_limit.rate_limited") == 1


# -- CORS -------------------------------------------------------------------------------------
def cors_policy() -> dict[str, Any]:
    return {
        "envoy.filters.http.cors": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
            "allow_origin_string_match": [{"exact": "https://app.test"}],
            "allow_methods": "GET, PUT",
            "allow_headers": "x-custom",
            "expose_headers": "x-exposed",
            "max_age": "600",
            "allow_credentials": True,
        }
    }


async def test_cors_preflight_and_response_headers(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(
        with_filters(listen_address(), up, [cors_filter()], typed_per_filter_config=cors_policy())
    )
    preflight = [("Origin", "https://app.test"), ("Access-Control-Request-Method", "PUT")]
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("OPTIONS", "/res", preflight, host="svc")
        assert r.status == 200
        assert r.header("access-control-allow-origin") == "https://app.test"
        assert r.header("access-control-allow-methods") == "GET, PUT"
        assert r.header("access-control-allow-headers") == "x-custom"
        assert r.header("access-control-max-age") == "600"
        assert r.header("access-control-allow-credentials") == "true"
        assert up.stats.requests == 0
        r = await conn.request("GET", "/res", [("Origin", "https://app.test")], host="svc")
        assert r.status == 200
        assert r.header("access-control-allow-origin") == "https://app.test"
        assert r.header("access-control-expose-headers") == "x-exposed"
        r = await conn.request("GET", "/res", [("Origin", "https://evil.test")], host="svc")
        assert r.status == 200 and r.header("access-control-allow-origin") is None
        # A preflight from an origin that is not allowed is not answered by the proxy.
        bad = [("Origin", "https://evil.test"), ("Access-Control-Request-Method", "PUT")]
        r = await conn.request("OPTIONS", "/res", bad, host="svc")
        assert r.header("access-control-allow-origin") is None
    assert [rec.method for rec in up.received] == ["GET", "GET", "OPTIONS"]


# -- a user-written filter --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TaggerConfig:
    header: bytes
    value: bytes
    deny_header: bytes
    hold_seconds: float


class Tagger(HttpFilter):
    """Tags requests, refuses those carrying ``deny_header``, holds each one a moment (to show
    that a filter may pause the chain and resume it later) and marks responses."""

    __slots__ = ("config",)

    def __init__(self, config: TaggerConfig) -> None:
        self.config = config

    def decode_headers(self, cb: DownstreamCallbacks, headers, end_stream) -> FilterHeadersStatus:
        cfg = self.config
        if get_header(headers, cfg.deny_header) is not None:
            cb.send_local_reply(403, b"denied by tagger\n", details="tagger_denied")
            return FilterHeadersStatus.STOP_ITERATION
        headers.append((cfg.header, cfg.value))
        cb.counter("tagger.tagged").value += 1
        cb.timers.call_later(cfg.hold_seconds, cb.continue_decoding)
        return FilterHeadersStatus.STOP_ALL_ITERATION_AND_BUFFER

    def encode_headers(self, cb, status, headers, end_stream) -> FilterHeadersStatus:
        headers.append((b"x-tagged-by", b"tagger"))
        return FilterHeadersStatus.CONTINUE


def translate_tagger(message: Any, path: str) -> TaggerConfig:
    fields = dict(message.items())
    return TaggerConfig(
        header=str(fields.get("header", "x-tag")).encode(),
        value=str(fields.get("value", "")).encode(),
        deny_header=str(fields.get("deny_header", "x-deny")).encode(),
        hold_seconds=float(fields.get("hold_ms", 0)) / 1000.0,
    )


def tagger_factory(config: object, context: FilterContext) -> Callable[[], HttpFilter]:
    assert isinstance(config, TaggerConfig)
    return lambda: Tagger(config)


async def test_user_filter_registered_by_name(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    registry = default_registry()
    registry.register(
        FilterEntry("example.tagger", struct_pb2.Struct, translate_tagger, factory=tagger_factory)
    )
    up = await upstream_factory(upstream_ip(0))
    tagger = {
        "name": "example.tagger",
        "typed_config": {
            "@type": "type.googleapis.com/google.protobuf.Struct",
            "value": {"header": "x-team", "value": "payments", "hold_ms": 100},
        },
    }
    proxy = await start_proxy(with_filters(listen_address(), up, [tagger]), registry=registry)
    async with await AsyncConnection.open(*proxy.address) as conn:
        started = time.monotonic()
        r = await conn.request("POST", "/pay", body=b"amount=1", host="svc")
        assert r.status == 200 and time.monotonic() - started >= 0.09
        assert r.header("x-tagged-by") == "tagger"
        doc = r.json()
        assert doc["headers"]["x-team"] == "payments" and doc["body_length"] == 8
        r = await conn.request("GET", "/pay", [("x-deny", "1")], host="svc")
        assert (r.status, r.body) == (403, b"denied by tagger\n")
        assert r.header("x-tagged-by") == "tagger"
    assert up.stats.requests == 1
    assert proxy.stat("http.ingress.tagger.tagged") == 1
