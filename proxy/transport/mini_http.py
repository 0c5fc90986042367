"""A tiny HTTP/1.1 server for control endpoints (admin, health), on the proxy's own codec.

aiohttp would cost the data-plane process ~15 MB of resident memory for a handful of
plain-text endpoints; this serves them with the codec the proxy already loads. One request
per connection (``connection: close``): these endpoints are polled, not streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import structlog

from proxy.codec import NEED_DATA, Data, EndOfMessage, Request, ServerConnection
from pymesh.errors import RemoteProtocolError

__all__ = ["MiniHttpServer", "MiniRequest", "MiniResponse"]

log = structlog.get_logger(__name__)

_READ_TIMEOUT = 10.0
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
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(self._read(reader), _READ_TIMEOUT)
            response = await self._dispatch(request) if request else MiniResponse(400, "")
        except (RemoteProtocolError, TimeoutError) as exc:
            response = MiniResponse(400, f"bad request: {exc}\n")
        except ConnectionError:
            writer.close()
            return
        body = response.body.encode() if isinstance(response.body, str) else response.body
        head = [f"HTTP/1.1 {response.status} {_reason(response.status)}"]
        head.append(f"content-type: {response.content_type}")
        head.append(f"content-length: {len(body)}")
        head.extend(f"{k}: {v}" for k, v in response.headers)
        head.append("connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> MiniRequest | None:
        codec = ServerConnection()
        head: Request | None = None
        body = bytearray()
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                data = await reader.read(65536)
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
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            if any(path == request.path for _, path in self._routes):
                return MiniResponse(405, "method not allowed\n")
            return MiniResponse(404, "invalid path\n")
        try:
            return await handler(request)
        except Exception as exc:  # an admin bug must not take the proxy down
            log.exception("admin handler failed", path=request.path)
            return MiniResponse(500, f"internal error: {exc}\n")


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
