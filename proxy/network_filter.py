"""Network read filters: what runs on a connection's bytes before its terminal filter (the TCP
proxy or the HTTP connection manager), as Envoy's ``Network::ReadFilter``.

A filter sees the first bytes the client sends (``on_data``) and answers ``CONTINUE`` (the
next filter, then the terminal one, gets them) or ``STOP_ITERATION`` (it holds them: it closed
the connection, or it waits for an answer and calls ``continue_reading()`` later). The chain
keeps what arrives while a filter holds and hands it on in order. Filters are made per
connection from factories built once per configuration, and a chain without filters is never
made, so connections on chains without them pay nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.http.stream_info import ConnectionInfo

__all__ = [
    "NetworkCallbacks",
    "ReadFilter",
    "ReadFilterChain",
    "ReadFilterFactory",
    "ReadFilterStatus",
]


class ReadFilterStatus(enum.IntEnum):
    CONTINUE = 0
    STOP_ITERATION = 1


class NetworkCallbacks(Protocol):
    """What a read filter sees of its connection."""

    @property
    def connection_info(self) -> ConnectionInfo: ...

    def dynamic_metadata(self, namespace: str) -> dict[str, object]:
        """The connection's dynamic metadata (later filters read what earlier ones wrote)."""

    @property
    def all_dynamic_metadata(self) -> Mapping[str, Mapping[str, object]]: ...

    def continue_reading(self) -> None:
        """Hand on what the calling filter held (after an asynchronous check allowed it)."""

    def close(self, details: str) -> None:
        """Close the connection without flushing, recording ``details`` as the connection
        termination details."""


class ReadFilter:
    """Per-connection filter; override what you need."""

    __slots__ = ()

    def on_data(self, cb: NetworkCallbacks, data: bytes) -> ReadFilterStatus:
        return ReadFilterStatus.CONTINUE

    def on_close(self) -> None:
        """The connection ended: cancel calls in flight."""


# (the connection's callbacks) -> a filter for that connection
ReadFilterFactory = Callable[[], ReadFilter]


class ReadFilterChain:
    """The read filters of one connection, in order; ``deliver`` receives what all of them let
    through (the terminal filter's input), ``close`` ends the connection."""

    __slots__ = (
        "_at",
        "_closed",
        "_deliver",
        "_do_close",
        "_filters",
        "_held",
        "_metadata",
        "connection_info",
        "termination_details",
    )

    def __init__(
        self,
        factories: Sequence[ReadFilterFactory],
        info: ConnectionInfo,
        deliver: Callable[[bytes], None],
        close: Callable[[], None],
    ) -> None:
        self._filters = [make() for make in factories]
        self.connection_info = info
        self._deliver = deliver
        self._do_close = close
        self._at = -1  # the filter holding data, -1 when none holds
        self._held: list[bytes] = []
        self._closed = False
        self._metadata: dict[str, dict[str, object]] | None = None
        self.termination_details = ""

    def on_data(self, data: bytes) -> None:
        if self._closed:
            return
        if self._at >= 0:
            self._held.append(data)
            return
        self._run(0, data)

    def _run(self, start: int, data: bytes) -> None:
        filters = self._filters
        for index in range(start, len(filters)):
            status = filters[index].on_data(self, data)
            if self._closed:
                return
            if status is not ReadFilterStatus.CONTINUE:
                self._at = index
                self._held.append(data)
                return
        self._deliver(data)

    @property
    def holding(self) -> bool:
        """A filter holds bytes (an asynchronous check in flight)."""
        return self._at >= 0

    # -- NetworkCallbacks ----------------------------------------------------------------------
    def dynamic_metadata(self, namespace: str) -> dict[str, object]:
        metadata = self._metadata
        if metadata is None:
            metadata = self._metadata = {}
        return metadata.setdefault(namespace, {})

    @property
    def all_dynamic_metadata(self) -> Mapping[str, Mapping[str, object]]:
        return self._metadata or {}

    def continue_reading(self) -> None:
        at = self._at
        if at < 0 or self._closed:
            return
        self._at = -1
        held, self._held = self._held, []
        data = b"".join(held)
        if data:
            self._run(at + 1, data)

    def close(self, details: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.termination_details = details
        self._held.clear()
        self._do_close()

    def on_close(self) -> None:
        self._closed = True
        for f in self._filters:
            f.on_close()
