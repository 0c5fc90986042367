"""Small per-request helpers that must be fast: request ids and the Date header."""

from __future__ import annotations

import random
import time
from email.utils import formatdate

__all__ = ["DateCache", "RequestIdGenerator"]


class RequestIdGenerator:
    """UUID4 strings for ``x-request-id``, several times cheaper than ``uuid.uuid4()``:
    one ``getrandbits`` call and one format, no UUID object."""

    __slots__ = ("_bits",)

    def __init__(self, rng: random.Random) -> None:
        self._bits = rng.getrandbits

    def __call__(self) -> bytes:
        n = self._bits(128)
        # version 4, RFC 4122 variant
        n = (n & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
        h = f"{n:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()


class DateCache:
    """The ``date`` header value, formatted at most once per second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._value = formatdate(now, usegmt=True).encode()
        return self._value
