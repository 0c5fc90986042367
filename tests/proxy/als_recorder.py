"""A real gRPC Access Log Service for the proxy's tests: it keeps every message of every
``StreamAccessLogs`` stream, parsed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

__all__ = ["Recorder", "als_server"]

SERVICE = "envoy.service.accesslog.v3.AccessLogService"


class Recorder:
    def __init__(self) -> None:
        self.streams: list[list[als_pb2.StreamAccessLogsMessage]] = []

    async def handle(self, requests: AsyncIterator[bytes], context: object) -> bytes:
        stream: list[als_pb2.StreamAccessLogsMessage] = []
        self.streams.append(stream)
        async for raw in requests:
            stream.append(als_pb2.StreamAccessLogsMessage.FromString(raw))
        return b""

    def http(self) -> list[accesslog_pb2.HTTPAccessLogEntry]:
        return [e for s in self.streams for m in s for e in m.http_logs.log_entry]

    def tcp(self) -> list[accesslog_pb2.TCPAccessLogEntry]:
        return [e for s in self.streams for m in s for e in m.tcp_logs.log_entry]

    def entries(self) -> list[str]:
        """The request paths of the HTTP entries, in order."""
        return [e.request.path for e in self.http()]


@asynccontextmanager
async def als_server(host: str, port: int, recorder: Recorder) -> AsyncIterator[None]:
    server = grpc.aio.server()
    handler = grpc.stream_unary_rpc_method_handler(recorder.handle)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"StreamAccessLogs": handler}),)
    )
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    try:
        yield
    finally:
        await server.stop(None)
