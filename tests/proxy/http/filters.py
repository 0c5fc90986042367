"""Filters written the way a user would, to drive the filter seams from tests.

Each is registered as one :class:`FilterEntry` (config message, translation, factory) under
``test.<kind>``; every instance made is appended to the registry's ``made`` list so a test can
reach the filter of its request (and through it the stream's callbacks).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import struct_pb2

from proxy.config.translate import FilterEntry, FilterRegistry, default_registry
from proxy.http.filter import (
    DownstreamCallbacks,
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    HttpFilter,
)

__all__ = ["filter_spec", "filters_registry"]

_STRUCT = "type.googleapis.com/google.protobuf.Struct"


def filter_spec(kind: str, **options: Any) -> dict[str, Any]:
    return {
        "name": f"test.{kind}",
        "typed_config": {"@type": _STRUCT, "value": {"kind": kind, **options}},
    }


class Recorder(HttpFilter):
    """Sees everything, changes nothing; keeps what it saw."""

    def __init__(self) -> None:
        self.cb: DownstreamCallbacks | None = None
        self.seen: list[tuple[str, object]] = []
        self.destroyed = False

    def decode_headers(self, cb, headers, end_stream):
        self.cb = cb
        self.seen.append(("decode_headers", end_stream))
        return FilterHeadersStatus.CONTINUE

    def decode_data(self, cb, data, end_stream):
        self.seen.append(("decode_data", (data, end_stream)))
        return FilterDataStatus.CONTINUE

    def decode_trailers(self, cb, trailers):
        self.seen.append(("decode_trailers", trailers))
        return FilterTrailersStatus.CONTINUE

    def encode_headers(self, cb, status, headers, end_stream):
        self.seen.append(("encode_headers", status))
        return FilterHeadersStatus.CONTINUE

    def encode_data(self, cb, data, end_stream):
        self.seen.append(("encode_data", (data, end_stream)))
        return FilterDataStatus.CONTINUE

    def on_destroy(self) -> None:
        self.destroyed = True


class Hold(HttpFilter):
    """An asynchronous check (ext_authz, a rate limit service): stops everything until the
    test calls ``cb.continue_decoding()`` or answers with ``cb.send_local_reply``."""

    def __init__(self) -> None:
        self.cb: DownstreamCallbacks | None = None

    def decode_headers(self, cb, headers, end_stream):
        self.cb = cb
        headers.append((b"x-held", b"yes"))
        return FilterHeadersStatus.STOP_ALL_ITERATION_AND_BUFFER


class BufferBody(HttpFilter):
    """Envoy's buffer filter: the request goes on once its whole body is here."""

    def __init__(self) -> None:
        self.chunks = 0

    def decode_headers(self, cb, headers, end_stream):
        return FilterHeadersStatus.CONTINUE if end_stream else FilterHeadersStatus.STOP_ITERATION

    def decode_data(self, cb, data, end_stream):
        self.chunks += 1
        if end_stream:
            return FilterDataStatus.CONTINUE
        return FilterDataStatus.STOP_ITERATION_AND_BUFFER


class HoldResponse(HttpFilter):
    """Holds the response head until the test continues; rewrites the status."""

    def __init__(self, status: int) -> None:
        self.cb: DownstreamCallbacks | None = None
        self.status = status

    def encode_headers(self, cb, status, headers, end_stream):
        self.cb = cb
        cb.set_response_status(self.status)
        headers.append((b"x-held-response", b"yes"))
        return FilterHeadersStatus.STOP_ITERATION

    def encode_data(self, cb, data, end_stream):
        # Returning CONTINUE here would let the held head go (Envoy's rule); keep it all.
        return FilterDataStatus.STOP_ITERATION_AND_BUFFER


def filters_registry() -> tuple[FilterRegistry, list[HttpFilter]]:
    made: list[HttpFilter] = []
    registry = default_registry()

    def translate(message: Any, path: str) -> dict[str, Any]:
        return dict(message.items())

    def factory(config: Any, context: Any):
        kind = config["kind"]

        def make() -> HttpFilter:
            f: HttpFilter
            if kind == "recorder":
                f = Recorder()
            elif kind == "hold":
                f = Hold()
            elif kind == "buffer":
                f = BufferBody()
            else:
                f = HoldResponse(int(config.get("status", 299)))
            made.append(f)
            return f

        return make

    for kind in ("recorder", "hold", "buffer", "hold_response"):
        registry.register(
            FilterEntry(f"test.{kind}", struct_pb2.Struct, translate, factory=factory)
        )
    return registry, made
