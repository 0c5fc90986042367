"""What the test upstream does on a path, and what it records: plain frozen values.

Behaviours serialise to JSON (:func:`behaviour_to_json`) so that the same script can be given
to an upstream running in a subprocess.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "STREAM_BLOCK",
    "Behaviour",
    "Chunked",
    "Close",
    "CloseMidResponse",
    "Delay",
    "Echo",
    "Expect100",
    "Fixed",
    "Hang",
    "Headers",
    "Held",
    "RawResponse",
    "ReceivedRequest",
    "Reset",
    "Steps",
    "Stream",
    "UpstreamStats",
    "behaviour_from_json",
    "behaviour_to_json",
    "decode_value",
    "encode_value",
    "stream_body",
    "stream_sha256",
]

Headers = tuple[tuple[str, str], ...]

# Body of Stream responses: deterministic, so a client can check every byte it got.
STREAM_BLOCK = bytes(i % 251 for i in range(65536))


def stream_body(size: int) -> bytes:
    """The exact body a :class:`Stream` (or a partial :class:`CloseMidResponse`) sends."""
    reps = -(-size // len(STREAM_BLOCK))
    return (STREAM_BLOCK * reps)[:size]


def stream_sha256(size: int) -> str:
    return hashlib.sha256(stream_body(size)).hexdigest()


# -- behaviours -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Echo:
    """JSON describing the request (method, path, headers, body length and sha256)."""

    status: int = 200
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Fixed:
    """A fixed status, body and headers."""

    status: int = 200
    body: bytes = b""
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait ``seconds`` after reading the request, then behave as ``then``."""

    seconds: float
    then: Behaviour = Echo()


@dataclass(frozen=True, slots=True)
class Chunked:
    """A chunked response, one chunk per item, ``interval`` seconds apart, with trailers."""

    chunks: tuple[bytes, ...] = (b"hello ", b"world")
    status: int = 200
    interval: float = 0.0
    trailers: Headers = ()


@dataclass(frozen=True, slots=True)
class Stream:
    """``size`` bytes of :func:`stream_body`, with content-length or chunked."""

    size: int
    chunked: bool = False


@dataclass(frozen=True, slots=True)
class CloseMidResponse:
    """Headers promising ``content_length`` bytes, then ``body_bytes`` of them, then FIN."""

    body_bytes: int = 0
    content_length: int = 1024
    status: int = 200


@dataclass(frozen=True, slots=True)
class Close:
    """Read the request, then close (FIN) without sending a byte."""


@dataclass(frozen=True, slots=True)
class Reset:
    """Reset the connection (SO_LINGER 0): before any byte, or after headers (+ some body)."""

    after_headers: bool = False
    body_bytes: int = 0
    content_length: int = 1024
    pause: float = 0.05  # lets the peer read what was sent before the RST arrives


@dataclass(frozen=True, slots=True)
class Held:
    """Read the request, wait until the test calls ``Upstream.release(gate)``, then behave as
    ``then``: a request kept in flight for exactly as long as the test needs, however slow
    the machine (a :class:`Delay` can run out before a loaded test gets there). In-process
    upstreams only: a subprocess upstream holds it until it stops."""

    gate: str
    then: Behaviour = Echo()


@dataclass(frozen=True, slots=True)
class Hang:
    """Read the request and never answer (until the peer closes or the server stops)."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    """Send these exact bytes; optionally close afterwards."""

    data: bytes
    close: bool = False


@dataclass(frozen=True, slots=True)
class Expect100:
    """How to answer ``Expect: 100-continue`` (the default is to send ``100 Continue``).

    ``ignore``: read the body without sending 100. ``reject``: send ``status`` without
    reading the body, then close the connection.
    """

    mode: Literal["continue", "ignore", "reject"] = "continue"
    status: int = 417
    then: Behaviour = Echo()


@dataclass(frozen=True, slots=True)
class Steps:
    """The n-th request to this route gets ``steps[n]``; the last step repeats."""

    steps: tuple[Behaviour, ...]


Behaviour = (
    Echo
    | Fixed
    | Delay
    | Chunked
    | Stream
    | CloseMidResponse
    | Close
    | Reset
    | Hang
    | Held
    | RawResponse
    | Expect100
    | Steps
)
_KINDS: dict[str, type[Any]] = {
    c.__name__: c
    for c in (Echo, Fixed, Delay, Chunked, Stream, CloseMidResponse, Close, Reset, Hang,
              Held, RawResponse, Expect100, Steps)
}  # fmt: skip


def encode_value(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        d = {f.name: encode_value(getattr(v, f.name)) for f in dataclasses.fields(v)}
        return {"kind": type(v).__name__, **d}
    if isinstance(v, bytes):
        return {"b64": base64.b64encode(v).decode()}
    if isinstance(v, tuple | list):
        return [encode_value(x) for x in v]
    return v


def decode_value(v: Any) -> Any:
    if isinstance(v, dict):
        if "b64" in v:
            return base64.b64decode(v["b64"])
        kind = _KINDS[v["kind"]]
        return kind(**{k: decode_value(x) for k, x in v.items() if k != "kind"})
    if isinstance(v, list):
        return tuple(decode_value(x) for x in v)
    return v


def behaviour_to_json(b: Behaviour) -> dict[str, Any]:
    encoded: dict[str, Any] = encode_value(b)
    return encoded


def behaviour_from_json(d: Mapping[str, Any]) -> Behaviour:
    decoded: Behaviour = decode_value(dict(d))
    return decoded


# -- records ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    method: str
    target: str
    version: str
    raw_headers: Headers  # as received, original case and order
    body_length: int
    body_sha256: str
    body: bytes | None  # None when longer than the server's record_body_limit
    trailers: Headers
    connection: int  # connection number on this server, from 1
    index_on_connection: int  # 1 for the first request on a connection

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def headers(self) -> dict[str, str]:
        """Lower-case names; repeated headers joined with ``, ``."""
        out: dict[str, str] = {}
        for k, v in self.raw_headers:
            k = k.lower()
            out[k] = f"{out[k]}, {v}" if k in out else v
        return out

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = encode_value(self)
        d.pop("kind")
        d["body"] = None if self.body is None else base64.b64encode(self.body).decode()
        return d


@dataclass(slots=True)
class UpstreamStats:
    connections: int = 0
    open_connections: int = 0
    requests: int = 0
    by_path: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "open_connections": self.open_connections,
            "requests": self.requests,
            "by_path": dict(self.by_path),
        }
