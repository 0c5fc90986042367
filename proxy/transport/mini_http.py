"""A tiny HTTP/1.1 server for control endpoints (admin, health), on the proxy's own codec.

aiohttp would cost the data-plane process ~15 MB of resident memory for a handful of
plain-text endpoints; this serves them with the codec the proxy already loads. Connections
are kept alive between requests (up to a minute idle), as Envoy's admin does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import structlog

from proxy.codec import NEED_DATA, Data, EndOfMessage, Request, ServerConnection
from pymesh.errors import RemoteProtocolError

__all__ = ["MiniHttpServer", "MiniRequest", "MiniResponse"]

log = structlog.get_logger(__name__)

_READ_TIMEOUT = 10.0
# Pollers (Prometheus through the agent, readiness probes) reuse their connection: a new one
# per poll leaves a TIME-WAIT socket behind each time.
_IDLE_TIMEOUT = 60.0
_MAX_BODY = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MiniRequest:
    method: str
    path: str
    query: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class MiniResponse:
    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/plain; charset=UTF-8"
    headers: tuple[tuple[str, str], ...] = field(default=())


Handler = Callable[[MiniRequest], Awaitable[MiniResponse]]


class MiniHttpServer:
    def __init__(self, routes: dict[tuple[str, str], Handler]) -> None:
        self._routes = routes
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)

    @property
    def port(self) -> int:
        """The bound port (the one the kernel chose when started on port 0)."""
        assert self._server is not None and self._server.sockets, "not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            # Idle keep-alive connections would outlive the listener (Python 3.11's
            # wait_closed does not wait for them).
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        codec = ServerConnection()
        try:
            while True:
                try:
                    request = await self._read(codec, reader)
                except (RemoteProtocolError, TimeoutError) as exc:
                    # The codec is dead or mid-message: answer raw and close.
                    writer.write(_raw_response(400, f"bad request: {exc}\n"))
                    await writer.drain()
                    return
                if request is None:
                    return
                response = await self._dispatch(request)
                writer.write(_encode(codec, response, request.method == "HEAD"))
                await writer.drain()
                if not codec.keep_alive:
                    return
                codec.start_next_cycle()
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _read(
        self, codec: ServerConnection, reader: asyncio.StreamReader
    ) -> MiniRequest | None:
        """The next request; None when the peer closed or stayed idle between requests."""
        head: Request | None = None
        body = bytearray()
        started = False
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                if started:
                    data = await asyncio.wait_for(reader.read(65536), _READ_TIMEOUT)
                else:
                    try:
                        data = await asyncio.wait_for(reader.read(65536), _IDLE_TIMEOUT)
                    except TimeoutError:
                        return None
                started = True
                codec.receive_data(data)
                if not data and head is None:
                    return None
                continue
            if isinstance(event, Request):
                head = event
            elif isinstance(event, Data):
                body += event.data
                if len(body) > _MAX_BODY:
                    raise RemoteProtocolError("body too large", 413)
            elif isinstance(event, EndOfMessage) and head is not None:
                target = head.target.decode("latin-1")
                path, _, query = target.partition("?")
                return MiniRequest(
                    head.method.decode("latin-1"),
                    path,
                    dict(parse_qsl(query, keep_blank_values=True)),
                    bytes(body),
                )
            else:
                return None

    async def _dispatch(self, request: MiniRequest) -> MiniResponse:
        # HEAD is GET without the body (the codec leaves it out).
        method = "GET" if request.method == "HEAD" else request.method
        handler = self._routes.get((method, request.path))
        if handler is None:
            if any(path == request.path for _, path in self._routes):
                return MiniResponse(405, "method not allowed\n")
            return MiniResponse(404, "invalid path\n")
        try:
            return await handler(request)
        except Exception as exc:  # an admin bug must not take the proxy down
            log.exception("admin handler failed", path=request.path)
            return MiniResponse(500, f"internal error: {exc}\n")


def _encode(codec: ServerConnection, response: MiniResponse, head_only: bool) -> bytes:
    body = response.body.encode() if isinstance(response.body, str) else response.body
    headers = [
        (b"content-type", response.content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    head = codec.send_response(response.status, headers)
    if head_only or response.status in (204, 304):
        return head + codec.send_end()
    return head + codec.send_data(body) + codec.send_end()


def _raw_response(status: int, text: str) -> bytes:
    body = text.encode()
    head = (
        f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-type: text/plain; charset=UTF-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
