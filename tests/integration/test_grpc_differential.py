"""gRPC and HTTP/2 through the real Envoy 1.40 and through ``pymesh proxy`` on the same
bootstrap: the same calls from real grpcio clients to a real grpcio server (and raw HTTP/2 to
an origin that resets or refuses streams) must give the same statuses, messages, metadata,
trailers, access-log lines and stats.

Each proxy gets fresh upstreams, so stateful behaviours (a call that fails twice, then works)
replay identically.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.test_envoy_differential import admin_stats
from tests.proxy.runtime.bootstrap import bootstrap, cluster, direct, hcm, listener, route, vhost
from tests.support import ENVOY_DIFF_NET, address
from tests.support.envoy import PROXY_KINDS, find_envoy, make_proxy
from tests.support.grpc_echo import GrpcEcho, grpc_client_channel, method
from tests.support.h2client import H2Client
from tests.support.h2upstream import H2Echo, H2GoAway, H2Held, H2Reset, H2Upstream
from tests.support.httpclient import AsyncConnection
from tests.support.procs import free_port
from tests.support.upstream import Upstream
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(find_envoy() is None, reason="the envoy binary is not installed"),
]

PROXY = address(ENVOY_DIFF_NET, 5)
ADMIN = address(ENVOY_DIFF_NET, 6)
GRPC_UPSTREAM = address(ENVOY_DIFF_NET, 60)
RAW_UPSTREAM = address(ENVOY_DIFF_NET, 61)
H1_UPSTREAM = address(ENVOY_DIFF_NET, 62)
H2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}
LOG_FORMAT = (
    "%REQ(:PATH)% %RESPONSE_CODE% %GRPC_STATUS% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% "
    "%UPSTREAM_REQUEST_ATTEMPT_COUNT% %PROTOCOL%\n"
)
# Metadata whose values differ from run to run, compared for presence only.
VOLATILE = {"date", "x-envoy-upstream-service-time"}
# Byte counts depend on each side's HPACK choices; whether a request waited for a connection
# still being opened (pending) depends on timing on a busy machine; everything else must agree.
STATS_THAT_DIFFER_BY_DESIGN = ("_bytes_total", "_bytes_buffered", "_time", "_rq_pending_total")


def config(
    listen: tuple[str, int], log: Path, grpc_server: Any, raw: Any, http1: Any
) -> dict[str, Any]:
    routes = [
        direct(403, "denied here", match={"prefix": f"{method('Unary')}/denied"}),
        route(method("Sleep"), cluster="echo", timeout="0.3s"),
        route(
            method("Flaky"),
            cluster="echo",
            retry_policy={"retry_on": "unavailable", "num_retries": 2},
        ),
        # The client's grpc-timeout bounds the call, capped at 300 ms: one call within it, one
        # to an origin that never answers (so that only the proxy's own timer can end it).
        route(
            "/echo.Echo/DeadlineOk",
            cluster="echo",
            prefix_rewrite=method("Sleep"),
            max_stream_duration={"grpc_timeout_header_max": "0.3s"},
        ),
        route(
            "/echo.Echo/Deadline",
            cluster="raw",
            max_stream_duration={"grpc_timeout_header_max": "0.3s"},
        ),
        route("/echo.Echo/", cluster="echo"),
        route(
            "/raw/retried",
            cluster="raw",
            retry_policy={"retry_on": "refused-stream,reset", "num_retries": 1},
        ),
        route("/raw/", cluster="raw"),
        route("/h1/", cluster="h1"),
    ]
    access_log = {
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(log),
            "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}},
        },
    }
    return bootstrap(
        [
            listener(
                listen,
                hcm([vhost(routes, domains=["echo.svc"])], access_log=[access_log]),
            )
        ],
        [
            cluster("echo", [grpc_server.address], typed_extension_protocol_options=H2_OPTIONS),
            cluster("raw", [raw.address], typed_extension_protocol_options=H2_OPTIONS),
            cluster("h1", [http1.address]),
        ],
        admin=(ADMIN, free_port(ADMIN)),
    )


def _metadata(items: Any) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in items or ():
        if key in VOLATILE:
            value = "<present>"
        out.append((key, value if isinstance(value, str) else repr(value)))
    return tuple(sorted(out))


async def _unary(call: Any, request: bytes, **kw: Any) -> dict[str, Any]:
    future = call(request, **kw)
    try:
        response = await future
    except grpc.aio.AioRpcError as exc:
        return {
            "code": exc.code().name,
            "details": exc.details(),
            "initial": _metadata(exc.initial_metadata()),
            "trailing": _metadata(exc.trailing_metadata()),
        }
    return {
        "code": "OK",
        "response": hashlib.sha256(response).hexdigest()[:16],
        "initial": _metadata(await future.initial_metadata()),
        "trailing": _metadata(await future.trailing_metadata()),
    }


Case = Callable[[grpc.aio.Channel, tuple[str, int]], Awaitable[Any]]


async def _streams(channel: grpc.aio.Channel, _: tuple[str, int]) -> Any:
    server_stream = channel.unary_stream(method("ServerStream"))(b"100")
    received = [m async for m in server_stream]

    async def parts() -> AsyncIterator[bytes]:
        for i in range(30):
            yield b"y" * (i * 100)

    total = await channel.stream_unary(method("ClientStream"))(parts())
    bidi = channel.stream_stream(method("Bidi"))()
    echoed = []
    for i in range(10):
        await bidi.write(b"m%d" % i)
        echoed.append(await bidi.read())
    await bidi.done_writing()
    return {
        "server_stream": len(received),
        "last": received[-1],
        "client_stream": total,
        "bidi": echoed,
        "bidi_code": (await bidi.code()).name,
        "trailing": _metadata(await server_stream.trailing_metadata()),
    }


async def _concurrent(channel: grpc.aio.Channel, _: tuple[str, int]) -> Any:
    unary = channel.unary_unary(method("Unary"))
    replies = await asyncio.gather(*(unary(b"%d" % i) for i in range(300)))
    return replies == [b"%d" % i for i in range(300)]


async def _raw(path: str, listen: tuple[str, int]) -> Any:
    """A gRPC-shaped request by hand: what the client sees when the origin resets or refuses."""
    async with await H2Client.open(*listen) as client:
        if path == "/raw/goaway":
            await client.request("POST", "/raw/first", authority="echo.svc")
        reply = await client.request(
            "POST",
            path,
            authority="echo.svc",
            headers=[("content-type", "application/grpc"), ("te", "trailers")],
            body=b"\x00\x00\x00\x00\x00",
        )
    headers = {k: ("<present>" if k in VOLATILE else v) for k, v in reply.headers}
    body: Any = reply.body
    if headers.get("content-type") == "application/json":
        # The origin's description of the request it got; the request id is random.
        body = json.loads(body)
        body["headers"]["x-request-id"] = "<present>"
    return {
        "status": reply.status,
        "headers": headers,
        "body": body,
        "reset": reply.reset_code,
    }


async def _http1(
    listen: tuple[str, int],
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes | list[bytes] = b"",
) -> Any:
    """An HTTP/1.1 client to the HTTP/2 origin: what the translation both ways gives."""
    async with await AsyncConnection.open(*listen) as conn:
        r = await conn.request(method, path, headers, body, host="echo.svc")
    response_headers = {k: ("<present>" if k in VOLATILE else v) for k, v in r.headers}
    parsed: Any = r.body
    if response_headers.get("content-type") == "application/json":
        parsed = json.loads(r.body)
        parsed["headers"]["x-request-id"] = "<present>"
    return {"status": r.status, "headers": response_headers, "body": parsed}


async def _h2_to_http1(listen: tuple[str, int], name: str) -> Any:
    """An HTTP/2 client to an HTTP/1.1 origin (which echoes what it got as JSON)."""
    async with await H2Client.open(*listen) as client:
        if name == "cookies":
            reply = await client.request(
                "GET",
                "/h1/echo",
                authority="echo.svc",
                headers=[("cookie", "a=1"), ("cookie", "b=2")],
            )
        elif name == "streamed body":
            sid = client.start("POST", "/h1/echo", authority="echo.svc", end_stream=False)
            await client.send_body(sid, b"first ", end_stream=False)
            await client.send_body(sid, b"second", end_stream=True)
            reply = await client.wait(sid)
        else:  # request trailers: an HTTP/1.1 upstream without enable_trailers drops them
            reply = await client.request(
                "POST", "/h1/echo", authority="echo.svc", body=b"data", trailers=[("x-t", "1")]
            )
    # The origin's port and the request id differ per run; header order is not compared.
    volatile = VOLATILE | {"x-upstream-name"}
    headers = {k: ("<present>" if k in volatile else v) for k, v in reply.headers}
    body = json.loads(reply.body)
    body["headers"]["x-request-id"] = "<present>"
    for key in ("raw_headers", "upstream", "connection_id", "index_on_connection", "client"):
        body.pop(key, None)
    return {"status": reply.status, "headers": headers, "body": body}


CASES: dict[str, Case] = {
    "unary with metadata and trailers": lambda ch, _: _unary(
        ch.unary_unary(method("Unary")), b"hello", metadata=(("x-echo", "e"),)
    ),
    "unary 3 MiB message": lambda ch, _: _unary(
        ch.unary_unary(method("Unary")), bytes(range(256)) * 12288
    ),
    "server status with message": lambda ch, _: _unary(
        ch.unary_unary(method("Unary")),
        b"x",
        metadata=(("x-fail", "NOT_FOUND"), ("x-fail-message", "no such thing")),
    ),
    "direct response 403": lambda ch, _: _unary(ch.unary_unary(f"{method('Unary')}/denied"), b""),
    "no route": lambda ch, _: _unary(ch.unary_unary("/other.Service/Call"), b""),
    "route timeout": lambda ch, _: _unary(ch.unary_unary(method("Sleep")), b"2000"),
    "retry on unavailable succeeds": lambda ch, _: _unary(
        ch.unary_unary(method("Flaky")), b"ok", metadata=(("x-key", "a"), ("x-failures", "2"))
    ),
    "retry on unavailable exhausted": lambda ch, _: _unary(
        ch.unary_unary(method("Flaky")), b"no", metadata=(("x-key", "b"), ("x-failures", "9"))
    ),
    "grpc-timeout capped by grpc_timeout_header_max": lambda ch, _: _unary(
        ch.unary_unary("/echo.Echo/Deadline"), b"3000", timeout=5.0
    ),
    "grpc-timeout within the cap": lambda ch, _: _unary(
        ch.unary_unary("/echo.Echo/DeadlineOk"), b"10", timeout=5.0
    ),
    "streaming calls": _streams,
    "300 concurrent calls": _concurrent,
    "origin resets the stream": lambda _, listen: _raw("/raw/reset", listen),
    "origin resets after the head": lambda _, listen: _raw("/raw/reset-late", listen),
    "origin goaway refuses the stream": lambda _, listen: _raw("/raw/goaway", listen),
    "refused stream retried": lambda _, listen: _raw("/raw/retried", listen),
    "HTTP/1.1 to HTTP/2: hop-by-hop fields and te": lambda _, listen: _http1(
        listen,
        "GET",
        "/raw/echo?q=1",
        [("connection", "keep-alive, x-drop"), ("x-drop", "1"), ("te", "gzip, trailers")],
    ),
    "HTTP/1.1 to HTTP/2: chunked body": lambda _, listen: _http1(
        listen, "POST", "/raw/echo", [], [b"part one, ", b"part two"]
    ),
    "HTTP/1.1 to HTTP/2: content-length body": lambda _, listen: _http1(
        listen, "PUT", "/raw/echo", [], b"x" * 70000
    ),
    "HTTP/1.1 to HTTP/2: headers-only answer": lambda _, listen: _http1(
        listen, "GET", "/raw/headers-only", []
    ),
    "HTTP/2 to HTTP/1.1: cookie crumbs": lambda _, listen: _h2_to_http1(listen, "cookies"),
    "HTTP/2 to HTTP/1.1: body without a length": lambda _, listen: _h2_to_http1(
        listen, "streamed body"
    ),
    "HTTP/2 to HTTP/1.1: request trailers": lambda _, listen: _h2_to_http1(listen, "trailers"),
}


async def _settled(proxy: Any) -> dict[str, str] | None:
    stats = await admin_stats(proxy)
    return stats if stats.get("http.ingress.downstream_cx_active") == "1" else None


async def run(kind: str, tmp: Path) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    work = tmp / kind
    work.mkdir()
    log = work / "access.log"
    grpc_server = await GrpcEcho(GRPC_UPSTREAM).start()
    raw = await H2Upstream(
        RAW_UPSTREAM,
        routes={
            "/raw/reset": H2Reset(code=2),
            "/raw/reset-late": H2Reset(code=2, after_headers=True),
            "/raw/goaway": H2GoAway(),
            "/raw/retried": H2GoAway(),
            "/raw/echo": H2Echo(),
            "/raw/*": H2Echo(headers_only=(("grpc-status", "0"),)),
            "/echo.Echo/Deadline": H2Held("never"),
        },
    ).start()
    http1 = await Upstream(H1_UPSTREAM, 0).start()
    listen = (PROXY, free_port(PROXY))
    proxy = make_proxy(kind, config(listen, log, grpc_server, raw, http1), workdir=work)
    await proxy.astart()
    results: dict[str, Any] = {}
    try:
        async with grpc_client_channel(*listen) as channel:
            for name, case in CASES.items():
                results[name] = await asyncio.wait_for(case(channel, listen), 30.0)
            # Read while the gRPC channel is still open, once the proxy has seen the other
            # clients go.
            stats = await wait_until(
                lambda: _settled(proxy), "the raw clients' connections closed", timeout=10.0
            )
    finally:
        await proxy.astop()
        await grpc_server.stop()
        await raw.stop()
        await http1.stop()
    return results, log.read_text().splitlines(), stats


async def test_grpc_and_h2_agree_with_envoy(tmp_path: Path) -> None:
    runs = {kind: await run(kind, tmp_path) for kind in PROXY_KINDS}
    envoy, pymesh = runs["envoy"], runs["pymesh"]
    differences = {
        name: {"envoy": envoy[0][name], "pymesh": pymesh[0][name]}
        for name in CASES
        if envoy[0][name] != pymesh[0][name]
    }
    assert differences == {}, __import__("pprint").pformat(differences)
    assert sorted(pymesh[1]) == sorted(envoy[1])
    common = {
        name
        for name in envoy[2].keys() & pymesh[2].keys()
        if name.startswith(("cluster.echo.", "cluster.raw.", "http.ingress."))
        and not name.endswith(STATS_THAT_DIFFER_BY_DESIGN)
    }
    stat_differences = {
        name: (envoy[2][name], pymesh[2][name])
        for name in sorted(common)
        if envoy[2][name] != pymesh[2][name]
    }
    assert stat_differences == {}
