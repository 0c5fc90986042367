"""A scriptable HTTP/1.1 origin server on raw asyncio streams.

Written by hand (not aiohttp) because proxy tests need an upstream that misbehaves at the
byte level: close after the headers, reset mid-body, never answer, send exact bytes.
Everything that is well-formed is correct HTTP/1.1: keep-alive, pipelining, content-length
and chunked request bodies, ``Expect: 100-continue``, HEAD.

Each path maps to a *behaviour* (a frozen dataclass from :mod:`tests.support.behaviours`,
re-exported here); unknown paths get the default
(:class:`Echo`). Path keys match the path without the query exactly, or as a prefix when
they end in ``*``. The server counts connections and requests and records every request
it received, so tests can assert keep-alive reuse, retries and what the proxy forwarded.

In-process: ``async with Upstream("127.0.5.1", name="a") as up: ...`` in the test's loop.
Subprocess: :class:`~tests.support.upstream_process.UpstreamProcess` (re-exported here) runs
``python -m tests.support.upstream`` and talks to it through control paths under
``/__upstream/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import signal
import socket
import ssl
import struct
from collections import Counter
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from tests.support.behaviours import (
    STREAM_BLOCK,
    Behaviour,
    Chunked,
    Close,
    CloseMidResponse,
    Delay,
    Echo,
    Expect100,
    Fixed,
    Hang,
    Headers,
    Held,
    RawResponse,
    ReceivedRequest,
    Reset,
    Steps,
    Stream,
    UpstreamStats,
    behaviour_from_json,
    behaviour_to_json,
    stream_body,
    stream_sha256,
)
from tests.support.upstream_process import UpstreamProcess

__all__ = [
    "STREAM_BLOCK",
    "Behaviour",
    "Chunked",
    "Close",
    "CloseMidResponse",
    "Delay",
    "Echo",
    "Expect100",
    "Fixed",
    "Hang",
    "Held",
    "RawResponse",
    "ReceivedRequest",
    "Reset",
    "Steps",
    "Stream",
    "Upstream",
    "UpstreamProcess",
    "UpstreamStats",
    "behaviour_from_json",
    "behaviour_to_json",
    "stream_body",
    "stream_sha256",
]


class _BadRequest(Exception):
    pass


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _lingering_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # Closing with unread request bytes makes the kernel send RST, which can destroy the
    # response still in flight; send FIN first and discard input for a moment.
    await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(1.0):
            while await reader.read(1 << 16):
                pass


def _headers_and_keep_alive(
    head: tuple[str, str, str, list[tuple[str, str]]],
) -> tuple[dict[str, str], bool]:
    method, target, version, raw = head
    hdrs = ReceivedRequest(method, target, version, tuple(raw), 0, "", b"", (), 0, 0).headers
    conn = hdrs.get("connection", "").lower()
    return hdrs, "close" not in conn and (version == "1.1" or "keep-alive" in conn)


class _Closing(Exception):
    """Raised inside a handler to drop the connection after a behaviour closed it."""


class Upstream:
    """The server. See the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        name: str | None = None,
        routes: Mapping[str, Behaviour] | None = None,
        default: Behaviour | None = None,
        control: bool = False,
        record_body_limit: int = 64 * 1024,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.tls = tls
        # Per TLS connection: the ALPN protocol chosen and the client certificate's URI SANs.
        self.tls_peers: list[tuple[str | None, tuple[str, ...]]] = []
        self.port = port
        self.name = name or f"{host}:{port}"
        self.routes: dict[str, Behaviour] = dict(routes or {})
        self.default: Behaviour = default if default is not None else Echo()
        self.control = control
        self.record_body_limit = record_body_limit
        self.stats = UpstreamStats()
        self.received: list[ReceivedRequest] = []
        self._step_counts: Counter[str] = Counter()
        self._conn_ids = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._arrived = asyncio.Event()
        self._gates: dict[str, asyncio.Event] = {}

    # -- control ------------------------------------------------------------------------
    async def start(self) -> Upstream:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, limit=1 << 20, reuse_address=True, ssl=self.tls
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.name == f"{self.host}:0":
            self.name = f"{self.host}:{self.port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Upstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def route(self, path: str, behaviour: Behaviour) -> None:
        self.routes[path] = behaviour
        self._step_counts.pop(path, None)

    def reset(self) -> None:
        """Forget counters and recorded requests (routes stay)."""
        self.stats = UpstreamStats(open_connections=self.stats.open_connections)
        self.received.clear()
        self._step_counts.clear()

    async def wait_for_request(self, path: str, count: int = 1, timeout: float = 10.0) -> None:
        """Return once ``count`` requests for ``path`` have arrived (head and body read, before
        the behaviour answers): how a test knows a request is in flight without sleeping."""
        async with asyncio.timeout(timeout):
            while self.stats.by_path[path] < count:
                await self._arrived.wait()

    def release(self, gate: str) -> None:
        """Let the requests :class:`Held` at ``gate`` (and any that arrive later) go on."""
        self._gates.setdefault(gate, asyncio.Event()).set()

    def _lookup(self, path: str) -> tuple[str, Behaviour]:
        if path in self.routes:
            return path, self.routes[path]
        best = ""
        for key in self.routes:
            if key.endswith("*") and path.startswith(key[:-1]) and len(key) > len(best):
                best = key
        return (best, self.routes[best]) if best else ("", self.default)

    # -- connection -----------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is not None:
            cert = ssl_object.getpeercert() or {}
            uris = tuple(v for k, v in cert.get("subjectAltName", ()) if k == "URI")
            self.tls_peers.append((ssl_object.selected_alpn_protocol(), uris))
        self.stats.connections += 1
        self.stats.open_connections += 1
        self._conn_ids += 1
        conn_id, counted = self._conn_ids, True
        try:
            index = 0
            while True:
                head = await self._read_head(reader)
                if head is None:
                    return
                if self.control and head[1].startswith("/__upstream/"):
                    if counted and index == 0:  # a control client, not traffic under test
                        counted = False
                        self.stats.connections -= 1
                        self.stats.open_connections -= 1
                    if not await self._serve_control(reader, writer, head):
                        return
                    continue
                index += 1
                if not await self._serve_one(reader, writer, head, conn_id, index):
                    return
        except (_Closing, ConnectionError, asyncio.IncompleteReadError):
            pass
        except (_BadRequest, TypeError) as exc:
            # 400 for what the client sent, 500 for a script this server cannot play.
            status = 400 if isinstance(exc, _BadRequest) else 500
            body = f"{_reason(status).lower()}: {exc}\n".encode()
            hdrs = [("content-length", str(len(body))), ("connection", "close")]
            with contextlib.suppress(ConnectionError):
                writer.write(_head(status, hdrs) + body)
                await _lingering_close(reader, writer)
        finally:
            if counted:
                self.stats.open_connections -= 1
            self._writers.discard(writer)
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.close()

    async def _read_head(
        self, reader: asyncio.StreamReader
    ) -> tuple[str, str, str, list[tuple[str, str]]] | None:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _BadRequest("incomplete head") from None
            return None
        except asyncio.LimitOverrunError:
            raise _BadRequest("head too large") from None
        lines = raw[:-4].decode("latin-1").split("\r\n")
        while lines and not lines[0]:  # tolerate CRLF between pipelined requests
            lines.pop(0)
        parts = lines[0].split(" ") if lines else []
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(f"request line {lines[0] if lines else ''!r}")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(f"header line {line!r}")
            headers.append((name, value.strip(" \t")))
        return parts[0], parts[1], parts[2][5:], headers

    async def _read_body(
        self, reader: asyncio.StreamReader, headers: Mapping[str, str]
    ) -> tuple[int, str, bytes | None, Headers]:
        sha, length, keep = hashlib.sha256(), 0, bytearray()
        trailers: list[tuple[str, str]] = []

        def take(data: bytes) -> None:
            nonlocal length
            sha.update(data)
            length += len(data)
            if len(keep) <= self.record_body_limit:
                keep.extend(data)

        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = (await reader.readuntil(b"\r\n"))[:-2]
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _BadRequest(f"chunk size {size_line!r}") from None
                if size == 0:
                    break
                take(await reader.readexactly(size))
                if await reader.readexactly(2) != b"\r\n":
                    raise _BadRequest("chunk not followed by CRLF")
            while line := (await reader.readuntil(b"\r\n"))[:-2]:
                k, _, v = line.decode("latin-1").partition(":")
                trailers.append((k, v.strip()))
        elif "content-length" in headers:
            try:
                remaining = int(headers["content-length"])
            except ValueError:
                raise _BadRequest("content-length") from None
            while remaining > 0:
                data = await reader.read(min(remaining, 1 << 16))
                if not data:
                    raise asyncio.IncompleteReadError(b"", remaining)
                take(data)
                remaining -= len(data)
        body = bytes(keep) if length <= self.record_body_limit else None
        return length, sha.hexdigest(), body, tuple(trailers)

    async def _serve_one(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: tuple[str, str, str, list[tuple[str, str]]],
        conn_id: int,
        index: int,
    ) -> bool:
        """Serve one request; False when the connection must close afterwards."""
        method, target, version, raw_list = head
        raw = tuple(raw_list)
        hdrs, keep_alive = _headers_and_keep_alive(head)
        path = target.split("?", 1)[0]
        key, behaviour = self._lookup(path)
        if isinstance(behaviour, Steps):
            n = self._step_counts[key]
            self._step_counts[key] += 1
            behaviour = behaviour.steps[min(n, len(behaviour.steps) - 1)]
        expect = behaviour if isinstance(behaviour, Expect100) else Expect100()
        if isinstance(behaviour, Expect100):
            behaviour = behaviour.then
        wants_continue = hdrs.get("expect", "").lower() == "100-continue"
        if wants_continue and expect.mode == "reject":
            self._record(
                ReceivedRequest(method, target, version, raw, 0, "", None, (), conn_id, index)
            )
            hs = [("content-length", "0"), ("connection", "close")]
            writer.write(_head(expect.status, [*hs, ("x-upstream-name", self.name)]))
            await _lingering_close(reader, writer)
            return False
        if wants_continue and expect.mode == "continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        length, digest, body, trailers = await self._read_body(reader, hdrs)
        rec = ReceivedRequest(
            method, target, version, raw, length, digest, body, trailers, conn_id, index
        )
        self._record(rec)
        return await self._respond(reader, writer, behaviour, rec, keep_alive, method == "HEAD")

    def _record(self, rec: ReceivedRequest) -> None:
        self.received.append(rec)
        self.stats.requests += 1
        self.stats.by_path[rec.path] += 1
        # Wake every waiter, and give later waiters a fresh event to wait on.
        self._arrived.set()
        self._arrived = asyncio.Event()

    async def _respond(
        self,
        r: asyncio.StreamReader,
        w: asyncio.StreamWriter,
        b: Behaviour,
        rec: ReceivedRequest,
        keep_alive: bool,
        head_only: bool,
    ) -> bool:
        base = [("x-upstream-name", self.name)]
        if not keep_alive:
            base.append(("connection", "close"))
        elif rec.version == "1.0":
            base.append(("connection", "keep-alive"))

        def simple(status: int, body: bytes, extra: Headers, ctype: str | None) -> None:
            hs = [("content-length", str(len(body)))]
            if ctype and not any(k.lower() == "content-type" for k, _ in extra):
                hs.append(("content-type", ctype))
            w.write(_head(status, [*hs, *extra, *base]) + (b"" if head_only else body))

        while isinstance(b, Delay | Held):
            if isinstance(b, Delay):
                await asyncio.sleep(b.seconds)
            else:
                await self._gates.setdefault(b.gate, asyncio.Event()).wait()
            b = b.then
        if isinstance(b, Echo):
            simple(b.status, json.dumps(self._echo(rec)).encode(), b.headers, "application/json")
        elif isinstance(b, Fixed):
            simple(b.status, b.body, b.headers, "text/plain" if b.body else None)
        elif isinstance(b, Chunked):
            w.write(_head(b.status, [("transfer-encoding", "chunked"), *base]))
            for chunk in () if head_only else b.chunks:
                if b.interval:
                    await w.drain()
                    await asyncio.sleep(b.interval)
                if chunk:
                    w.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if not head_only:
                w.write(b"0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in b.trailers).encode())
                w.write(b"\r\n")
        elif isinstance(b, Stream):
            framing = ("transfer-encoding", "chunked") if b.chunked else None
            w.write(_head(200, [framing or ("content-length", str(b.size)), *base]))
            remaining = 0 if head_only else b.size
            while remaining > 0:
                block = STREAM_BLOCK[: min(remaining, len(STREAM_BLOCK))]
                w.write(b"%x\r\n%s\r\n" % (len(block), block) if b.chunked else block)
                remaining -= len(block)
                await w.drain()
            if b.chunked and not head_only:
                w.write(b"0\r\n\r\n")
        elif isinstance(b, CloseMidResponse):
            hs = [("content-length", str(b.content_length)), *base]
            w.write(_head(b.status, hs) + stream_body(b.body_bytes))
            await w.drain()
            w.close()
            raise _Closing
        elif isinstance(b, Close):
            w.close()
            raise _Closing
        elif isinstance(b, Reset):
            if b.after_headers:
                hs = [("content-length", str(b.content_length)), *base]
                w.write(_head(200, hs) + stream_body(b.body_bytes))
                await w.drain()
                await asyncio.sleep(b.pause)
            _abort_with_rst(w)
            raise _Closing
        elif isinstance(b, Hang):
            await w.drain()
            while await r.read(1 << 16):  # until the peer gives up
                pass
            raise _Closing
        elif isinstance(b, RawResponse):
            w.write(b.data)
            if b.close:
                await w.drain()
                w.close()
                raise _Closing
        else:  # nested Steps / Expect100 inside Delay are not meaningful
            raise TypeError(f"unsupported behaviour here: {b!r}")
        await w.drain()
        return keep_alive

    def _echo(self, rec: ReceivedRequest) -> dict[str, Any]:
        return {
            "upstream": self.name,
            "method": rec.method,
            "path": rec.target,
            "version": rec.version,
            "headers": rec.headers,
            "raw_headers": [list(h) for h in rec.raw_headers],
            "body_length": rec.body_length,
            "body_sha256": rec.body_sha256,
            "trailers": dict(rec.trailers),
            "connection": rec.connection,
            "index_on_connection": rec.index_on_connection,
        }

    async def _serve_control(
        self,
        reader: asyncio.StreamReader,
        w: asyncio.StreamWriter,
        head: tuple[str, str, str, list[tuple[str, str]]],
    ) -> bool:
        method, path = head[0], head[1].split("?", 1)[0]
        hdrs, keep_alive = _headers_and_keep_alive(head)
        body = (await self._read_body(reader, hdrs))[2] or b""
        out: Any
        if path == "/__upstream/stats":
            out = self.stats.to_json()
        elif path == "/__upstream/received":
            out = [r.to_json() for r in self.received]
        elif path == "/__upstream/reset" and method == "POST":
            self.reset()
            out = {"ok": True}
        elif path == "/__upstream/routes" and method == "POST":
            for p, spec in json.loads(body).items():
                self.route(p, behaviour_from_json(spec))
            out = {"ok": True}
        else:
            out = {"error": f"unknown control request {method} {path}"}
        data = json.dumps(out).encode()
        hs = [("content-type", "application/json"), ("content-length", str(len(data)))]
        w.write(_head(200, hs if keep_alive else [*hs, ("connection", "close")]) + data)
        await w.drain()
        return keep_alive


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="scriptable HTTP/1.1 test upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name")
    parser.add_argument("--routes", default="{}", help="JSON {path: behaviour}")
    args = parser.parse_args(argv)
    routes = {p: behaviour_from_json(b) for p, b in json.loads(args.routes).items()}

    async def serve() -> None:
        up = Upstream(args.host, args.port, name=args.name, routes=routes, control=True)
        await up.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await up.stop()

    try:
        import uvloop

        uvloop.run(serve())
    except ImportError:
        asyncio.run(serve())


if __name__ == "__main__":
    main()
