"""HTTP/2 clients through the proxy to an HTTP/1.1 upstream: prior-knowledge h2c
(``codec_type: HTTP2``), the ``AUTO`` inference from the client preface, many streams on one
connection, bodies both ways with flow control, resets, GOAWAY on drain, bad frames.

The client is the pure-Python ``h2`` library (an implementation independent of the proxy's
libnghttp2 codec) and, for one case, curl's nghttp2.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.codec import NEED_DATA
from proxy.codec.h2 import H2ClientConnection
from proxy.codec.h2_events import H2Data, H2GoAway, H2Response
from tests.proxy.runtime.bootstrap import bootstrap, cluster, direct, hcm, listener, route, vhost
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.proxy.runtime.test_tls import _self_signed, _tls_listener
from tests.support.h2client import H2Client
from tests.support.httpclient import AsyncConnection
from tests.support.upstream import Chunked, Hang, Held, Stream, Upstream, stream_sha256
from tests.support.waiting import wait_until

NO_ERROR, PROTOCOL_ERROR, CANCEL = 0, 1, 8


def h2_config(
    listen: tuple[str, int], up: Upstream, *, codec: str = "HTTP2", **hcm_extra: Any
) -> dict[str, Any]:
    routes = [direct(404, "nothing here", match={"prefix": "/direct"}), route("/")]
    return bootstrap(
        [listener(listen, hcm([vhost(routes)], codec_type=codec, **hcm_extra))],
        [cluster("backend", [up.address])],
    )


async def test_prior_knowledge_request_reaches_an_http1_upstream_as_envoy_sends_it(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(h2_config(listen_address(), up))
    async with await H2Client.open(*proxy.address) as client:
        reply = await client.request(
            "GET", "/a/b?q=1", authority="svc.example:8080", headers=[("x-custom", "1")]
        )
    assert reply.status == 200, reply
    doc = json.loads(reply.body)
    assert doc["method"] == "GET" and doc["path"] == "/a/b?q=1"
    # :authority reaches the HTTP/1.1 upstream as Host; the pseudo-headers do not.
    assert doc["headers"]["host"] == "svc.example:8080"
    assert doc["headers"]["x-custom"] == "1"
    assert doc["headers"]["x-forwarded-proto"] == "http"
    assert "x-request-id" in doc["headers"]
    assert not any(name.startswith(":") for name in doc["headers"])
    # The HTTP/1.1 upstream's framing does not leak into the HTTP/2 response.
    names = {name for name, _ in reply.headers}
    assert {"connection", "keep-alive", "transfer-encoding"}.isdisjoint(names)
    assert reply.header("server") == "envoy" and reply.header("date")
    assert proxy.stat("http.ingress.downstream_cx_http2_total") == 1
    assert proxy.stat("http.ingress.downstream_rq_http2_total") == 1
    assert proxy.stat("http.ingress.downstream_cx_http1_total") == 0


async def test_auto_codec_serves_http1_and_h2c_on_one_listener(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(h2_config(listen_address(), up, codec="AUTO"))
    async with await AsyncConnection.open(*proxy.address) as conn:
        assert (await conn.request("GET", "/h1", host="svc")).status == 200
    async with await H2Client.open(*proxy.address) as client:
        replies = [await client.request("GET", f"/h2/{i}") for i in range(3)]
    assert [r.status for r in replies] == [200, 200, 200]
    assert proxy.stat("http.ingress.downstream_cx_http1_total") == 1
    assert proxy.stat("http.ingress.downstream_cx_http2_total") == 1
    assert proxy.stat("http.ingress.downstream_rq_http1_total") == 1
    assert proxy.stat("http.ingress.downstream_rq_http2_total") == 3
    assert proxy.stat("http.ingress.downstream_cx_total") == 2


async def test_preface_split_across_reads_is_still_recognised(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(h2_config(listen_address(), up, codec="AUTO"))
    reader, writer = await asyncio.open_connection(*proxy.address)
    try:
        for piece in (b"PRI * HT", b"TP/2.0\r\n", b"\r\nSM\r\n\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0)
        # The proxy's SETTINGS frame: 9-byte header, type 0x4.
        header = await asyncio.wait_for(reader.readexactly(9), 5.0)
        assert header[3] == 0x4
    finally:
        writer.close()
    await wait_until(lambda: proxy.stat("http.ingress.downstream_cx_http2_total") == 1, "stat")


async def test_many_streams_share_one_connection(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0), routes={"/held": Held("g")})
    proxy = await start_proxy(h2_config(listen_address(), up))
    async with await H2Client.open(*proxy.address) as client:
        sids = [client.start("GET", "/held", headers=[("x-n", str(i))]) for i in range(20)]
        # All twenty are in flight upstream at once: the streams did not wait on each other.
        await wait_until(lambda: up.stats.requests == 20, "the condition")
        up.release("g")
        replies = [await client.wait(sid) for sid in sids]
    assert [r.status for r in replies] == [200] * 20
    seen = sorted(int(json.loads(r.body)["headers"]["x-n"]) for r in replies)
    assert seen == list(range(20))


async def test_request_and_response_bodies_with_flow_control(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    size = 3 * 1024 * 1024
    up = await upstream_factory(upstream_ip(0), routes={"/big": Stream(size, chunked=True)})
    proxy = await start_proxy(h2_config(listen_address(), up))
    body = bytes(range(256)) * 8192  # 2 MiB, more than the client's default 64 KiB window
    async with await H2Client.open(*proxy.address) as client:
        # Without content-length the HTTP/1.1 upstream gets it chunked.
        reply = await client.request("POST", "/echo", body=body, timeout=15.0)
        doc = json.loads(reply.body)
        assert doc["body_length"] == len(body)
        assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert doc["headers"].get("transfer-encoding") == "chunked"
        reply = await client.request(
            "POST", "/echo", body=body, headers=[("content-length", str(len(body)))]
        )
        doc = json.loads(reply.body)
        assert doc["headers"]["content-length"] == str(len(body))
        assert doc["body_length"] == len(body)
        big = await client.request("GET", "/big", timeout=15.0)
    assert big.status == 200 and len(big.body) == size
    assert hashlib.sha256(big.body).hexdigest() == stream_sha256(size)


async def test_upstream_trailers_reach_the_h2_client(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0), routes={"/t": Chunked()})
    proxy = await start_proxy(h2_config(listen_address(), up))
    async with await H2Client.open(*proxy.address) as client:
        reply = await client.request("GET", "/t")
    assert reply.status == 200 and reply.body == b"hello world"


async def test_local_replies_and_a_client_reset_stream(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0), routes={"/hang": Hang()})
    proxy = await start_proxy(h2_config(listen_address(), up))
    async with await H2Client.open(*proxy.address) as client:
        reply = await client.request("GET", "/direct")
        assert reply.status == 404 and reply.body == b"nothing here"
        sid = client.start("GET", "/hang")
        await wait_until(lambda: up.stats.requests == 1, "the condition")
        client.reset(sid, CANCEL)
        await wait_until(lambda: proxy.stat("http.ingress.downstream_rq_rx_reset") == 1, "stat")
        # The connection is still good for the next stream.
        assert (await client.request("GET", "/after")).status == 200
    # The abandoned upstream exchange was given up, not left hanging.
    await wait_until(lambda: proxy.stat("cluster.backend.upstream_rq_active") == 0, "stat")


async def test_response_before_request_end_resets_the_rest_with_no_error(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(h2_config(listen_address(), up))
    async with await H2Client.open(*proxy.address) as client:
        sid = client.start("POST", "/direct", end_stream=False)
        await client.send_body(sid, b"part", end_stream=False)
        reply = await client.wait(sid)
        assert reply.status == 404
        # The client may stop sending: the proxy ended the stream with RST_STREAM NO_ERROR.
        await wait_until(lambda: client.replies[sid].reset_code is not None, "the condition")
        assert client.replies[sid].reset_code == NO_ERROR
        assert (await client.request("GET", "/next")).status == 200


async def test_bad_frames_end_the_connection_and_reach_no_upstream(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(h2_config(listen_address(), up))
    reader, writer = await asyncio.open_connection(*proxy.address)
    try:
        # A valid preface and SETTINGS, then HEADERS on stream 2 (even: server-initiated).
        writer.write(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            + b"\x00\x00\x01\x01\x05\x00\x00\x00\x02\x82"
        )
        data = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
    # The last frame before the close is a GOAWAY with PROTOCOL_ERROR.
    frames = _frames(data)
    goaways = [payload for kind, payload in frames if kind == 0x7]
    assert goaways and int.from_bytes(goaways[-1][4:8], "big") == PROTOCOL_ERROR
    assert up.stats.requests == 0
    assert proxy.stat("http.ingress.downstream_cx_protocol_error") == 1


async def test_drain_sends_goaway_and_lets_the_stream_in_flight_finish(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    # The h2 library treats any GOAWAY as the end of the connection, so this client is the
    # sans-I/O codec's client role, driven by hand.
    up = await upstream_factory(upstream_ip(0), routes={"/held": Held("g")})
    proxy = await start_proxy(h2_config(listen_address(), up, drain_timeout="0.2s"))
    reader, writer = await asyncio.open_connection(*proxy.address)
    client = H2ClientConnection()
    events: list[object] = []

    async def pump(until: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not until():
                writer.write(client.data_to_send())
                data = await reader.read(65536)
                if not data:
                    return
                client.receive_data(data)
                while (event := client.next_event()) is not NEED_DATA:
                    events.append(event)
                    if isinstance(event, H2Data):
                        client.consumed(event.stream_id, len(event.data))

        await asyncio.wait_for(loop(), 10.0)

    try:
        sid = client.send_request(b"GET", b"http", b"svc", b"/held", [], end_stream=True)
        writer.write(client.data_to_send())
        await wait_until(lambda: up.stats.requests == 1, "the request upstream")
        proxy.server.listener_manager.drain_connections()
        # First the shutdown notice (last stream 2^31-1), then the final GOAWAY naming stream 1.
        await pump(lambda: sum(isinstance(e, H2GoAway) for e in events) >= 2)
        goaways = [e for e in events if isinstance(e, H2GoAway)]
        assert [g.last_stream_id for g in goaways] == [2**31 - 1, sid]
        assert all(g.error_code == NO_ERROR for g in goaways)
        up.release("g")
        await pump(lambda: any(isinstance(e, H2Data) and e.end_stream for e in events))
        responses = [e for e in events if isinstance(e, H2Response)]
        assert responses[0].status == 200
        # Then the proxy closes the connection.
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
    finally:
        writer.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_curl_with_http2_prior_knowledge(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(h2_config(listen_address(), up, codec="AUTO"))
    host, port = proxy.address
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_version} %{http_code}",
        "-H", "host: svc", f"http://{host}:{port}/curl",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 15.0)
    assert proc.returncode == 0, err
    body, _, tail = out.rpartition(b"\n")
    assert tail == b"2 200"
    assert json.loads(body)["path"] == "/curl"


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """(type, payload) of each whole frame after any leading bytes."""
    frames = []
    i = 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i : i + 3], "big")
        frames.append((data[i + 3], data[i + 9 : i + 9 + length]))
        i += 9 + length
    return frames


async def test_alpn_h2_over_tls_with_codec_auto(
    tmp_path: Path, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    address = listen_address()
    cert, key = _self_signed(tmp_path, "h2.example.com", address[0])
    tls_listener = _tls_listener(address, cert, key, hcm([vhost([route("/")])]))
    context = tls_listener["filter_chains"][0]["transport_socket"]["typed_config"]
    context["common_tls_context"]["alpn_protocols"] = ["h2", "http/1.1"]
    proxy = await start_proxy(bootstrap([tls_listener], [cluster("backend", [up.address])]))
    client_tls = ssl.create_default_context(cafile=str(cert))
    client_tls.set_alpn_protocols(["h2"])
    async with await H2Client.open(
        *address, tls=client_tls, server_name="h2.example.com"
    ) as client:
        reply = await client.request("GET", "/tls", authority="h2.example.com", scheme="https")
    assert reply.status == 200
    assert json.loads(reply.body)["headers"]["x-forwarded-proto"] == "https"
    assert proxy.stat("http.ingress.downstream_cx_http2_total") == 1
    # A client that offers only HTTP/1.1 gets HTTP/1.1 on the same listener.
    http1_tls = ssl.create_default_context(cafile=str(cert))
    http1_tls.set_alpn_protocols(["http/1.1"])
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(*address, ssl=http1_tls, server_hostname="h2.example.com"), 5
    )
    writer.write(b"GET /one HTTP/1.1\r\nHost: h2.example.com\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200 ")
    writer.close()
    assert proxy.stat("http.ingress.downstream_cx_http1_total") == 1
