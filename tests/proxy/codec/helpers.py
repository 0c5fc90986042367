"""Drivers for the codec tests: feed bytes in pieces, drain events, answer like a transport."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

from proxy.codec import (
    NEED_DATA,
    ClientConnection,
    ConnectionClosed,
    Data,
    EndOfMessage,
    ServerConnection,
)

__all__ = ["bytewise", "fetch", "merge", "serve", "split_at"]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({min(max(cut, 0), len(data)) for cut in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds) if b > a]


def merge(events: Iterable[Any]) -> list[Any]:
    """Adjacent Data events joined (their boundaries follow the reads, not the message)."""
    out: list[Any] = []
    for event in events:
        if type(event) is Data and out and type(out[-1]) is Data:
            out[-1] = Data(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def serve(
    chunks: Sequence[bytes], *, eof: bool = True, conn: ServerConnection | None = None
) -> list[Any]:
    """Feed ``chunks`` to a server connection, draining after each one and answering every
    complete request with an empty 200, as the transport does. Returns the merged events."""
    conn = conn if conn is not None else ServerConnection()
    out: list[Any] = []
    for chunk in [*chunks, b""] if eof else chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            out.append(event)
            if type(event) is ConnectionClosed:
                break
            if type(event) is EndOfMessage:
                conn.send_response(200, [(b"content-length", b"0")])
                if conn.keep_alive:
                    conn.start_next_cycle()
    return merge(out)


def fetch(
    exchanges: Sequence[tuple[bytes, Sequence[bytes]]], conn: ClientConnection | None = None
) -> list[Any]:
    """For each (method, response pieces): send a bodyless request, feed the pieces, drain,
    and start the next cycle when the connection allows it. Returns the merged events."""
    conn = conn if conn is not None else ClientConnection()
    out: list[Any] = []
    for method, chunks in exchanges:
        conn.send_request(method, b"/", [(b"host", b"upstream")])
        assert conn.send_end() == b""
        for chunk in chunks:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                out.append(event)
                if type(event) is ConnectionClosed:
                    break
        if conn.keep_alive:
            conn.start_next_cycle()
    return merge(out)
