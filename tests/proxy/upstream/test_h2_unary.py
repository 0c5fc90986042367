"""The proxy's unary gRPC client (side calls) against grpcio's server: answers, statuses,
deadlines, cancellation, many calls on one connection, a server that goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from proxy.upstream.h2_unary import H2Unary
from tests.support import RATELIMIT_NET, address
from tests.support.procs import free_port

HOST = address(RATELIMIT_NET, 160)


def _echo(request: bytes, context: Any) -> bytes:
    return request[::-1]


async def _slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.sleep(30)
    return request


async def _refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota: 100% used ✓")
    raise AssertionError("unreachable")


def _handler() -> grpc.GenericRpcHandler:
    methods = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Slow": grpc.unary_unary_rpc_method_handler(_slow),
        "Refuse": grpc.unary_unary_rpc_method_handler(_refuse),
    }
    return grpc.method_handlers_generic_handler("test.Svc", methods)


class Server:
    def __init__(self, port: int) -> None:
        self.port = port
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((_handler(),))
        assert self.server.add_insecure_port(f"{HOST}:{self.port}") == self.port
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)
            self.server = None


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    running = Server(free_port(HOST))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def client(method: str) -> H2Unary:
    return H2Unary(f"/test.Svc/{method}", bytes, bytes)


async def call(unary: H2Unary, port: int, message: bytes, timeout: float | None = 5.0):
    outcome: asyncio.Future[tuple[Any, str | None]] = asyncio.get_running_loop().create_future()
    unary.call(f"{HOST}:{port}", message, timeout, lambda r, e: outcome.set_result((r, e)))
    return await asyncio.wait_for(outcome, 10)


async def test_many_calls_share_one_connection_and_each_gets_its_answer(server: Server) -> None:
    unary = client("Echo")
    try:
        results = await asyncio.gather(*(call(unary, server.port, b"m%d" % i) for i in range(300)))
        assert [r for r, _ in results] == [(b"m%d" % i)[::-1] for i in range(300)]
        assert {e for _, e in results} == {None}
    finally:
        await unary.close()


async def test_a_status_reaches_the_caller_with_its_message(server: Server) -> None:
    unary = client("Refuse")
    try:
        assert await call(unary, server.port, b"x") == (
            None,
            "RESOURCE_EXHAUSTED: quota: 100% used ✓",
        )
        missing = H2Unary("/test.Svc/Nope", bytes, bytes)
        response, error = await call(missing, server.port, b"x")
        assert response is None and error is not None and error.startswith("UNIMPLEMENTED")
        await missing.close()
    finally:
        await unary.close()


async def test_a_deadline_ends_the_call_and_the_connection_serves_on(server: Server) -> None:
    slow, echo = client("Slow"), client("Echo")
    try:
        started = asyncio.get_running_loop().time()
        assert await call(slow, server.port, b"x", timeout=0.3) == (
            None,
            "DEADLINE_EXCEEDED: Deadline Exceeded",
        )
        assert asyncio.get_running_loop().time() - started < 5
        assert await call(echo, server.port, b"ab") == (b"ba", None)
    finally:
        await slow.close()
        await echo.close()


async def test_a_cancelled_call_never_answers(server: Server) -> None:
    unary = client("Slow")
    answers: list[object] = []
    try:
        handle = unary.call(f"{HOST}:{server.port}", b"x", 0.5, lambda r, e: answers.append(e))
        await asyncio.sleep(0.05)
        handle.cancel()
        # past the deadline: a cancelled call's timer must not fire either
        await asyncio.sleep(0.8)
        assert answers == []
    finally:
        await unary.close()


async def test_a_server_that_goes_away_is_unavailable_then_reached_again(server: Server) -> None:
    slow, echo = client("Slow"), client("Echo")
    try:
        assert await call(echo, server.port, b"1") == (b"1", None)
        pending = asyncio.ensure_future(call(slow, server.port, b"x", timeout=20))
        await asyncio.sleep(0.2)
        await server.stop()
        response, error = await pending
        assert response is None and error is not None and error.startswith("UNAVAILABLE")
        response, error = await call(echo, server.port, b"2")
        assert response is None and error is not None and "cannot connect" in error
        await server.start()
        assert await call(echo, server.port, b"3") == (b"3", None)
    finally:
        await slow.close()
        await echo.close()
