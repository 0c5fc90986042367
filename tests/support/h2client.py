"""A small asyncio HTTP/2 client for tests, on the pure-Python ``h2`` library: an independent
implementation from the proxy's libnghttp2 codec, so the two check each other.

``H2Client.open(host, port)`` speaks prior-knowledge h2c (or h2 over TLS with ALPN when given
an ``ssl.SSLContext``); ``request()`` sends one request on a new stream and returns an
:class:`H2Reply` (status, headers, body, trailers, or the reset code). Many requests may run
at once on one connection. Every wait is bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

__all__ = ["H2Client", "H2Reply"]


@dataclass
class H2Reply:
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    reset_code: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    informational: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name), None)


class H2Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.replies: dict[int, H2Reply] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = asyncio.Event()
        self.settings_acked = asyncio.Event()
        self.remote_settings: dict[int, int] = {}
        self._window = asyncio.Event()
        self.pings = 0
        self._reader_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
        timeout: float = 5.0,
    ) -> H2Client:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, server_hostname=server_name),
            timeout,
        )
        client = cls(reader, writer)
        client.conn.initiate_connection()
        client._flush()
        client._reader_task = asyncio.create_task(client._read_loop())
        return client

    async def __aenter__(self) -> H2Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        self.writer.close()
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    def start(
        self,
        method: str,
        path: str,
        *,
        authority: str = "svc",
        headers: Sequence[tuple[str, str]] = (),
        end_stream: bool = True,
        scheme: str = "http",
        protocol: str | None = None,
    ) -> int:
        """Open a stream with a request head; returns its id. CONNECT without ``protocol``
        sends ``:authority`` only; with it, an extended CONNECT (RFC 8441)."""
        sid = self.conn.get_next_available_stream_id()
        self.replies[sid] = H2Reply()
        if method == "CONNECT" and protocol is None:
            head = [(":method", method), (":authority", authority), *headers]
        else:
            head = [
                (":method", method),
                (":scheme", scheme),
                (":authority", authority),
                (":path", path),
                *([(":protocol", protocol)] if protocol is not None else []),
                *headers,
            ]
        self.conn.send_headers(sid, head, end_stream=end_stream)
        self._flush()
        return sid

    async def send_body(
        self, sid: int, body: bytes, *, end_stream: bool, timeout: float = 10.0
    ) -> None:
        """Send ``body`` as the proxy's flow-control windows allow."""
        view = memoryview(body)
        while view:
            window = min(
                self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                self._window.clear()
                await asyncio.wait_for(self._window.wait(), timeout)
                continue
            piece, view = view[:window], view[window:]
            self.conn.send_data(sid, bytes(piece), end_stream=end_stream and not view)
            self._flush()
        if not body and end_stream:
            self.conn.end_stream(sid)
            self._flush()

    def send_trailers(self, sid: int, trailers: Sequence[tuple[str, str]]) -> None:
        self.conn.send_headers(sid, list(trailers), end_stream=True)
        self._flush()

    def reset(self, sid: int, code: int = 8) -> None:
        self.conn.reset_stream(sid, code)
        self._flush()

    async def wait(self, sid: int, timeout: float = 5.0) -> H2Reply:
        reply = self.replies[sid]
        await asyncio.wait_for(reply.done.wait(), timeout)
        return reply

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        trailers: Sequence[tuple[str, str]] = (),
        timeout: float = 5.0,
        **kw: Any,
    ) -> H2Reply:
        """One whole request; the reply once its stream has ended (or was reset)."""
        sid = self.start(method, path, end_stream=not body and not trailers, **kw)
        if body:
            await self.send_body(sid, body, end_stream=not trailers, timeout=timeout)
        if trailers:
            self.send_trailers(sid, trailers)
        return await self.wait(sid, timeout)

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except Exception:  # the proxy broke the protocol: the test will see it
                    break
                for event in events:
                    self._on_event(event)
                self._flush()
        except (OSError, ssl.SSLError):
            pass
        finally:
            for reply in self.replies.values():
                reply.done.set()
            self.closed.set()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            reply = self.replies[event.stream_id]
            headers = [(str(k), str(v)) for k, v in event.headers]
            reply.status = int(headers[0][1])
            reply.headers = headers[1:]
        elif isinstance(event, h2.events.InformationalResponseReceived):
            self.replies[event.stream_id].informational.append(int(event.headers[0][1]))
        elif isinstance(event, h2.events.DataReceived):
            reply = self.replies[event.stream_id]
            reply.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self.replies[event.stream_id].trailers = [(str(k), str(v)) for k, v in event.headers]
        elif isinstance(event, h2.events.StreamEnded):
            self.replies[event.stream_id].done.set()
        elif isinstance(event, h2.events.StreamReset):
            reply = self.replies.get(event.stream_id)
            if reply is not None:
                reply.reset_code = int(event.error_code)
                reply.done.set()
        elif isinstance(event, h2.events.PingReceived):
            self.pings += 1  # the library answers it
        elif isinstance(event, h2.events.WindowUpdated):
            self._window.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for key, changed in event.changed_settings.items():
                self.remote_settings[int(key)] = changed.new_value
            self._window.set()
        elif isinstance(event, h2.events.SettingsAcknowledged):
            self.settings_acked.set()
