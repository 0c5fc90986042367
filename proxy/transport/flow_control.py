"""Back-pressure between the two sides of a proxied stream.

Each side's protocol owns one :class:`FlowControl`. When a transport's write buffer goes
over its high-water mark asyncio calls ``pause_writing``; the proxy then stops reading from
the *other* side until ``resume_writing``. This is what keeps a 1 GiB body at bounded memory.
"""

from __future__ import annotations

import asyncio

__all__ = ["FlowControl"]


class FlowControl:
    __slots__ = ("_transport", "read_paused", "write_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False

    def pause_reading(self) -> None:
        # Plain flag checks rather than try/except: pause/resume run on every hot read.
        if not self.read_paused:
            self.read_paused = True
            if not self._transport.is_closing():
                self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()
