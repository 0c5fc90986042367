"""A gRPC echo service on grpcio (``grpc.aio``), without generated code: messages are raw
bytes, methods of ``echo.Echo``:

* ``Unary``: the request back, with the caller's ``x-echo`` metadata as initial metadata and
  ``x-trailer: t`` trailing metadata; metadata ``x-fail: <CODE NAME>`` aborts with that code
  (``x-fail-message`` as details) before any message, a trailers-only response;
* ``Sleep``: waits the number of milliseconds the request spells, then echoes;
* ``Flaky``: fails UNAVAILABLE while fewer than ``x-failures`` calls with the same ``x-key``
  have failed, then echoes;
* ``ServerStream``: as many messages as the request spells (each ``i:<n>``);
* ``ClientStream``: one message, the total length of the ones received;
* ``Bidi``: every message back as it arrives.

``GrpcEcho.calls`` counts calls per method.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc

__all__ = ["GrpcEcho", "grpc_client_channel", "method"]

SERVICE = "echo.Echo"


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


class GrpcEcho:
    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.calls: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    async def start(self) -> GrpcEcho:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary),
            "Sleep": grpc.unary_unary_rpc_method_handler(self._sleep),
            "Flaky": grpc.unary_unary_rpc_method_handler(self._flaky),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self._server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self._client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self._bidi),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.port = server.add_insecure_port(f"{self.host}:0")
        await server.start()
        self._server = server
        return self

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    async def _unary(self, request: bytes, context: Any) -> bytes:
        self.calls["Unary"] += 1
        metadata = dict(context.invocation_metadata())
        fail = metadata.get("x-fail")
        if fail:
            await context.abort(grpc.StatusCode[fail], metadata.get("x-fail-message", ""))
        if "x-echo" in metadata:
            await context.send_initial_metadata((("x-echo", metadata["x-echo"]),))
        context.set_trailing_metadata((("x-trailer", "t"),))
        return request

    async def _sleep(self, request: bytes, context: Any) -> bytes:
        self.calls["Sleep"] += 1
        await asyncio.sleep(int(request) / 1000)
        return request

    async def _flaky(self, request: bytes, context: Any) -> bytes:
        self.calls["Flaky"] += 1
        metadata = dict(context.invocation_metadata())
        key = metadata.get("x-key", "")
        if self._failures[key] < int(metadata.get("x-failures", "0")):
            self._failures[key] += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        return request

    async def _server_stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self.calls["ServerStream"] += 1
        for i in range(int(request)):
            yield b"i:%d" % i

    async def _client_stream(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        self.calls["ClientStream"] += 1
        total = 0
        async for message in requests:
            total += len(message)
        return b"%d" % total

    async def _bidi(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        self.calls["Bidi"] += 1
        async for message in requests:
            yield message


def grpc_client_channel(host: str, port: int, authority: str = "echo.svc") -> grpc.aio.Channel:
    """A plaintext channel to the proxy; ``authority`` picks the route's virtual host."""
    return grpc.aio.insecure_channel(
        f"{host}:{port}",
        options=[
            ("grpc.default_authority", authority),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.enable_retries", 0),
        ],
    )
