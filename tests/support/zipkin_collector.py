"""A Zipkin collector for tests: it keeps the spans every ``POST /api/v2/spans`` carries, as
the proxy sent them (Envoy's chunked bodies and pymesh's sized ones alike)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

__all__ = ["ZipkinCollector"]


class ZipkinCollector:
    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.spans: list[dict[str, Any]] = []
        self.requests: list[tuple[bytes, dict[bytes, bytes]]] = []  # (request line, headers)
        self._server: asyncio.Server | None = None

    async def start(self) -> ZipkinCollector:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                headers: dict[bytes, bytes] = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = h.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                    body = b""
                    while size := int((await reader.readline()).strip() or b"0", 16):
                        body += await reader.readexactly(size)
                        await reader.readline()
                    await reader.readline()
                else:
                    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                self.requests.append((line.strip(), headers))
                self.spans.extend(json.loads(body))
                writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
