"""The downstream side: keep-alive, bodies, headers the proxy adds or removes, local answers."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support.httpclient import AsyncConnection, build_request, request
from tests.support.upstream import Chunked, Fixed, RawResponse, Stream, Upstream, stream_body

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def one_cluster(
    listen: tuple[str, int], up: Upstream, *, route_extra: Any = None, **hcm_extra: Any
) -> dict[str, Any]:
    routes = [route("/", **(route_extra or {}))]
    return bootstrap(
        [listener(listen, hcm([vhost(routes)], **hcm_extra))],
        [cluster("backend", [up.address])],
    )


async def test_keep_alive_both_sides_reuses_one_upstream_connection(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(one_cluster(listen_address(), up))
    async with await AsyncConnection.open(*proxy.address) as conn:
        for i in range(5):
            r = await conn.request("GET", f"/a{i}", host="svc")
            assert r.status == 200 and not r.will_close
            assert r.json()["index_on_connection"] == i + 1
    # A second client connection, after the first closed, still finds the pooled connection.
    async with await AsyncConnection.open(*proxy.address) as conn:
        for _ in range(3):
            assert (await conn.request("GET", "/b", host="svc")).status == 200
    assert up.stats.requests == 8
    assert up.stats.connections == 1
    assert proxy.stat("cluster.backend.upstream_cx_total") == 1
    assert proxy.stat("http.ingress.downstream_cx_total") == 2


async def test_concurrent_clients_open_one_upstream_connection_each(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    from tests.support.upstream import Delay

    up = await upstream_factory(upstream_ip(0), default=Delay(0.2))
    proxy = await start_proxy(one_cluster(listen_address(), up))
    conns = [await AsyncConnection.open(*proxy.address) for _ in range(3)]
    try:
        rs = await asyncio.gather(*(c.request("GET", "/", host="svc") for c in conns))
        assert [r.status for r in rs] == [200, 200, 200]
        # HTTP/1.1 upstream: one request per connection at a time, as Envoy's pool.
        assert up.stats.connections == 3
        rs = await asyncio.gather(*(c.request("GET", "/", host="svc") for c in conns))
        assert up.stats.connections == 3 and up.stats.requests == 6
    finally:
        for c in conns:
            await c.close()


async def test_request_bodies_content_length_and_chunked(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(one_cluster(listen_address(), up))
    body = bytes(range(256)) * 300
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("POST", "/cl", body=body, host="svc")
        doc = r.json()
        assert doc["body_length"] == len(body)
        assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert doc["headers"]["content-length"] == str(len(body))
        chunks = [b"first,", b"second," * 1000, b"third"]
        r = await conn.request("PUT", "/chunked", body=chunks, host="svc")
        doc = r.json()
        assert doc["body_length"] == sum(map(len, chunks))
        assert doc["body_sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()
        # Chunked in, chunked (or re-framed with a length) out: never both.
        framing = {"content-length", "transfer-encoding"} & set(doc["headers"])
        assert len(framing) == 1
        assert up.received[-1].body == b"".join(chunks)


async def test_response_bodies_content_length_chunked_and_close_delimited(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    routes = {
        "/fixed": Fixed(200, b"x" * 5000),
        "/chunked": Chunked((b"hello ", b"chunked ", b"world"), interval=0.01),
        "/stream": Stream(300_000, chunked=True),
        "/eof": RawResponse(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil close", close=True),
    }
    up = await upstream_factory(upstream_ip(0), routes=routes)
    proxy = await start_proxy(one_cluster(listen_address(), up))
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("GET", "/fixed", host="svc")
        assert (r.status, r.body, r.header("content-length")) == (200, b"x" * 5000, "5000")
        r = await conn.request("GET", "/chunked", host="svc")
        assert r.body == b"hello chunked world"
        assert r.header("transfer-encoding") == "chunked" and r.header("content-length") is None
        r = await conn.request("GET", "/stream", host="svc")
        assert r.body == stream_body(300_000)
        # A close-delimited upstream body reaches the client chunked, on a kept-alive connection.
        r = await conn.request("GET", "/eof", host="svc")
        assert r.body == b"until close" and not r.will_close
        assert (await conn.request("GET", "/fixed", host="svc")).status == 200


async def test_expect_100_continue_answered_by_the_proxy(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(one_cluster(listen_address(), up))
    async with await AsyncConnection.open(*proxy.address) as conn:
        head = build_request(
            "POST", "/upload", [("Expect", "100-continue"), ("Content-Length", "5")], host="svc"
        )
        await conn.send(head)
        # The client waits for 100 before it sends the body: the proxy must send it.
        data = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 3.0)
        assert data.startswith(b"HTTP/1.1 100 Continue\r\n")
        await conn.send(b"hello")
        r = await conn.read_response("POST")
        assert r.status == 200
        doc = r.json()
        assert doc["body_length"] == 5 and "expect" not in doc["headers"]


async def test_hop_by_hop_headers_removed_both_ways(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n"
        b"keep-alive: timeout=5\r\nproxy-connection: keep-alive\r\nx-end-to-end: yes\r\n\r\nok"
    )
    up = await upstream_factory(upstream_ip(0), routes={"/raw": RawResponse(raw)})
    proxy = await start_proxy(one_cluster(listen_address(), up))
    hop = [
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("X-Keep", "kept"),
    ]
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("GET", "/echo", hop, host="svc")
        seen = r.json()["headers"]
        for name in ("connection", "keep-alive", "proxy-connection"):
            assert name not in seen, name
        assert seen["x-keep"] == "kept"
        r = await conn.request("GET", "/raw", host="svc")
        assert r.body == b"ok" and r.header("x-end-to-end") == "yes"
        for name in ("connection", "keep-alive", "proxy-connection"):
            assert r.header(name) is None, name


async def test_forwarded_proto_request_id_service_time_and_server(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(
        upstream_ip(0), routes={"/srv": Fixed(200, b"s", (("server", "origin/1.0"),))}
    )
    proxy = await start_proxy(one_cluster(listen_address(), up))
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("GET", "/", host="svc")
        seen = r.json()["headers"]
        assert seen["x-forwarded-proto"] == "http"
        assert UUID4.match(seen["x-request-id"])
        assert r.header("server") == "envoy"
        assert (r.header("x-envoy-upstream-service-time") or "").isdigit()
        r = await conn.request(
            "GET", "/", [("X-Request-Id", "given-id"), ("X-Forwarded-Proto", "https")], host="svc"
        )
        seen = r.json()["headers"]
        assert seen["x-request-id"] == "given-id"
        assert seen["x-forwarded-proto"] == "https"
        # Envoy's default server_header_transformation is OVERWRITE.
        r = await conn.request("GET", "/srv", host="svc")
        assert r.header_list("server") == ["envoy"]


async def test_server_name_and_transformations(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(
        upstream_ip(0), routes={"/srv": Fixed(200, b"s", (("server", "origin/1.0"),))}
    )
    a = await start_proxy(one_cluster(listen_address(), up, server_name="mesh-gw"))
    r = await request(*a.address, target="/srv", host_header="svc")
    assert r.header_list("server") == ["mesh-gw"]
    r = await request(*a.address, target="/", host_header="svc")
    assert r.header("server") == "mesh-gw"
    b = await start_proxy(
        one_cluster(listen_address(), up, server_header_transformation="PASS_THROUGH")
    )
    r = await request(*b.address, target="/srv", host_header="svc")
    assert r.header_list("server") == ["origin/1.0"]
    r = await request(*b.address, target="/", host_header="svc")
    assert r.header("server") is None
    c = await start_proxy(
        one_cluster(listen_address(), up, server_header_transformation="APPEND_IF_ABSENT")
    )
    assert (await request(*c.address, target="/srv", host_header="svc")).header_list("server") == [
        "origin/1.0"
    ]
    assert (await request(*c.address, target="/", host_header="svc")).header("server") == "envoy"


async def test_the_proxy_date_replaces_the_upstream_date(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """Envoy's date provider sets Date on every response: one header, the proxy's clock."""
    stale = "Mon, 01 Jan 2001 00:00:00 GMT"
    up = await upstream_factory(upstream_ip(0), routes={"/d": Fixed(200, b"d", (("date", stale),))})
    proxy = await start_proxy(one_cluster(listen_address(), up))
    r = await request(*proxy.address, target="/d", host_header="svc")
    dates = r.header_list("date")
    assert len(dates) == 1 and dates[0] != stale


async def test_head_response_has_length_but_no_body(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0), routes={"/doc": Fixed(200, b"y" * 1234)})
    proxy = await start_proxy(one_cluster(listen_address(), up))
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("HEAD", "/doc", host="svc")
        assert (r.status, r.body, r.header("content-length")) == (200, b"", "1234")
        # No stray body bytes left on the connection: the next response parses cleanly.
        r = await conn.request("GET", "/doc", host="svc")
        assert r.body == b"y" * 1234
        r = await conn.request("HEAD", "/stream-less", host="svc")
        assert r.status == 200 and r.body == b""
    assert [rec.method for rec in up.received] == ["HEAD", "GET", "HEAD"]


async def test_http10_gets_426_and_close(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(one_cluster(listen_address(), up))
    async with await AsyncConnection.open(*proxy.address) as conn:
        await conn.send(b"GET / HTTP/1.0\r\nHost: svc\r\n\r\n")
        r = await conn.read_response()
        assert r.status == 426
        assert await conn.wait_closed_by_peer(3.0)
    assert up.stats.requests == 0
    assert proxy.stat("http.ingress.downstream_rq_4xx") == 1


async def test_pipelined_requests_answered_in_order(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(one_cluster(listen_address(), up))
    async with await AsyncConnection.open(*proxy.address) as conn:
        await conn.send(b"".join(build_request("GET", f"/p{i}", host="svc") for i in range(4)))
        paths = [(await conn.read_response()).json()["path"] for _ in range(4)]
    assert paths == ["/p0", "/p1", "/p2", "/p3"]
