"""Bad input never reaches an upstream: the proxy answers 400/431/408 and closes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support.httpclient import AsyncConnection, IncompleteResponse, build_request
from tests.support.upstream import CloseMidResponse, Delay, Reset, Upstream

BAD_REQUESTS = {
    "garbage request line": (b"HELLO\r\n\r\n", 400),
    "request line without version": (b"GET /\r\nHost: svc\r\n\r\n", 400),
    "space in header name": (b"GET / HTTP/1.1\r\nHost: svc\r\nBad Header: x\r\n\r\n", 400),
    "header without colon": (b"GET / HTTP/1.1\r\nHost: svc\r\nNoColon\r\n\r\n", 400),
    "content-length and transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "two different content-lengths": (
        b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    "non-numeric content-length": (
        b"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5x\r\n\r\nhello",
        400,
    ),
    "invalid chunk size": (
        b"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: svc\r\nX-Folded: a\r\n  b\r\n\r\n", 400),
    "NUL in a value": (b"GET / HTTP/1.1\r\nHost: svc\r\nX-Nul: a\x00b\r\n\r\n", 400),
    "CR in a value": (b"GET / HTTP/1.1\r\nHost: svc\r\nX-Cr: a\rb\r\n\r\n", 400),
    "LF inside a value": (b"GET / HTTP/1.1\r\nHost: svc\r\nX-Lf: a\nb\r\n\r\n", 400),
    "header block over 60 KiB": (
        b"GET / HTTP/1.1\r\nHost: svc\r\n"
        + b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 1000) for i in range(62))
        + b"\r\n",
        431,
    ),
    "request line over 8 KiB": (
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: svc\r\n\r\n",
        431,
    ),
}


def one_cluster(listen: tuple[str, int], up: Upstream, **hcm_extra: Any) -> dict[str, Any]:
    return bootstrap(
        [listener(listen, hcm([vhost([route("/")])], **hcm_extra))],
        [cluster("backend", [up.address])],
    )


@pytest.fixture
async def proxied(upstream_factory: Any, start_proxy: StartProxy) -> tuple[Any, Upstream]:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(one_cluster(listen_address(), up, request_headers_timeout="0.3s"))
    return proxy, up


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
async def test_bad_request_is_answered_and_closed_without_upstream(
    name: str, proxied: tuple[Any, Upstream]
) -> None:
    proxy, up = proxied
    data, status = BAD_REQUESTS[name]
    async with await AsyncConnection.open(*proxy.address) as conn:
        # A good request first: the bad one also must not disturb what came before.
        assert (await conn.request("GET", "/before", host="svc")).status == 200
        await conn.send(data)
        r = await conn.read_response()
        assert r.status == status
        assert r.header("connection") == "close"
        assert await conn.wait_closed_by_peer(3.0)
    assert [rec.path for rec in up.received] == ["/before"]
    assert proxy.stat("http.ingress.downstream_cx_protocol_error") == 1


async def test_bad_request_in_a_pipeline_stops_the_pipeline(
    proxied: tuple[Any, Upstream],
) -> None:
    """Envoy answers the good request, then 400s the bad one and closes: never the third."""
    proxy, up = proxied
    async with await AsyncConnection.open(*proxy.address) as conn:
        await conn.send(
            build_request("GET", "/one", host="svc")
            + b"GET / HTTP/1.1\r\nHost: svc\r\nBad Header: x\r\n\r\n"
            + build_request("GET", "/never", host="svc")
        )
        statuses = [(await conn.read_response()).status]
        statuses.append((await conn.read_response()).status)
        assert statuses == [200, 400]
        assert await conn.wait_closed_by_peer(3.0)
    assert [rec.path for rec in up.received] == ["/one"]


async def test_slow_headers_get_408(proxied: tuple[Any, Upstream]) -> None:
    proxy, up = proxied
    async with await AsyncConnection.open(*proxy.address) as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: svc\r\n")  # the head never ends
        r = await conn.read_response(timeout=3.0)
        assert (r.status, r.body) == (408, b"request header timeout")
        assert r.header("connection") == "close"
        assert r.elapsed < 2.0
        assert await conn.wait_closed_by_peer(3.0)
    assert up.stats.requests == 0
    assert proxy.stat("http.ingress.downstream_rq_header_timeout") == 1


async def test_idle_connection_is_not_a_slow_request(proxied: tuple[Any, Upstream]) -> None:
    """request_headers_timeout starts with the first byte of a request, not at accept."""
    import asyncio

    proxy, _ = proxied
    async with await AsyncConnection.open(*proxy.address) as conn:
        await asyncio.sleep(0.5)
        assert (await conn.request("GET", "/", host="svc")).status == 200


@pytest.mark.parametrize(
    "behaviour",
    [
        CloseMidResponse(body_bytes=100, content_length=1000),
        Reset(after_headers=True, body_bytes=100, content_length=1000),
    ],
    ids=["fin", "rst"],
)
async def test_upstream_dying_mid_response_resets_downstream(
    behaviour: Any, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0), routes={"/die": behaviour})
    proxy = await start_proxy(one_cluster(listen_address(), up))
    async with await AsyncConnection.open(*proxy.address) as conn:
        await conn.send(build_request("GET", "/die", host="svc"))
        with pytest.raises(IncompleteResponse) as err:
            await conn.read_response(timeout=3.0)
        # The head went out; then the connection ends without the promised body, promptly.
        assert err.value.status == 200 and len(err.value.body) < 1000
    assert proxy.stat("cluster.backend.upstream_rq_rx_reset") == 1
    assert proxy.stat("http.ingress.downstream_rq_tx_reset") == 1


async def test_upstream_closing_before_response_gives_503(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    from tests.support.upstream import Close

    up = await upstream_factory(upstream_ip(0), routes={"/close": Close(), "/slow": Delay(5)})
    proxy = await start_proxy(one_cluster(listen_address(), up))
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("GET", "/close", host="svc")
        assert r.status == 503
        assert r.body == (
            b"upstream connect error or disconnect/reset before headers. "
            b"reset reason: connection termination"
        )
        assert not r.will_close
        assert (await conn.request("GET", "/ok", host="svc")).status == 200
