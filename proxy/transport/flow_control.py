"""Back-pressure between the two sides of a proxied stream.

Each side's protocol owns one :class:`FlowControl`. When a transport's write buffer goes
over its high-water mark asyncio calls ``pause_writing``; the proxy then stops reading from
the *other* side until ``resume_writing``. This is what keeps a 1 GiB body at bounded memory.

Reading is disabled by a count, as Envoy's ``readDisable``: several independent reasons (the
other side's write buffer is full, a filter holds the body, the body waits for an upstream
connection, a pipelined request waits for its turn) each disable once and enable once, and
the transport reads again only when none is left.
"""

from __future__ import annotations

import asyncio

__all__ = ["FlowControl"]


class FlowControl:
    __slots__ = ("_transport", "disabled")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.disabled = 0

    @property
    def read_paused(self) -> bool:
        return self.disabled > 0

    def read_disable(self, disable: bool) -> None:
        # Plain counts and flag checks rather than try/except: this runs on hot reads.
        if disable:
            self.disabled += 1
            if self.disabled == 1 and not self._transport.is_closing():
                self._transport.pause_reading()
        elif self.disabled:
            self.disabled -= 1
            if not self.disabled and not self._transport.is_closing():
                self._transport.resume_reading()

    def clear(self) -> None:
        """Drop every reason at once (the exchange they belonged to is over)."""
        if self.disabled:
            self.disabled = 0
            if not self._transport.is_closing():
                self._transport.resume_reading()
