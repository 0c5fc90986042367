"""A stream's time limits (Envoy's stream duration and idle timeouts) and the answers the
proxy gives itself (plain or gRPC-shaped local replies), kept apart from the exchange itself
in :mod:`proxy.http.stream`.

:class:`StreamLimits` is a base of :class:`~proxy.http.stream.ActiveStream`: it reads the
stream's own attributes (declared below for the type checker) and answers through its
``send_local_reply`` / ``reset``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.config.model_route import RouteAction
from proxy.http.headers import get_header, set_header
from proxy.http.local_reply import LocalReply, ResponseFlag
from proxy.routing.grpc import (
    GrpcStatus,
    format_grpc_timeout,
    grpc_local_reply_headers,
    is_grpc_content_type,
    parse_grpc_timeout,
    stream_duration_timeout,
)

if TYPE_CHECKING:
    from proxy.config.model_route import Route
    from proxy.http.codec_api import StreamEncoder
    from proxy.http.filter import Headers, Timers
    from proxy.http.hcm import HcmRuntime
    from proxy.http.stream_info import StreamInfo

__all__ = ["StreamLimits"]


class StreamLimits:
    __slots__ = ()

    if TYPE_CHECKING:
        hcm: HcmRuntime
        encoder: StreamEncoder
        timers: Timers
        route: Route | None
        request_headers: Headers
        stream_info: StreamInfo
        done: bool
        response_started: bool
        request_complete: bool
        _duration_timer: Any

        def send_local_reply(
            self,
            status: int,
            body: bytes = b"",
            *,
            flag: str | None = None,
            headers: tuple[tuple[bytes, bytes], ...] = (),
            details: str = "",
            grpc_status: int | None = None,
        ) -> None: ...
        def reset(self) -> None: ...
        def encode_headers(self, status: int, headers: Headers, end_stream: bool) -> None: ...
        def encode_data(self, data: bytes, end_stream: bool) -> None: ...

    def _arm_stream_duration(self) -> None:
        """Envoy's stream duration limit: the route's ``max_stream_duration`` (a gRPC
        request's ``grpc-timeout`` under ``grpc_timeout_header_max``), else the connection
        manager's. A route that sets one also tells a gRPC upstream the deadline it computed
        in ``grpc-timeout``, as Envoy does."""
        route = self.route
        limits = None
        if route is not None and type(route.action) is RouteAction:
            limits = route.action.max_stream_duration
        grpc = self.is_grpc_request()
        header = get_header(self.request_headers, b"grpc-timeout") if grpc else None
        duration = stream_duration_timeout(
            limits, self.hcm.max_stream_duration, parse_grpc_timeout(header)
        )
        if not duration:
            return
        if grpc and limits is not None:
            set_header(self.request_headers, b"grpc-timeout", format_grpc_timeout(duration))
        self._duration_timer = self.timers.call_later(duration, self._on_max_duration)

    def _on_max_duration(self) -> None:
        self._duration_timer = None
        if self.done:
            return
        self.hcm.stats.downstream_rq_max_duration_reached.value += 1
        if self.response_started:
            self.reset()
            return
        # 408 while the client still owes request bytes, 504 once it has sent them all.
        self.send_local_reply(
            504 if self.request_complete else 408,
            b"downstream duration timeout",
            details="max_duration_timeout",
            grpc_status=GrpcStatus.DEADLINE_EXCEEDED,
        )
        self.encoder.flush()

    def on_idle_timeout(self) -> None:
        """Nothing moved either way for idle_timeout: Envoy's stream idle timeout (a tunnel
        after an upgrade included)."""
        self.hcm.stats.downstream_rq_idle_timeout.value += 1
        self.stream_info.add_response_flag(ResponseFlag.STREAM_IDLE_TIMEOUT)
        if self.response_started:
            self.stream_info.response_code_details = "stream_idle_timeout"
            self.reset()
            return
        # 408 while the client still owes request bytes, 504 while the upstream owes a response.
        status = 504 if self.request_complete else 408
        self.send_local_reply(status, b"stream timeout", details="stream_idle_timeout")

    def is_grpc_request(self) -> bool:
        """``content-type: application/grpc[+...]``, as Envoy tells a gRPC request (looked up
        only when it matters: local replies, stream durations)."""
        return is_grpc_content_type(get_header(self.request_headers, b"content-type"))

    def encode_local_reply(self, reply: LocalReply) -> None:
        if self.is_grpc_request():
            self._encode_grpc_local_reply(reply)
            return
        body = reply.body
        if body:
            # A filter's own content-type (an authorizer's denial) replaces the default, as
            # Envoy's modify-headers callback does.
            typed = any(k == b"content-type" for k, _ in reply.headers)
            hdrs = [
                (b"content-length", b"%d" % len(body)),
                *(() if typed else ((b"content-type", b"text/plain"),)),
                *reply.headers,
            ]
        elif reply.status in (204, 304):
            hdrs = [*reply.headers]  # no body and, as in Envoy, no length either
        else:
            hdrs = [*reply.headers, (b"content-length", b"0")]
        if not body:
            self.encode_headers(reply.status, hdrs, True)
        else:
            self.encode_headers(reply.status, hdrs, False)
            self.encode_data(body, True)
        self.encoder.flush()

    def _encode_grpc_local_reply(self, reply: LocalReply) -> None:
        """A gRPC caller reads a trailers-only response: status 200, ``grpc-status`` from the
        HTTP status (gRPC's mapping) and the body as ``grpc-message``, as Envoy answers."""
        fields = grpc_local_reply_headers(
            reply.status, reply.body.decode("utf-8", "replace"), reply.grpc_status
        )
        extra = [field for field in reply.headers if field[0] != b"content-type"]
        self.encode_headers(200, [*fields, *extra], True)
        self.encoder.flush()
