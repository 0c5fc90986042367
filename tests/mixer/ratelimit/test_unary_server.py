"""The standalone Rate Limit Service's lean gRPC server, driven by grpcio's own client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from mixer.grpc_unary import GrpcAbort, UnaryGrpcServer
from mixer.ratelimit.config import ConfigFile, load_config
from mixer.ratelimit.counters import MemoryCounters
from mixer.ratelimit.service import RateLimitService, StaticConfig
from mixer.ratelimit.servicer import SHOULD_RATE_LIMIT, RateLimitHandler
from mixer.ratelimit.stats import RateLimitStats
from proxy.routing.grpc import GrpcStatus
from tests.support import RATELIMIT_NET, address

HOST = address(RATELIMIT_NET, 150)
Response = rls_pb2.RateLimitResponse

CONFIG = """
domain: api
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 3}
"""


def request(user: str, domain: str = "api") -> rls_pb2.RateLimitRequest:
    entry = ratelimit_pb2.RateLimitDescriptor.Entry(key="user", value=user)
    return rls_pb2.RateLimitRequest(
        domain=domain, descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=[entry])]
    )


async def slow(data: bytes) -> bytes:
    await asyncio.sleep(30)
    return data


async def broken(data: bytes) -> bytes:
    raise RuntimeError("a bug")


async def refusing(data: bytes) -> bytes:
    raise GrpcAbort(GrpcStatus.PERMISSION_DENIED, "nope: ü")


@pytest.fixture
async def served() -> AsyncIterator[tuple[UnaryGrpcServer, grpc.aio.Channel]]:
    config = load_config([ConfigFile("config.yaml", CONFIG)])
    clock = lambda: 1_700_000_000.0  # noqa: E731
    service = RateLimitService(
        StaticConfig(config), MemoryCounters(clock), clock=clock, stats=RateLimitStats()
    )
    server = UnaryGrpcServer(
        {
            SHOULD_RATE_LIMIT: RateLimitHandler(service),
            "/test.T/Slow": slow,
            "/test.T/Broken": broken,
            "/test.T/Refusing": refusing,
        }
    )
    port = await server.start(HOST, 0)
    channel = grpc.aio.insecure_channel(f"{HOST}:{port}")
    try:
        yield server, channel
    finally:
        await channel.close()
        await server.stop()


def raw(channel: grpc.aio.Channel, path: str) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


async def test_decisions_over_one_connection_many_at_once(served) -> None:
    _, channel = served
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    answers = await asyncio.gather(
        *(stub.ShouldRateLimit(request(f"u{i % 50}"), timeout=10) for i in range(200))
    )
    codes = [a.overall_code for a in answers]
    # 50 users, 4 calls each, 3 allowed an hour
    assert codes.count(Response.OK) == 150
    assert codes.count(Response.OVER_LIMIT) == 50
    assert {a.statuses[0].current_limit.requests_per_unit for a in answers} == {3}


async def test_refusals_reach_the_caller_as_grpc_statuses(served) -> None:
    _, channel = served
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    cases = [
        (
            stub.ShouldRateLimit(request("a", domain=""), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (raw(channel, "/nope.Service/Method")(b"", timeout=5), grpc.StatusCode.UNIMPLEMENTED),
        (raw(channel, SHOULD_RATE_LIMIT)(b"\xff\xff\xff", timeout=5), grpc.StatusCode.INTERNAL),
        (raw(channel, "/test.T/Broken")(b"x", timeout=5), grpc.StatusCode.INTERNAL),
        (raw(channel, "/test.T/Refusing")(b"x", timeout=5), grpc.StatusCode.PERMISSION_DENIED),
    ]
    for call, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == code, info.value
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw(channel, "/test.T/Refusing")(b"x", timeout=5)
    assert info.value.details() == "nope: ü"
    # and the connection still serves
    assert (await stub.ShouldRateLimit(request("b"), timeout=5)).overall_code == Response.OK


async def test_a_caller_that_gives_up_leaves_the_server_serving(served) -> None:
    _, channel = served
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw(channel, "/test.T/Slow")(b"x", timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    assert (await stub.ShouldRateLimit(request("c"), timeout=5)).overall_code == Response.OK


async def test_a_non_grpc_peer_is_sent_away_and_others_are_not_affected(served) -> None:
    server, channel = served

    def http1() -> bytes:
        with socket.create_connection((HOST, server.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            return data

    answer = await asyncio.to_thread(http1)
    # our SETTINGS, then a GOAWAY (type 7) with PROTOCOL_ERROR, then the connection closes
    assert b"\x07\x00\x00\x00\x00\x00" in answer
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    assert (await stub.ShouldRateLimit(request("d"), timeout=5)).overall_code == Response.OK


def _h2_call(port: int, body: bytes) -> dict[bytes, bytes]:
    """One call from a plain HTTP/2 client; the response's head and trailer fields."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    head = [
        (":method", "POST"), (":scheme", "http"), (":authority", "rls"),
        (":path", SHOULD_RATE_LIMIT), ("content-type", "application/grpc"), ("te", "trailers"),
    ]  # fmt: skip
    conn.send_headers(1, head)
    conn.send_data(1, body, end_stream=True)
    fields: dict[bytes, bytes] = {}
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        while True:
            data = sock.recv(65536)
            if not data:
                raise AssertionError("connection closed before the stream ended")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    fields.update(event.headers)
                if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return fields
            sock.sendall(conn.data_to_send())


async def test_messages_it_cannot_read_are_refused_with_a_status(served) -> None:
    server, _ = served
    message = request("e").SerializeToString()
    frame = b"\x00" + len(message).to_bytes(4, "big") + message
    cases = {
        # compressed, though no grpc-encoding was negotiated
        b"\x01" + frame[1:]: b"12",
        # two messages on a unary method
        frame + frame: b"13",
        # a length prefix promising more than was sent
        frame[:-1]: b"13",
        # no message at all
        b"": b"13",
    }
    for body, status in cases.items():
        fields = await asyncio.to_thread(_h2_call, server.port, body)
        assert fields[b":status"] == b"200"
        assert fields[b"grpc-status"] == status, (body, fields)
    ok = await asyncio.to_thread(_h2_call, server.port, frame)
    assert ok[b"grpc-status"] == b"0"
