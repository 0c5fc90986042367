"""A scriptable HTTP/2 origin server (prior-knowledge h2c) for proxy tests, on the pure-Python
``h2`` library: independent of the proxy's libnghttp2 codec.

Every stream is answered by the behaviour its path selects (``routes``, exact path or a
prefix ending in ``*``; ``default`` otherwise):

* :class:`H2Echo` — 200 with a JSON body describing the request (method, path, authority,
  headers, body length and sha256) and, when given, trailers;
* :class:`H2Held` — wait until ``release(gate)``, then echo;
* :class:`H2Reset` — RST_STREAM with ``code`` (after the response head when ``after_headers``);
* :class:`H2GoAway` — a GOAWAY naming the last stream before this one, then this stream is
  never answered (the client must take it as refused).

The server counts connections, streams and the streams open at once, and records requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

__all__ = ["H2Echo", "H2GoAway", "H2Held", "H2Reset", "H2Upstream", "H2UpstreamRequest"]


@dataclass(frozen=True)
class H2Echo:
    status: int = 200
    trailers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None  # a fixed body instead of the JSON description
    # HEADERS with END_STREAM and these extra fields (a gRPC trailers-only answer).
    headers_only: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class H2Held:
    gate: str
    then: H2Echo = H2Echo()


@dataclass(frozen=True)
class H2Reset:
    code: int = 2  # INTERNAL_ERROR
    after_headers: bool = False


@dataclass(frozen=True)
class H2GoAway:
    """Only the first ``times`` streams that reach it; later ones are echoed."""

    times: int = 1


H2Behaviour = H2Echo | H2Held | H2Reset | H2GoAway


@dataclass
class H2UpstreamRequest:
    method: str
    path: str
    authority: str
    headers: dict[str, str]
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)


class _Stream:
    def __init__(self, headers: list[tuple[str, str]]) -> None:
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        self.request = H2UpstreamRequest(
            pseudo.get(":method", ""),
            pseudo.get(":path", ""),
            pseudo.get(":authority", ""),
            {k: v for k, v in headers if not k.startswith(":")},
        )


class _Connection(asyncio.Protocol):
    def __init__(self, server: H2Upstream) -> None:
        self.server = server
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections += 1
        self.server.open.add(self)
        self.conn.initiate_connection()
        self.conn.update_settings(
            {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.server.max_concurrent_streams}
        )
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.open.discard(self)
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.streams[event.stream_id] = _Stream(
                    [(str(k), str(v)) for k, v in event.headers]
                )
                self.server.streams += 1
                self.server.peak_concurrency = max(self.server.peak_concurrency, len(self.streams))
            elif isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.request.body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.request.trailers = {str(k): str(v) for k, v in event.headers}
            elif isinstance(event, h2.events.StreamEnded):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    self.server.received.append(stream.request)
                    task = asyncio.ensure_future(self._answer(event.stream_id, stream))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
            elif isinstance(event, h2.events.StreamReset):
                self.streams.pop(event.stream_id, None)
                self.server.resets_received.append(event.error_code)
            elif isinstance(event, h2.events.WindowUpdated):
                self.server.window_opened.set()
        self._flush()

    async def _answer(self, sid: int, stream: _Stream) -> None:
        behaviour = self.server.behaviour(stream.request.path)
        if isinstance(behaviour, H2Held):
            await self.server.gate(behaviour.gate).wait()
            behaviour = behaviour.then
        if sid not in self.streams:
            return
        if isinstance(behaviour, H2GoAway) and self.server.goaways >= behaviour.times:
            behaviour = H2Echo()
        if isinstance(behaviour, H2GoAway):
            self.server.goaways += 1
            # Written raw: the h2 library would refuse to send anything after its own GOAWAY,
            # and the streams below the last id must still be answered.
            if self.transport is not None:
                self.transport.write(
                    struct.pack(">I", 8)[1:] + b"\x07\x00\x00\x00\x00\x00"
                    + struct.pack(">II", sid - 2, 0)
                )  # fmt: skip
            return
        if isinstance(behaviour, H2Reset):
            if behaviour.after_headers:
                self.conn.send_headers(sid, [(":status", "200")])
            self.conn.reset_stream(sid, behaviour.code)
            self.streams.pop(sid, None)
            self._flush()
            return
        request = stream.request
        if behaviour.headers_only is not None:
            self.conn.send_headers(
                sid, [(":status", str(behaviour.status)), *behaviour.headers_only], end_stream=True
            )
            self.streams.pop(sid, None)
            self._flush()
            return
        if behaviour.body is not None:
            body = behaviour.body
        else:
            body = json.dumps(
                {
                    "method": request.method,
                    "path": request.path,
                    "authority": request.authority,
                    "headers": request.headers,
                    "body_length": len(request.body),
                    "body_sha256": hashlib.sha256(request.body).hexdigest(),
                    "trailers": request.trailers,
                }
            ).encode()
        head = [(":status", str(behaviour.status)), ("content-type", "application/json")]
        if not behaviour.trailers:
            head.append(("content-length", str(len(body))))
        self.conn.send_headers(sid, head)
        await self._send_body(sid, body, end_stream=not behaviour.trailers)
        if behaviour.trailers and sid in self.streams:
            self.conn.send_headers(sid, list(behaviour.trailers), end_stream=True)
        self.streams.pop(sid, None)
        self._flush()

    async def _send_body(self, sid: int, body: bytes, *, end_stream: bool) -> None:
        view = memoryview(body)
        while True:
            if sid not in self.streams:
                return
            window = min(
                self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size
            )
            if window <= 0 and view:
                self.server.window_opened.clear()
                await asyncio.wait_for(self.server.window_opened.wait(), 10.0)
                continue
            piece, view = view[:window], view[window:]
            self.conn.send_data(sid, bytes(piece), end_stream=end_stream and not view)
            self._flush()
            if not view:
                return

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class H2Upstream:
    def __init__(
        self,
        host: str,
        *,
        routes: dict[str, H2Behaviour] | None = None,
        default: H2Behaviour | None = None,
        max_concurrent_streams: int = 100,
    ) -> None:
        self.host = host
        self.port = 0
        self.routes = routes or {}
        self.default = default or H2Echo()
        self.max_concurrent_streams = max_concurrent_streams
        self.connections = 0
        self.streams = 0
        self.peak_concurrency = 0
        self.goaways = 0
        self.received: list[H2UpstreamRequest] = []
        self.resets_received: list[int] = []
        self.open: set[_Connection] = set()
        self.window_opened = asyncio.Event()
        self._gates: dict[str, asyncio.Event] = {}
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    async def start(self) -> H2Upstream:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self.open):
                if conn.transport is not None:
                    conn.transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def __aenter__(self) -> H2Upstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def behaviour(self, path: str) -> H2Behaviour:
        path = path.split("?", 1)[0]
        if path in self.routes:
            return self.routes[path]
        for key, behaviour in self.routes.items():
            if key.endswith("*") and path.startswith(key[:-1]):
                return behaviour
        return self.default

    def gate(self, name: str) -> asyncio.Event:
        return self._gates.setdefault(name, asyncio.Event())

    def release(self, name: str) -> None:
        self.gate(name).set()
