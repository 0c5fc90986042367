"""Envoy's ``http_inspector`` listener filter, sans-I/O: from the first bytes a plaintext client
sends, whether it speaks HTTP and which version.

Feed the bytes received so far to :func:`detect`; it answers :data:`NEED_DATA` until it can
decide, then the application protocol Envoy sets (``h2c``, ``http/1.1``, ``http/1.0``) or
None: not HTTP. Nothing is consumed: the caller replays the same bytes into the chain it then
picks.

Envoy's rules, kept here:

- the HTTP/2 prior-knowledge preface, whole, is ``h2c``; a prefix of it waits for more;
- otherwise the request line is judged as Envoy's request parser (Balsa, custom methods off)
  judges it: the first byte must start a known method, and once the line has ended (at the
  first CR or LF) the method must be known and the version ``HTTP/<d>.<d>``. ``HTTP/1.1`` is
  ``http/1.1``; any other version is ``http/1.0``, as Envoy sets it;
- a request line still unfinished after :data:`MAX_INSPECT_SIZE` bytes is not HTTP (the
  filter's peek buffer is full).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "H2C",
    "H2_PREFACE",
    "HTTP_10",
    "HTTP_11",
    "MAX_INSPECT_SIZE",
    "NEED_DATA",
    "NeedData",
    "detect",
]

#: The most bytes Envoy's inspector peeks (its ``Config::MAX_INSPECT_SIZE``).
MAX_INSPECT_SIZE: Final = 8192

H2_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2C: Final = "h2c"
HTTP_11: Final = "http/1.1"
HTTP_10: Final = "http/1.0"

# The methods Envoy's parser knows when custom methods are off.
_METHODS: Final = frozenset(
    b"ACL BIND CHECKOUT CONNECT COPY DELETE GET HEAD LINK LOCK M-SEARCH MERGE MKACTIVITY "
    b"MKCALENDAR MKCOL MOVE NOTIFY OPTIONS PATCH POST PROPFIND PROPPATCH PURGE PUT REBIND "
    b"REPORT SEARCH SOURCE SUBSCRIBE TRACE UNBIND UNLINK UNLOCK UNSUBSCRIBE".split()
)
_FIRST_BYTES: Final = frozenset(m[0] for m in _METHODS)
_VERSION: Final = re.compile(rb"HTTP/(\d)\.(\d)")


class NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


def detect(data: bytes) -> str | NeedData | None:
    """The application protocol of a connection whose first bytes are ``data``."""
    if not data:
        return NEED_DATA
    head = data[: len(H2_PREFACE)]
    if H2_PREFACE.startswith(head):
        return H2C if len(head) == len(H2_PREFACE) else NEED_DATA
    if data[0] not in _FIRST_BYTES:
        return None
    window = data[:MAX_INSPECT_SIZE]
    end = _line_end(window)
    if end < 0:
        return None if len(data) >= MAX_INSPECT_SIZE else NEED_DATA
    return _request_line(window[:end])


def _line_end(data: bytes) -> int:
    cr, lf = data.find(b"\r"), data.find(b"\n")
    if cr < 0 or lf < 0:
        return max(cr, lf)
    return min(cr, lf)


def _request_line(line: bytes) -> str | None:
    parts = line.split(b" ")
    # ``GET /`` without a version is HTTP/0.9 to the parser: not HTTP/1.1.
    if len(parts) not in (2, 3) or parts[0] not in _METHODS or not parts[1]:
        return None
    if len(parts) == 2:
        return HTTP_10
    version = _VERSION.fullmatch(parts[2])
    if version is None:
        return None
    return HTTP_11 if version.group(1, 2) == (b"1", b"1") else HTTP_10
