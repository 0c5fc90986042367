"""Filter iteration for one stream (Envoy's ``FilterManager``): statuses, stopping, buffering
and continuing, in both directions.

The router is the last decoder of every chain; the encoders are the chain's filters in
reverse. A filter that overrides no hook of a direction is left out of it. Nothing is
allocated for iteration unless some filter stops: the :class:`_Held` state of a direction
exists only while it is stopped or has buffered something.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.http.filter import (
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    Headers,
    HttpFilter,
)

if TYPE_CHECKING:
    from proxy.http.filter import DownstreamCallbacks

__all__ = ["FilterManager"]

_CONTINUE = FilterDataStatus.CONTINUE
_BUFFER = FilterDataStatus.STOP_ITERATION_AND_BUFFER
_STOP_ALL = FilterHeadersStatus.STOP_ALL_ITERATION_AND_BUFFER
_HEADERS_CONTINUE = FilterHeadersStatus.CONTINUE
_TRAILERS_CONTINUE = FilterTrailersStatus.CONTINUE


class _Held:
    """A stopped direction: where headers stopped, what was buffered, and where."""

    __slots__ = (
        "buffer",
        "buffer_at",
        "end",
        "headers",
        "headers_end",
        "next",
        "read_disabled",
        "size",
        "status",
        "stop_all",
        "trailers",
    )

    def __init__(self) -> None:
        self.next = -1  # the filter whose headers hook runs next; -1 when headers went by
        self.stop_all = False
        self.buffer: list[bytes] | None = None
        self.buffer_at = -1  # buffered data resumes at buffer_at + 1
        self.end = False
        self.trailers: Headers | None = None
        self.headers: Headers = []
        self.headers_end = False
        self.status = 0
        self.size = 0
        self.read_disabled = False


class FilterManager:
    __slots__ = ("_d_aborted", "_d_held", "_decoders", "_e_held", "_encoders", "_filters")

    # Provided by the stream.
    request_headers: Headers
    response_started: bool
    done: bool

    def _init_filters(self, filters: list[HttpFilter]) -> None:
        """``filters`` in chain order, the router last."""
        self._filters = filters
        if len(filters) == 1:
            self._decoders = filters
            self._encoders: list[HttpFilter] = []
        else:
            self._decoders = [f for f in filters if f.DECODES]
            self._encoders = [f for f in reversed(filters) if f.ENCODES]
        self._d_held: _Held | None = None
        self._e_held: _Held | None = None
        self._d_aborted = False

    # -- decoding -----------------------------------------------------------------------------
    def _decode_headers_from(self, i: int, end_stream: bool) -> None:
        cb: DownstreamCallbacks = self  # type: ignore[assignment]
        decoders = self._decoders
        headers = self.request_headers
        n = len(decoders) - 1  # the router, last, always takes the request: no status to read
        while i < n:
            status = decoders[i].decode_headers(cb, headers, end_stream)
            i += 1
            if self._d_aborted:
                return
            if status is not _HEADERS_CONTINUE:
                held = self._d_held
                if held is None:
                    held = self._d_held = _Held()
                held.next = i
                held.stop_all = status is _STOP_ALL
                held.headers_end = end_stream
                return
        held = self._d_held
        if held is not None:
            held.next = -1
        decoders[n].decode_headers(cb, headers, end_stream)
        if held is not None and not self._d_aborted:
            self._release_decode(held)

    def _decode_data_from(self, i: int, data: bytes, end_stream: bool) -> None:
        cb: DownstreamCallbacks = self  # type: ignore[assignment]
        decoders = self._decoders
        held = self._d_held
        # Headers stopped at filter `stop`: data goes no further than it.
        last = len(decoders) - 1
        stop = held.next - 1 if held is not None and held.next >= 0 else last + 1
        while i < last:
            f = decoders[i]
            if i == stop and held is not None and held.stop_all:
                self._buffer(held, i, data, end_stream)
                return
            status = f.decode_data(cb, data, end_stream)
            if self._d_aborted:
                return
            if status is not _CONTINUE:
                if status is _BUFFER:
                    if held is None:
                        held = self._d_held = _Held()
                    self._buffer(held, i, data, end_stream)
                return
            if i == stop:
                # Envoy: a filter that stopped the headers and lets data through continues.
                assert held is not None
                self._buffer(held, i, data, end_stream)
                self.continue_decoding()
                return
            i += 1
        decoders[last].decode_data(cb, data, end_stream)

    def _decode_trailers_from(self, i: int, trailers: Headers) -> None:
        cb: DownstreamCallbacks = self  # type: ignore[assignment]
        decoders = self._decoders
        held = self._d_held
        if held is not None and (held.next >= 0 or held.buffer is not None):
            held.trailers = trailers  # after the data that waits
            return
        while i < len(decoders):
            status = decoders[i].decode_trailers(cb, trailers)
            i += 1
            if self._d_aborted:
                return
            if status is not _TRAILERS_CONTINUE:
                if held is None:
                    held = self._d_held = _Held()
                held.trailers = trailers
                held.buffer_at = i - 1
                return

    def _buffer(self, held: _Held, at: int, data: bytes, end_stream: bool) -> None:
        if held.buffer is None:
            held.buffer = [data]
        else:
            held.buffer.append(data)
        held.buffer_at = at
        held.end = held.end or end_stream
        held.size += len(data)
        if held is self._d_held and not held.read_disabled and held.size > self._buffer_limit():
            # Envoy's buffer watermark: a held request body stops the client, not memory.
            held.read_disabled = True
            self.read_disable(True)  # type: ignore[attr-defined]

    def _take_buffer(self, held: _Held) -> tuple[bytes, bool]:
        """What a direction buffered, as one piece, and whether it ends the message."""
        buffer = held.buffer
        assert buffer is not None
        held.buffer = None
        end = held.end
        held.end = False
        held.size = 0
        if held.read_disabled:
            held.read_disabled = False
            self.read_disable(False)  # type: ignore[attr-defined]
        return (buffer[0] if len(buffer) == 1 else b"".join(buffer)), end

    def _buffer_limit(self) -> int:
        raise NotImplementedError

    def continue_decoding(self) -> None:
        held = self._d_held
        if held is None or self.done or self._d_aborted:
            return
        if held.next >= 0:
            self._decode_headers_from(held.next, held.headers_end)
        else:
            self._release_decode(held)
        self.flush()  # type: ignore[attr-defined]

    def _release_decode(self, held: _Held) -> None:
        """Push what waited (data, then trailers) past the filter that held it."""
        if held.buffer is not None:
            data, end = self._take_buffer(held)
            self._decode_data_from(held.buffer_at + 1, data, end)
            if held.next >= 0 or held.buffer is not None:
                return  # stopped again
        trailers = held.trailers
        if trailers is not None:
            held.trailers = None
            at = held.buffer_at + 1
            self._d_held = None if held.buffer is None else held
            self._decode_trailers_from(at, trailers)

    # -- encoding -----------------------------------------------------------------------------
    def encode_headers(self, status: int, headers: Headers, end_stream: bool) -> None:
        if self._encoders:
            self._encode_headers_from(0, status, headers, end_stream)
        else:
            self._write_headers(status, headers, end_stream)

    def _encode_headers_from(self, i: int, status: int, headers: Headers, end: bool) -> None:
        cb: DownstreamCallbacks = self  # type: ignore[assignment]
        encoders = self._encoders
        held = self._e_held
        if held is None:
            held = self._e_held = _Held()
        held.status = status
        held.headers = headers
        held.headers_end = end
        while i < len(encoders):
            result = encoders[i].encode_headers(cb, held.status, headers, end)
            i += 1
            if self.done:
                return
            if result is not _HEADERS_CONTINUE:
                held.next = i
                held.stop_all = result is _STOP_ALL
                return
        held.next = -1
        self._write_headers(held.status, headers, end)
        self._release_encode(held)

    def set_response_status(self, status: int) -> None:
        held = self._e_held
        if held is not None:
            held.status = status

    def encode_data(self, data: bytes, end_stream: bool) -> None:
        if self._encoders:
            self._encode_data_from(0, data, end_stream)
        else:
            self._write_data(data, end_stream)

    def _encode_data_from(self, i: int, data: bytes, end_stream: bool) -> None:
        cb: DownstreamCallbacks = self  # type: ignore[assignment]
        encoders = self._encoders
        held = self._e_held
        stop = held.next - 1 if held is not None and held.next >= 0 else len(encoders)
        while i < len(encoders):
            if i == stop and held is not None and held.stop_all:
                self._buffer(held, i, data, end_stream)
                return
            status = encoders[i].encode_data(cb, data, end_stream)
            if self.done:
                return
            if status is not _CONTINUE:
                if status is _BUFFER:
                    if held is None:
                        held = self._e_held = _Held()
                    self._buffer(held, i, data, end_stream)
                return
            if i == stop:
                assert held is not None
                self._buffer(held, i, data, end_stream)
                self.continue_encoding()
                return
            i += 1
        self._write_data(data, end_stream)

    def encode_trailers(self, trailers: Headers) -> None:
        cb: DownstreamCallbacks = self  # type: ignore[assignment]
        held = self._e_held
        if held is not None and (held.next >= 0 or held.buffer is not None):
            held.trailers = trailers
            return
        for f in self._encoders:
            if f.encode_trailers(cb, trailers) is not _TRAILERS_CONTINUE:
                break  # a filter that holds trailers answers with its own end
        else:
            self._write_trailers(trailers)

    def continue_encoding(self) -> None:
        held = self._e_held
        if held is None or self.done:
            return
        if held.next >= 0:
            self._encode_headers_from(held.next, held.status, held.headers, held.headers_end)
        else:
            self._release_encode(held)
        self.flush()  # type: ignore[attr-defined]

    def _release_encode(self, held: _Held) -> None:
        if held.buffer is not None:
            data, end = self._take_buffer(held)
            self._encode_data_from(held.buffer_at + 1, data, end)
            if held.next >= 0 or held.buffer is not None:
                return
        trailers = held.trailers
        if trailers is not None:
            held.trailers = None
            self._write_trailers(trailers)

    # -- for the stream --------------------------------------------------------------------
    def destroy_filters(self) -> None:
        for f in self._filters:
            f.on_destroy()

    def _write_headers(self, status: int, headers: Headers, end_stream: bool) -> None:
        raise NotImplementedError

    def _write_data(self, data: bytes, end_stream: bool) -> None:
        raise NotImplementedError

    def _write_trailers(self, trailers: Headers) -> None:
        raise NotImplementedError
