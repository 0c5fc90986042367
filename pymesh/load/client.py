"""One keep-alive HTTP/1.1 client connection for the load generator (asyncio + httptools).

A request is written whole and its response read whole (the body is counted, not kept);
a response that asks to close, a reset or a parse error closes the connection, and the next
request opens a new one. Through a forward proxy (a process-mode pod's sidecar) requests are
sent in absolute form, as curl and Go's client send them to an ``HTTP_PROXY``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from pymesh.errors import ConfigError

__all__ = ["Connection", "Response", "Target", "parse_target"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect and what to send: ``request_head`` is everything up to the body."""

    host: str
    port: int
    request_head: bytes
    body: bytes = b""
    #: when set, a response whose body lacks these bytes is marked ``matched=False`` (a 200
    #: that is not the page asked for: a benchmark counts it as a failure)
    expect: bytes = b""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_target(
    url: str,
    *,
    method: str = "GET",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    proxy: str | None = None,
    user_agent: str = "pymesh-load",
    expect: bytes = b"",
) -> Target:
    """The connection and the request bytes for ``url`` (``http://`` only)."""
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(f"{url}: only http:// URLs with a host are supported")
    try:
        port = parts.port or 80
    except ValueError:
        raise ConfigError(f"{url}: bad port") from None
    authority = parts.netloc.rpartition("@")[2]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host, conn_port, target = parts.hostname, port, path
    if proxy:
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if not via.hostname:
            raise ConfigError(f"proxy {proxy!r} has no host")
        host, conn_port, target = via.hostname, via.port or 80, f"http://{authority}{path}"
    given = {name.lower() for name, _ in headers}
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
    if "user-agent" not in given:
        lines.append(f"User-Agent: {user_agent}")
    lines += [f"{name}: {value}" for name, value in headers if name.lower() != "host"]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return Target(host, conn_port, head, body, expect)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    header_bytes: int
    body_bytes: int
    keep_alive: bool
    matched: bool = True  # the body held the target's ``expect`` bytes (True when none)


class _Protocol(asyncio.Protocol):
    """Feeds httptools and completes one future per response."""

    def __init__(self, expect: bytes = b"") -> None:
        self.expect = expect
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self._reason = ""
        self._header_bytes = 0
        self._body_bytes = 0
        self._found = not expect
        self._tail = b""  # the last len(expect)-1 body bytes: the text may span two chunks

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("connection closed by the server"))

    # -- httptools callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reason, self._header_bytes, self._body_bytes = "", 0, 0
        self._found, self._tail = not self.expect, b""

    def on_status(self, status: bytes) -> None:
        self._reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if not self._found:
            seen = self._tail + body
            self._found = self.expect in seen
            self._tail = seen[len(seen) - len(self.expect) + 1 :]

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        # The status line counts towards the header size, as fortio counts it.
        head = self._header_bytes + len(f"HTTP/1.1 {status} {self._reason}\r\n\r\n")
        response = Response(
            status,
            self._reason,
            head,
            self._body_bytes,
            self.parser.should_keep_alive(),
            self._found,
        )
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    # -- helpers -----------------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Connection:
    """Requests to one target, one at a time, over a connection opened as needed."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.opened = 0  # sockets opened so far
        self._protocol: _Protocol | None = None

    async def request(self) -> Response:
        """One exchange; raises OSError / ConnectionError / TimeoutError on failure."""
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        if protocol is None or protocol.closed:
            self.opened += 1
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Protocol(self.target.expect), self.target.host, self.target.port
                ),
                self.timeout,
            )
            self._protocol = protocol
        assert protocol is not None and protocol.transport is not None
        waiter: asyncio.Future[Response] = loop.create_future()
        protocol.waiter = waiter
        protocol.transport.write(self.target.request_head + self.target.body)
        try:
            response: Response = await asyncio.wait_for(waiter, self.timeout)
        except BaseException:
            self.close()
            raise
        if not response.keep_alive:
            self.close()
        return response

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None
