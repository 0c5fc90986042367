"""A raw-socket HTTP/1.1 client for tests: exact bytes out, h11-parsed responses in.

Requests are plain bytes (:func:`build_request` makes well-formed ones; tests that probe
the proxy's parser send their own). Responses are parsed with h11, one at a time off the
connection's byte stream, so keep-alive reuse and pipelining work and any byte the peer sent
after a response stays buffered for the next one.

Errors: :class:`IncompleteResponse` when the peer closed or reset the connection before the
response ended (``.status`` is None if no head arrived, ``.reset`` tells RST from FIN),
:class:`ResponseTimeout` when nothing complete arrived in time, :class:`BadResponse` when
h11 rejects the bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import h11

__all__ = [
    "AsyncConnection",
    "BadResponse",
    "Connection",
    "IncompleteResponse",
    "Response",
    "ResponseTimeout",
    "build_request",
    "concurrent_requests",
    "request",
    "request_sync",
    "run_concurrently",
]

HeaderPairs = Iterable[tuple[str | bytes, str | bytes]]
T = TypeVar("T")


def _s(v: str | bytes) -> str:
    return v.decode("latin-1") if isinstance(v, bytes) else v


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    http_version: str
    headers: tuple[tuple[str, str], ...]  # lower-case names, in order received
    body: bytes
    trailers: tuple[tuple[str, str], ...] = ()
    informational: tuple[int, ...] = ()  # statuses of 1xx responses that came first
    will_close: bool = False  # the server said (or HTTP/1.0 implies) the connection closes
    elapsed: float = 0.0  # seconds from the start of reading to the end of the body

    def header(self, name: str) -> str | None:
        """Value of a header (repeats joined with ``, ``), None when absent."""
        values = self.header_list(name)
        return ", ".join(values) if values else None

    def header_list(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k == name]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class _Partial:
    status: int | None = None
    reason: str = ""
    version: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytearray = field(default_factory=bytearray)
    informational: list[int] = field(default_factory=list)


class IncompleteResponse(ConnectionError):
    """The connection ended (FIN or RST) before a complete response arrived."""

    def __init__(self, partial: _Partial, *, reset: bool, detail: str = "") -> None:
        self.status = partial.status
        self.headers = partial.headers
        self.body = bytes(partial.body)
        self.reset = reset
        how = "reset" if reset else "closed"
        at = "before the response head" if self.status is None else f"after {self.status} head"
        super().__init__(f"connection {how} {at} ({len(self.body)} body bytes) {detail}".strip())


class ResponseTimeout(TimeoutError):
    """No complete response within the timeout; ``status``/``body`` hold what did arrive."""

    def __init__(self, partial: _Partial, timeout: float) -> None:
        self.status = partial.status
        self.headers = partial.headers
        self.body = bytes(partial.body)
        super().__init__(f"no complete response in {timeout}s (status so far: {self.status})")


class BadResponse(Exception):
    """h11 refused the response bytes."""


def build_request(
    method: str = "GET",
    target: str = "/",
    headers: HeaderPairs = (),
    body: bytes | Sequence[bytes] = b"",
    *,
    host: str | None = "example.com",
    version: str = "1.1",
) -> bytes:
    """Well-formed request bytes. A sequence of ``bytes`` as body is sent chunked.

    Adds ``Host`` (unless ``host`` is None or one is given) and ``Content-Length`` for a
    non-empty ``bytes`` body (unless a framing header is given).
    """
    hs = [(_s(k), _s(v)) for k, v in headers]
    names = {k.lower() for k, _ in hs}
    if host is not None and "host" not in names:
        hs.insert(0, ("Host", host))
    chunks = None if isinstance(body, bytes) else list(body)
    framed = names & {"content-length", "transfer-encoding"}
    if chunks is not None and not framed:
        hs.append(("Transfer-Encoding", "chunked"))
    elif isinstance(body, bytes) and (body or method in ("POST", "PUT", "PATCH")) and not framed:
        hs.append(("Content-Length", str(len(body))))
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs)
    out = head.encode("latin-1") + b"\r\n"
    if isinstance(body, bytes):
        return out + body
    assert chunks is not None
    return out + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks if c) + b"0\r\n\r\n"


class _Parser:
    """One response off a byte stream, with h11 (a fake request puts it in the right state)."""

    def __init__(self, method: str, leftover: bytes, eof: bool) -> None:
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=4 << 20)
        self.h11.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
        self.h11.send(h11.EndOfMessage())
        self.partial = _Partial()
        self.eof = eof
        if leftover:
            self.h11.receive_data(leftover)
        if eof:
            self.h11.receive_data(b"")

    def feed(self, data: bytes) -> None:
        self.eof = self.eof or not data
        self.h11.receive_data(data)

    def step(self) -> tuple[Response, bytes, bool] | None:
        """The response, the bytes after it and whether EOF was seen; None: feed more."""
        p = self.partial
        trailers: tuple[tuple[str, str], ...] = ()
        while True:
            try:
                ev = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                if self.eof:
                    raise IncompleteResponse(p, reset=False, detail=str(exc)) from None
                raise BadResponse(str(exc)) from exc
            if ev is h11.NEED_DATA:
                if self.eof:
                    raise IncompleteResponse(p, reset=False)
                return None
            if isinstance(ev, h11.InformationalResponse):
                p.informational.append(ev.status_code)
            elif isinstance(ev, h11.Response):
                p.status, p.reason = ev.status_code, ev.reason.decode("latin-1")
                p.version = ev.http_version.decode()
                p.headers = tuple((_s(k), _s(v)) for k, v in ev.headers)
            elif isinstance(ev, h11.Data):
                p.body.extend(ev.data)
            elif isinstance(ev, h11.EndOfMessage):
                trailers = tuple((_s(k), _s(v)) for k, v in ev.headers)
                rest, closed = self.h11.trailing_data
                will_close = self.h11.their_state is h11.MUST_CLOSE or closed
                assert p.status is not None
                resp = Response(
                    p.status, p.reason, p.version, p.headers, bytes(p.body), trailers,
                    tuple(p.informational), will_close,
                )  # fmt: skip
                return resp, bytes(rest), closed or self.eof
            elif isinstance(ev, h11.ConnectionClosed):
                raise IncompleteResponse(p, reset=False)


class AsyncConnection:
    """One client connection on the running event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.host, self.port = writer.get_extra_info("peername")[:2]
        self._buf = b""
        self._eof = False
        self.responses = 0

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        timeout: float = 5.0,
        source: str | None = None,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> AsyncConnection:
        """``tls``: a client context (with its certificate, for mTLS); ``server_name`` is the
        SNI and the name checked in the server's certificate."""
        local = (source, 0) if source else None
        async with asyncio.timeout(timeout):
            r, w = await asyncio.open_connection(
                host,
                port,
                local_addr=local,
                limit=1 << 22,
                ssl=tls,
                server_hostname=server_name if tls is not None else None,
            )
        return cls(r, w)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_response(self, method: str = "GET", timeout: float = 5.0) -> Response:
        parser = _Parser(method, self._buf, self._eof)
        self._buf = b""
        start = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                while (done := parser.step()) is None:
                    try:
                        data = await self.reader.read(1 << 18)
                    except ConnectionResetError as exc:
                        raise IncompleteResponse(parser.partial, reset=True) from exc
                    parser.feed(data)
        except TimeoutError:
            raise ResponseTimeout(parser.partial, timeout) from None
        resp, self._buf, self._eof = done
        self.responses += 1
        return _with_elapsed(resp, time.monotonic() - start)

    async def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: HeaderPairs = (),
        body: bytes | Sequence[bytes] = b"",
        *,
        host: str | None = None,
        timeout: float = 5.0,
    ) -> Response:
        host = host if host is not None else f"{self.host}:{self.port}"
        await self.send(build_request(method, target, headers, body, host=host))
        return await self.read_response(method, timeout)

    async def wait_closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True if the peer closes (or resets) within ``timeout``; unread bytes are dropped."""
        if self._eof:
            return True
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(1 << 16):
                    pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            return False
        self._eof = True
        return True

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)

    async def __aenter__(self) -> AsyncConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Connection:
    """The blocking twin of :class:`AsyncConnection`, for sync tests and tools."""

    def __init__(self, host: str, port: int, *, timeout: float = 5.0) -> None:
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buf = b""
        self._eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_response(self, method: str = "GET", timeout: float = 5.0) -> Response:
        parser = _Parser(method, self._buf, self._eof)
        start = time.monotonic()
        deadline = start + timeout
        while (done := parser.step()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ResponseTimeout(parser.partial, timeout)
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 18)
            except ConnectionResetError as exc:
                raise IncompleteResponse(parser.partial, reset=True) from exc
            except TimeoutError:
                raise ResponseTimeout(parser.partial, timeout) from None
            parser.feed(data)
        resp, self._buf, self._eof = done
        return _with_elapsed(resp, time.monotonic() - start)

    def request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: HeaderPairs = (),
        body: bytes | Sequence[bytes] = b"",
        *,
        host: str | None = None,
        timeout: float = 5.0,
    ) -> Response:
        host = host if host is not None else f"{self.host}:{self.port}"
        self.send(build_request(method, target, headers, body, host=host))
        return self.read_response(method, timeout)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _with_elapsed(resp: Response, elapsed: float) -> Response:
    return Response(
        resp.status, resp.reason, resp.http_version, resp.headers, resp.body, resp.trailers,
        resp.informational, resp.will_close, elapsed,
    )  # fmt: skip


async def request(
    host: str,
    port: int,
    method: str = "GET",
    target: str = "/",
    headers: HeaderPairs = (),
    body: bytes | Sequence[bytes] = b"",
    *,
    host_header: str | None = None,
    timeout: float = 5.0,
) -> Response:
    """One request on a fresh connection."""
    async with await AsyncConnection.open(host, port, timeout=timeout) as conn:
        return await conn.request(method, target, headers, body, host=host_header, timeout=timeout)


def request_sync(
    host: str,
    port: int,
    method: str = "GET",
    target: str = "/",
    headers: HeaderPairs = (),
    body: bytes | Sequence[bytes] = b"",
    *,
    host_header: str | None = None,
    timeout: float = 5.0,
) -> Response:
    """One blocking request on a fresh connection."""
    with Connection(host, port, timeout=timeout) as conn:
        return conn.request(method, target, headers, body, host=host_header, timeout=timeout)


async def run_concurrently(
    n: int, fn: Callable[[int], Awaitable[T]], *, concurrency: int | None = None
) -> list[T | BaseException]:
    """``fn(0) … fn(n-1)``, at most ``concurrency`` at a time; exceptions are returned."""
    sem = asyncio.Semaphore(concurrency or n)

    async def one(i: int) -> T:
        async with sem:
            return await fn(i)

    return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)


async def concurrent_requests(
    host: str,
    port: int,
    n: int,
    *,
    connections: int = 10,
    method: str = "GET",
    target: str = "/",
    headers: HeaderPairs = (),
    body: bytes = b"",
    host_header: str | None = None,
    timeout: float = 5.0,
) -> list[Response | BaseException]:
    """``n`` requests over ``connections`` keep-alive connections running in parallel.

    A connection that fails or is closed by the server is replaced for the next request.
    Results are in request order.
    """
    hs = list(headers)
    results: list[Response | BaseException] = [RuntimeError("not run")] * n
    queue = iter(range(n))

    async def worker() -> None:
        conn: AsyncConnection | None = None
        try:
            for i in queue:
                try:
                    if conn is None:
                        conn = await AsyncConnection.open(host, port, timeout=timeout)
                    resp = await conn.request(
                        method, target, hs, body, host=host_header, timeout=timeout
                    )
                    results[i] = resp
                    if resp.will_close:
                        await conn.close()
                        conn = None
                except (OSError, TimeoutError, BadResponse) as exc:
                    results[i] = exc
                    if conn is not None:
                        await conn.close()
                    conn = None
        finally:
            if conn is not None:
                await conn.close()

    await asyncio.gather(*(worker() for _ in range(min(connections, n))))
    return results
