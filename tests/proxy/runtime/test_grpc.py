"""gRPC through the proxy with real grpcio clients and servers: unary and streaming calls,
metadata and trailers both ways, large messages, and what a gRPC caller gets when the proxy
answers itself (a trailers-only response whose grpc-status Envoy derives from the HTTP status),
deadlines from ``grpc-timeout`` under a route's ``max_stream_duration``, and retries on
gRPC statuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.proxy.als_recorder import Recorder, als_server
from tests.proxy.runtime.bootstrap import (
    bootstrap,
    cluster,
    direct,
    hcm,
    listener,
    route,
    vhost,
)
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support.grpc_echo import GrpcEcho, grpc_client_channel, method
from tests.support.h2upstream import H2Held, H2Upstream
from tests.support.httpclient import AsyncConnection
from tests.support.procs import free_port
from tests.support.upstream import Hang
from tests.support.waiting import wait_until

H2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}
LOG_FORMAT = (
    "%RESPONSE_CODE% %GRPC_STATUS% %GRPC_STATUS(NUMBER)% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"
)
GrpcFactory = Callable[[str], Awaitable[GrpcEcho]]


@pytest.fixture
async def grpc_server() -> AsyncIterator[GrpcFactory]:
    started: list[GrpcEcho] = []

    async def make(host: str) -> GrpcEcho:
        server = GrpcEcho(host)
        started.append(server)
        return await server.start()

    yield make
    for server in reversed(started):
        await server.stop()


def grpc_config(
    listen: tuple[str, int],
    server: tuple[str, int],
    log: Path | None = None,
    held: tuple[str, int] | None = None,
) -> dict[str, Any]:
    routes = [
        direct(403, "denied here", match={"prefix": f"{method('Unary')}/denied"}),
        route(method("Sleep"), cluster="echo", timeout="0.3s"),
        # Sleep under the default 15 s route timeout: many calls at once on a busy machine.
        route("/echo.Echo/ManySleep", cluster="echo", prefix_rewrite=method("Sleep")),
        route(
            method("Flaky"),
            cluster="echo",
            retry_policy={"retry_on": "unavailable", "num_retries": 2},
        ),
        # The client's grpc-timeout bounds the call, capped at 300 ms: to the echo server, and
        # to an origin that never answers (so that only the proxy's timer can end the call;
        # the gRPC server would enforce the deadline it is passed at the same moment).
        route(
            "/echo.Echo/DeadlineOk",
            cluster="echo",
            prefix_rewrite=method("Sleep"),
            max_stream_duration={"grpc_timeout_header_max": "0.3s"},
        ),
        route(
            "/echo.Echo/Deadline",
            cluster="held" if held is not None else "echo",
            max_stream_duration={"grpc_timeout_header_max": "0.3s"},
        ),
        route("/echo.Echo/", cluster="echo"),
    ]
    extra: dict[str, Any] = {}
    if log is not None:
        extra["access_log"] = [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3"
                    ".FileAccessLog",
                    "path": str(log),
                    "log_format": {"text_format_source": {"inline_string": LOG_FORMAT}},
                },
            }
        ]
    return bootstrap(
        [listener(listen, hcm([vhost(routes, domains=["echo.svc"])], **extra))],
        [
            cluster("echo", [server], typed_extension_protocol_options=H2_OPTIONS),
            *(
                [cluster("held", [held], typed_extension_protocol_options=H2_OPTIONS)]
                if held is not None
                else []
            ),
        ],
    )


async def test_unary_and_streaming_calls_with_metadata_and_trailers(
    grpc_server: GrpcFactory, start_proxy: StartProxy
) -> None:
    server = await grpc_server(upstream_ip(0))
    proxy = await start_proxy(grpc_config(listen_address(), server.address))
    async with grpc_client_channel(*proxy.address) as channel:
        call = channel.unary_unary(method("Unary"))(b"hello", metadata=(("x-echo", "e"),))
        assert await call == b"hello"
        assert ("x-echo", "e") in tuple(await call.initial_metadata())
        assert ("x-trailer", "t") in tuple(await call.trailing_metadata())
        assert await call.code() == grpc.StatusCode.OK
        big = bytes(range(256)) * 8192  # 2 MiB, beyond every default window
        assert await channel.unary_unary(method("Unary"))(big) == big
        stream = channel.unary_stream(method("ServerStream"))(b"50")
        assert [m async for m in stream] == [b"i:%d" % i for i in range(50)]

        async def parts() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"x" * 1000

        assert await channel.stream_unary(method("ClientStream"))(parts()) == b"20000"
        bidi = channel.stream_stream(method("Bidi"))()
        for i in range(5):
            await bidi.write(b"ping %d" % i)
            assert await bidi.read() == b"ping %d" % i
        await bidi.done_writing()
        assert await bidi.code() == grpc.StatusCode.OK
    # Every call rode one downstream and one upstream HTTP/2 connection.
    assert proxy.stat("http.ingress.downstream_cx_http2_total") == 1
    assert proxy.stat("cluster.echo.upstream_cx_http2_total") == 1


async def test_many_concurrent_calls_on_one_connection(
    grpc_server: GrpcFactory, start_proxy: StartProxy
) -> None:
    server = await grpc_server(upstream_ip(0))
    proxy = await start_proxy(grpc_config(listen_address(), server.address))
    async with grpc_client_channel(*proxy.address) as channel:
        unary = channel.unary_unary("/echo.Echo/ManySleep")
        replies = await asyncio.gather(*(unary(b"50") for _ in range(200)))
    assert replies == [b"50"] * 200
    assert proxy.stat("cluster.echo.upstream_cx_total") == 1


async def test_local_replies_reach_grpc_callers_as_statuses(
    tmp_path: Path, grpc_server: GrpcFactory, start_proxy: StartProxy
) -> None:
    server = await grpc_server(upstream_ip(0))
    log = tmp_path / "access.log"
    proxy = await start_proxy(grpc_config(listen_address(), server.address, log))
    async with grpc_client_channel(*proxy.address) as channel:
        unary, codes = channel.unary_unary, grpc.StatusCode
        cases = [
            # A direct response's 403 is PERMISSION_DENIED, its body the message.
            (unary(f"{method('Unary')}/denied"), b"", codes.PERMISSION_DENIED, "denied here"),
            # No route: 404, UNIMPLEMENTED.
            (unary("/other.Service/Call"), b"", codes.UNIMPLEMENTED, None),
            # The route timeout's 504 is UNAVAILABLE, as through Envoy.
            (unary(method("Sleep")), b"2000", codes.UNAVAILABLE, "upstream request timeout"),
        ]
        for call, request, code, details in cases:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(request)
            assert caught.value.code() == code
            if details is not None:
                assert caught.value.details() == details
        # An error status from the server itself passes through untouched.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(method("Unary"))(
                b"x", metadata=(("x-fail", "NOT_FOUND"), ("x-fail-message", "no such thing"))
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details() == "no such thing"
    await proxy.stop()
    lines = log.read_text().splitlines()
    assert lines == [
        "200 PermissionDenied 7 - direct_response",
        "200 Unimplemented 12 NR route_not_found",
        "200 Unavailable 14 UT response_timeout",
        "200 NotFound 5 - via_upstream",
    ]


async def test_grpc_timeout_bounds_the_call_under_grpc_timeout_header_max(
    grpc_server: GrpcFactory, start_proxy: StartProxy
) -> None:
    server = await grpc_server(upstream_ip(0))
    held = await H2Upstream(upstream_ip(2), default=H2Held("never")).start()
    try:
        proxy = await start_proxy(grpc_config(listen_address(), server.address, held=held.address))
        async with grpc_client_channel(*proxy.address) as channel:
            # A call well within both the client's deadline and the cap completes.
            ok = channel.unary_unary("/echo.Echo/DeadlineOk")
            assert await ok(b"10", timeout=5.0) == b"10"
            # The proxy holds the call to the cap (the client would wait 5 s) and answers
            # DEADLINE_EXCEEDED itself, as Envoy does; the origin was told the deadline.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/echo.Echo/Deadline")(b"x", timeout=5.0)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert caught.value.details() == "downstream duration timeout"
            assert held.received[-1].headers["grpc-timeout"] == "300m"
        assert proxy.stat("http.ingress.downstream_rq_max_duration_reached") == 1
    finally:
        await held.stop()


async def test_retry_on_unavailable(grpc_server: GrpcFactory, start_proxy: StartProxy) -> None:
    server = await grpc_server(upstream_ip(0))
    proxy = await start_proxy(grpc_config(listen_address(), server.address))
    async with grpc_client_channel(*proxy.address) as channel:
        flaky = channel.unary_unary(method("Flaky"))
        assert await flaky(b"ok", metadata=(("x-key", "a"), ("x-failures", "2"))) == b"ok"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await flaky(b"no", metadata=(("x-key", "b"), ("x-failures", "5")))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details() == "try again"
    assert server.calls["Flaky"] == 3 + 3
    assert proxy.stat("cluster.echo.upstream_rq_retry") == 4


async def test_max_stream_duration_answers_plain_http_as_envoy(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(1), default=Hang())
    config = bootstrap(
        [
            listener(
                listen_address(),
                hcm(
                    [vhost([route("/")])],
                    common_http_protocol_options={"max_stream_duration": "0.2s"},
                ),
            )
        ],
        [cluster("backend", [up.address])],
    )
    proxy = await start_proxy(config)
    async with await AsyncConnection.open(*proxy.address) as conn:
        # The request is complete and the upstream owes the answer: 504.
        r = await conn.request("GET", "/slow", host="svc")
        assert r.status == 504 and r.body == b"downstream duration timeout"
    assert proxy.stat("http.ingress.downstream_rq_max_duration_reached") == 1


async def test_grpc_calls_are_reported_with_their_status_from_the_trailers(
    grpc_server: GrpcFactory, start_proxy: StartProxy
) -> None:
    """The ALS entry of a gRPC call carries its content type and the ``grpc-status`` of its
    trailers (or of a trailers-only answer's headers): what Istio's ``request_protocol`` and
    ``grpc_response_status`` labels are made of."""
    server = await grpc_server(upstream_ip(0))
    als = (upstream_ip(1), free_port(upstream_ip(1)))
    config = grpc_config(listen_address(), server.address)
    hcm_config = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hcm_config["typed_config"]["access_log"] = [
        {
            "name": "envoy.access_loggers.http_grpc",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
                "common_config": {
                    "log_name": "outbound",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "als"}},
                    "buffer_flush_interval": "0.05s",
                },
                "additional_request_headers_to_log": ["content-type"],
                "additional_response_headers_to_log": ["grpc-status"],
                "additional_response_trailers_to_log": ["grpc-status"],
            },
        }
    ]
    config["static_resources"]["clusters"].append(
        cluster("als", [als], typed_extension_protocol_options=H2_OPTIONS)
    )
    recorder = Recorder()
    async with als_server(*als, recorder):
        proxy = await start_proxy(config)
        async with grpc_client_channel(*proxy.address) as channel:
            assert await channel.unary_unary(method("Unary"))(b"hi") == b"hi"
            failed = channel.unary_unary(method("Unary"))(b"x", metadata=(("x-fail", "NOT_FOUND"),))
            with pytest.raises(grpc.aio.AioRpcError):
                await failed
        await wait_until(lambda: len(recorder.http()) == 2, "both calls' entries")
        ok, not_found = recorder.http()
        assert ok.request.request_headers["content-type"] == "application/grpc"
        assert dict(ok.response.response_trailers) == {"grpc-status": "0"}
        # a trailers-only answer: the status is in the response headers
        assert not_found.response.response_headers["grpc-status"] == "5"
        await proxy.stop()
