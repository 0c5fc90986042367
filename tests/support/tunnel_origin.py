"""An origin for upgrade and CONNECT tests: it answers an HTTP/1.1 upgrade with 101, a CONNECT
with 200, and then echoes raw bytes; in ``raw`` mode it is a plain TCP echo server (what a
terminated CONNECT reaches).

Written on raw asyncio streams so tests can see what a proxy forwarded byte for byte: the
request head it got (``heads``), whether the peer half-closed (``eofs``), and so that it can
answer after the peer's FIN, which shows whether a proxy carries a half-close through.

A request whose target starts with ``/refuse`` gets a 404 with a body instead of the switch.
After the peer's FIN the origin writes ``AFTER_EOF`` and closes, so a test can tell a
half-close carried through (the client still reads it) from a full close.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib

__all__ = ["AFTER_EOF", "TunnelOrigin"]

AFTER_EOF = b"[origin saw eof]"
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Fields whose values change from run to run or from proxy to proxy by design.
_VOLATILE = frozenset({b"x-request-id", b"x-envoy-expected-rq-timeout-ms", b"sec-websocket-key"})


class TunnelOrigin:
    def __init__(self, host: str, *, raw: bool = False) -> None:
        self.host = host
        self.raw = raw
        self.heads: list[tuple[str, ...]] = []
        self.eofs = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> TunnelOrigin:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not self.raw and not await self._switch(reader, writer):
                return
            await self._echo(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _switch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
        line, *lines = head[:-4].split(b"\r\n")
        fields = [tuple(part.strip() for part in item.split(b":", 1)) for item in lines]
        fields = [(name.lower(), value) for name, value in fields]
        self.heads.append(
            (
                line.decode(),
                *sorted(
                    f"{name.decode()}: {'<present>' if name in _VOLATILE else value.decode()}"
                    for name, value in fields
                ),
            )
        )
        method, target, _ = line.split(b" ", 2)
        get = dict(fields).get
        if target.startswith(b"/refuse"):
            writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nno socket")
            await writer.drain()
            return False
        if method == b"CONNECT":
            writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
            return True
        upgrade = get(b"upgrade")
        if upgrade is None:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\nnot upgraded\n")
            await writer.drain()
            return False
        switch = [b"HTTP/1.1 101 Switching Protocols", b"upgrade: " + upgrade]
        switch.append(b"connection: upgrade")
        key = get(b"sec-websocket-key")
        if key is not None:
            accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
            switch.append(b"sec-websocket-accept: " + accept)
        writer.write(b"\r\n".join(switch) + b"\r\n\r\n")
        return True

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                self.eofs += 1
                writer.write(AFTER_EOF)
                await writer.drain()
                return
            writer.write(data)
            await writer.drain()
