"""Socket helpers for the proxy tests."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

__all__ = ["blackhole"]


@contextlib.contextmanager
def blackhole(host: str) -> Iterator[tuple[str, int]]:
    """An address on ``host`` whose connects never complete: a listener with a full accept
    queue, so the kernel drops SYNs instead of refusing them (a connect timeout on loopback)."""
    server = socket.socket()
    server.bind((host, 0))
    server.listen(0)
    address: tuple[str, int] = server.getsockname()
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(address)
        yield address
    finally:
        for sock in (*fillers, server):
            sock.close()
