"""Test doubles for the proxy's seams: a clock with timers, a transport and a connector.

They stand in for the event loop and the kernel only, so a test drives the real connection
manager, stream, filters, router, pools and codec byte by byte and moves time by hand: no
sockets, no sleeps, no wall clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any

__all__ = ["FakeClock", "FakeConnector", "FakeTransport"]


class _Handle:
    __slots__ = ("args", "callback", "cancelled", "seq", "when")

    def __init__(self, when: float, seq: int, callback: Callable[..., object], args: tuple) -> None:
        self.when = when
        self.seq = seq
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: _Handle) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)


class FakeClock:
    """``time`` / ``call_later`` / ``call_at`` of an event loop, on a clock that only moves when
    the test calls :meth:`advance`. Usable wherever the proxy takes a loop for timers."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._timers: list[_Handle] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> _Handle:
        handle = _Handle(when, next(self._seq), callback, args)
        heapq.heappush(self._timers, handle)
        return handle

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> _Handle:
        return self.call_at(self.now + delay, callback, *args)

    def advance(self, seconds: float) -> None:
        """Move time forward, running every timer that falls due, in order."""
        end = self.now + seconds
        while self._timers and self._timers[0].when <= end:
            handle = heapq.heappop(self._timers)
            if handle.cancelled:
                continue
            self.now = max(self.now, handle.when)
            handle.callback(*handle.args)
        self.now = end

    @property
    def pending(self) -> int:
        return sum(1 for h in self._timers if not h.cancelled)


class FakeTransport:
    """What the protocols use of an asyncio transport; it records writes and read pauses."""

    def __init__(
        self,
        peer: tuple[str, int] = ("127.0.1.100", 40000),
        local: tuple[str, int] = ("127.0.1.1", 8080),
    ) -> None:
        self.peer = peer
        self.local = local
        self.data = bytearray()
        self.reading = True
        self.pauses = 0
        self.closed = False
        self.aborted = False
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer, "sockname": self.local}.get(name, default)

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.data += data

    def writelines(self, parts: list[bytes]) -> None:
        for part in parts:
            self.write(part)

    def take(self) -> bytes:
        """What was written since the last take."""
        out = bytes(self.data)
        self.data.clear()
        return out

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        assert not self.reading, "resumed while reading"
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = self.aborted = True

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


class FakeConnector:
    """The pools' :class:`~proxy.upstream.pool.Connector`: connects wait until the test
    completes or fails them."""

    def __init__(self) -> None:
        self.pending: list[tuple[Any, Any, Callable[[BaseException | None], None]]] = []
        self.transports: list[FakeTransport] = []
        self.cancelled = 0

    def connect(
        self,
        conn: Any,
        host: Any,
        timeout: float,
        done: Callable[[BaseException | None], None],
        source: tuple[str, int] | None = None,
        socket: Any = None,
    ) -> Callable[[], None]:
        entry = (conn, host, done)
        self.pending.append(entry)

        def cancel() -> None:
            if entry in self.pending:
                self.pending.remove(entry)
                self.cancelled += 1
                done(asyncio.CancelledError())

        return cancel

    def complete(self, index: int = 0) -> tuple[Any, FakeTransport]:
        """Finish a pending connect: the upstream connection and its transport."""
        conn, host, done = self.pending.pop(index)
        transport = FakeTransport(peer=(host.address, host.port), local=("127.0.1.200", 50000))
        self.transports.append(transport)
        conn.connection_made(transport)
        done(None)
        return conn, transport

    def fail(self, error: BaseException, index: int = 0) -> None:
        _, _, done = self.pending.pop(index)
        done(error)
