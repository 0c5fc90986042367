"""Clusters that speak HTTP/2 to their hosts (``explicit_http_config.http2_protocol_options``):
HTTP/1.1 and HTTP/2 clients through the proxy to an HTTP/2 origin, many streams on one
connection, the server's stream limit, ``max_requests_per_connection``, bodies and trailers
both ways, RST_STREAM and GOAWAY with Envoy's reset reasons, flags and retries.

The origin is the pure-Python ``h2`` library (:mod:`tests.support.h2upstream`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.proxy.runtime.bootstrap import bootstrap, cluster, direct, hcm, listener, route, vhost
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support.h2client import H2Client
from tests.support.h2upstream import H2Echo, H2GoAway, H2Held, H2Reset, H2Upstream
from tests.support.httpclient import AsyncConnection
from tests.support.procs import free_port
from tests.support.waiting import wait_until

H2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}
H2Factory = Callable[..., Awaitable[H2Upstream]]


@pytest.fixture
async def h2_upstream() -> AsyncIterator[H2Factory]:
    started: list[H2Upstream] = []

    async def make(host: str, **kw: Any) -> H2Upstream:
        up = H2Upstream(host, **kw)
        started.append(up)
        return await up.start()

    yield make
    for up in reversed(started):
        await up.stop()


def h2_cluster_config(
    listen: tuple[str, int],
    endpoint: tuple[str, int],
    *,
    route_extra: dict[str, Any] | None = None,
    cluster_extra: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    protocol = json.loads(json.dumps(H2_OPTIONS))
    key = next(iter(protocol))
    protocol[key].update(options or {})
    return bootstrap(
        [listener(listen, hcm([vhost([route("/", **(route_extra or {}))])]))],
        [
            cluster(
                "backend",
                [endpoint],
                typed_extension_protocol_options=protocol,
                **(cluster_extra or {}),
            )
        ],
    )


async def test_http1_client_to_h2_origin_as_envoy_translates(
    h2_upstream: H2Factory, start_proxy: StartProxy
) -> None:
    up = await h2_upstream(upstream_ip(0))
    proxy = await start_proxy(h2_cluster_config(listen_address(), up.address))
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request(
            "GET", "/a?b=1", host="svc.example", headers=[("x-custom", "1"), ("te", "trailers")]
        )
        assert r.status == 200
        doc = r.json()
        # Host became :authority; hop-by-hop fields stayed behind, te: trailers passed.
        assert doc["authority"] == "svc.example" and doc["path"] == "/a?b=1"
        assert "host" not in doc["headers"] and "connection" not in doc["headers"]
        assert doc["headers"]["x-custom"] == "1" and doc["headers"]["te"] == "trailers"
        assert doc["headers"]["x-forwarded-proto"] == "http"
        assert r.header("content-length") == str(len(r.body))
        r = await conn.request("POST", "/post", host="svc", body=b"x" * 1000)
        assert r.json()["body_length"] == 1000
    assert proxy.stat("cluster.backend.upstream_cx_http2_total") == 1
    assert proxy.stat("cluster.backend.upstream_cx_http1_total") == 0
    assert up.connections == 1 and up.streams == 2


async def test_concurrent_requests_share_one_connection(
    h2_upstream: H2Factory, start_proxy: StartProxy
) -> None:
    up = await h2_upstream(upstream_ip(0), routes={"/held": H2Held("g")})
    proxy = await start_proxy(h2_cluster_config(listen_address(), up.address))
    async with await H2Client.open(*proxy.address) as client:
        sids = [client.start("GET", "/held", headers=[("x-n", str(i))]) for i in range(30)]
        await wait_until(lambda: up.peak_concurrency == 30, "30 streams open upstream")
        up.release("g")
        replies = [await client.wait(sid) for sid in sids]
    assert [r.status for r in replies] == [200] * 30
    assert sorted(int(json.loads(r.body)["headers"]["x-n"]) for r in replies) == list(range(30))
    assert up.connections == 1
    assert proxy.stat("cluster.backend.upstream_cx_total") == 1


async def test_the_servers_stream_limit_is_respected(
    h2_upstream: H2Factory, start_proxy: StartProxy
) -> None:
    up = await h2_upstream(upstream_ip(0), routes={"/held": H2Held("g")}, max_concurrent_streams=5)
    proxy = await start_proxy(h2_cluster_config(listen_address(), up.address))
    async with await H2Client.open(*proxy.address) as client:
        # One request first, so the proxy has the server's SETTINGS before the burst.
        assert (await client.request("GET", "/warm")).status == 200
        sids = [client.start("GET", "/held") for _ in range(12)]
        await wait_until(lambda: up.peak_concurrency == 5, "five streams upstream")
        up.release("g")
        replies = [await client.wait(sid) for sid in sids]
    assert [r.status for r in replies] == [200] * 12
    assert up.peak_concurrency == 5
    assert up.streams == 13


async def test_max_requests_per_connection_rotates_connections(
    h2_upstream: H2Factory, start_proxy: StartProxy
) -> None:
    up = await h2_upstream(upstream_ip(0))
    config = h2_cluster_config(
        listen_address(),
        up.address,
        options={"common_http_protocol_options": {"max_requests_per_connection": 3}},
    )
    proxy = await start_proxy(config)
    async with await AsyncConnection.open(*proxy.address) as conn:
        for i in range(7):
            assert (await conn.request("GET", f"/{i}", host="svc")).status == 200
    assert up.connections == 3
    await wait_until(lambda: len(up.open) == 1, "the used-up connections closed")


async def test_bodies_and_trailers_both_ways(
    h2_upstream: H2Factory, start_proxy: StartProxy
) -> None:
    big = bytes(range(256)) * 12288  # 3 MiB
    up = await h2_upstream(
        upstream_ip(0),
        routes={
            "/big": H2Echo(body=big),
            "/trailers": H2Echo(trailers=(("grpc-status", "0"), ("x-t", "1"))),
        },
    )
    proxy = await start_proxy(h2_cluster_config(listen_address(), up.address))
    body = bytes(range(251)) * 9000
    async with await H2Client.open(*proxy.address) as client:
        reply = await client.request("POST", "/echo", body=body, timeout=15.0)
        doc = json.loads(reply.body)
        assert doc["body_length"] == len(body)
        assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
        reply = await client.request("GET", "/big", timeout=15.0)
        assert reply.status == 200 and reply.body == big
        # Request trailers reach the origin, response trailers reach the client.
        reply = await client.request(
            "POST",
            "/trailers",
            body=b"payload",
            trailers=[("x-req-trailer", "yes")],
            headers=[("te", "trailers")],
        )
        assert json.loads(reply.body)["trailers"] == {"x-req-trailer": "yes"}
        assert ("grpc-status", "0") in reply.trailers and ("x-t", "1") in reply.trailers
    # An HTTP/1.1 client gets the body chunked (its trailers dropped, as Envoy does by default).
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("GET", "/trailers", host="svc")
        assert r.status == 200 and json.loads(r.body)["path"] == "/trailers"
        r = await conn.request("POST", "/echo", host="svc", body=body)
        assert r.json()["body_length"] == len(body)


async def test_upstream_reset_before_headers_is_a_remote_reset(
    h2_upstream: H2Factory, start_proxy: StartProxy
) -> None:
    up = await h2_upstream(upstream_ip(0), routes={"/reset": H2Reset(code=2)})
    proxy = await start_proxy(h2_cluster_config(listen_address(), up.address))
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("GET", "/reset", host="svc")
        assert r.status == 503
        assert r.body.endswith(b"reset reason: remote reset")
        # The connection survives a stream reset: the next request reuses it.
        assert (await conn.request("GET", "/ok", host="svc")).status == 200
    assert up.connections == 1


async def test_upstream_reset_is_retried_with_retry_on_reset(
    h2_upstream: H2Factory, start_proxy: StartProxy
) -> None:
    up = await h2_upstream(upstream_ip(0), routes={"/reset": H2Reset(code=2)})
    config = h2_cluster_config(
        listen_address(),
        up.address,
        route_extra={"retry_policy": {"retry_on": "reset", "num_retries": 2}},
    )
    proxy = await start_proxy(config)
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("GET", "/reset", host="svc")
    assert r.status == 503 and b"retried and the latest reset reason: remote reset" in r.body
    assert up.streams == 3
    assert proxy.stat("cluster.backend.upstream_rq_retry") == 2


async def test_goaway_refuses_the_stream_and_refused_stream_retries_it(
    h2_upstream: H2Factory, start_proxy: StartProxy
) -> None:
    up = await h2_upstream(upstream_ip(0), routes={"/goaway": H2GoAway()})
    config = h2_cluster_config(
        listen_address(),
        up.address,
        route_extra={"retry_policy": {"retry_on": "refused-stream", "num_retries": 1}},
    )
    proxy = await start_proxy(config)
    async with await AsyncConnection.open(*proxy.address) as conn:
        assert (await conn.request("GET", "/first", host="svc")).status == 200
        # The server's GOAWAY names stream 1 as its last: stream 3 was never processed, and
        # the retry goes on a new connection.
        r = await conn.request("GET", "/goaway", host="svc")
        assert r.status == 200 and json.loads(r.body)["path"] == "/goaway"
    assert up.connections == 2
    assert proxy.stat("cluster.backend.upstream_rq_retry") == 1


async def test_goaway_without_a_retry_policy_is_a_refused_stream_reset(
    h2_upstream: H2Factory, start_proxy: StartProxy
) -> None:
    up = await h2_upstream(upstream_ip(0), routes={"/goaway": H2GoAway()})
    proxy = await start_proxy(h2_cluster_config(listen_address(), up.address))
    async with await AsyncConnection.open(*proxy.address) as conn:
        assert (await conn.request("GET", "/first", host="svc")).status == 200
        r = await conn.request("GET", "/goaway", host="svc")
        assert r.status == 503
        assert r.body.endswith(b"reset reason: remote refused stream reset")
        # The next request opens a new connection: the old one takes no more streams.
        assert (await conn.request("GET", "/after", host="svc")).status == 200
    assert up.connections == 2


async def test_connect_failure_to_an_h2_cluster(start_proxy: StartProxy) -> None:
    dead = (upstream_ip(1), free_port(upstream_ip(1)))
    proxy = await start_proxy(h2_cluster_config(listen_address(), dead))
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("GET", "/", host="svc")
    assert r.status == 503
    assert b"reset reason: remote connection failure" in r.body
    assert proxy.stat("cluster.backend.upstream_cx_connect_fail") == 1


async def test_a_client_reset_resets_the_upstream_stream(
    h2_upstream: H2Factory, start_proxy: StartProxy
) -> None:
    up = await h2_upstream(upstream_ip(0), routes={"/held": H2Held("never")})
    proxy = await start_proxy(h2_cluster_config(listen_address(), up.address))
    async with await H2Client.open(*proxy.address) as client:
        sid = client.start("GET", "/held")
        await wait_until(lambda: up.streams == 1, "the stream upstream")
        client.reset(sid)
        await wait_until(lambda: up.resets_received, "the reset upstream")
        assert (await client.request("GET", "/next")).status == 200
    assert up.connections == 1


async def test_a_headers_only_answer_keeps_its_framing(
    h2_upstream: H2Factory, start_proxy: StartProxy
) -> None:
    trailers_only = (("content-type", "application/grpc"), ("grpc-status", "5"))
    up = await h2_upstream(upstream_ip(0), routes={"/ho": H2Echo(headers_only=trailers_only)})
    proxy = await start_proxy(h2_cluster_config(listen_address(), up.address))
    # An HTTP/2 client gets HEADERS with END_STREAM: a gRPC trailers-only answer stays one.
    async with await H2Client.open(*proxy.address) as client:
        reply = await client.request("GET", "/ho")
    assert reply.status == 200 and reply.header("grpc-status") == "5" and reply.body == b""
    assert reply.trailers == []
    # An HTTP/1.1 client gets an explicit zero length, as Envoy frames it.
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("GET", "/ho", host="svc")
    assert r.status == 200 and r.header("content-length") == "0"
    assert r.header("transfer-encoding") is None


async def test_keepalive_gives_up_on_a_silent_server(start_proxy: StartProxy) -> None:
    # A server that accepts and reads but never answers anything, PINGs included.
    host = upstream_ip(3)
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(silent, host, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        options = {
            "explicit_http_config": {
                "http2_protocol_options": {
                    "connection_keepalive": {"interval": "0.1s", "timeout": "0.2s"}
                }
            }
        }
        proxy = await start_proxy(
            h2_cluster_config(listen_address(), (host, port), options=options)
        )
        async with await AsyncConnection.open(*proxy.address) as conn:
            r = await conn.request("GET", "/", host="svc", timeout=5.0)
        assert r.status == 503
        assert r.body.endswith(b"reset reason: connection termination")
        assert proxy.stat("cluster.backend.upstream_cx_destroy_local") == 1
    finally:
        for writer in accepted:
            writer.close()
        server.close()


async def test_keepalive_pings_keep_an_answering_server(
    h2_upstream: H2Factory, start_proxy: StartProxy
) -> None:
    up = await h2_upstream(upstream_ip(0), routes={"/held": H2Held("g")})
    options = {
        "explicit_http_config": {
            "http2_protocol_options": {
                "connection_keepalive": {"interval": "0.05s", "timeout": "1s"}
            }
        }
    }
    proxy = await start_proxy(h2_cluster_config(listen_address(), up.address, options=options))
    async with await AsyncConnection.open(*proxy.address) as conn:
        task = asyncio.ensure_future(conn.request("GET", "/held", host="svc", timeout=5.0))
        # Several PINGs come and are answered while the request waits.
        await wait_until(lambda: up.pings >= 3, "keepalive PINGs")
        up.release("g")
        assert (await task).status == 200
    assert up.connections == 1


async def test_use_downstream_protocol_follows_each_request(start_proxy: StartProxy) -> None:
    # The origin is a second listener of the same proxy: it speaks both protocols (codec AUTO)
    # and counts which one each connection used.
    origin = listen_address(upstream_ip(4))
    front = listen_address()
    options = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "use_downstream_protocol_config": {
                "http_protocol_options": {},
                "http2_protocol_options": {},
            },
        }
    }
    config = bootstrap(
        [
            listener(front, hcm([vhost([route("/", cluster="dual")])])),
            listener(
                origin, hcm([vhost([direct(200, "origin")])], stat_prefix="origin"), name="origin"
            ),
        ],
        [cluster("dual", [origin], typed_extension_protocol_options=options)],
    )
    proxy = await start_proxy(config)
    async with await AsyncConnection.open(*front) as conn:
        r = await conn.request("GET", "/", host="svc")
        assert r.status == 200 and r.body == b"origin"
    async with await H2Client.open(*front) as client:
        reply = await client.request("GET", "/")
        assert reply.status == 200 and reply.body == b"origin"
    assert proxy.stat("cluster.dual.upstream_cx_http1_total") == 1
    assert proxy.stat("cluster.dual.upstream_cx_http2_total") == 1
    assert proxy.stat("http.origin.downstream_cx_http1_total") == 1
    assert proxy.stat("http.origin.downstream_cx_http2_total") == 1
