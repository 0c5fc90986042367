"""One HTTP request/response exchange (Envoy's ``ActiveStream``), whatever codec carries it.

The connection drives the stream with ``decode_headers`` / ``decode_data`` /
``decode_trailers`` and is told to write through the :class:`StreamEncoder` it handed in.
The stream prepares the request head (Host, ``x-request-id``, ``x-forwarded-*``, the
internal-request rule), matches the route once against the runtime snapshot it captured,
runs the filter chain (the router last) and finishes the exchange: stats, access log,
callbacks. It fills a :class:`StreamInfo` on the way; it never awaits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proxy.access_log import compile_format, render_format
from proxy.codec import Request
from proxy.codec.headers import strip_fields
from proxy.config.model_route import RouteAction, RouteActionType
from proxy.http.filter_manager import FilterManager
from proxy.http.headers import apply_header_options, get_header, remove_headers, set_header
from proxy.http.local_reply import LocalReply, ResponseFlag
from proxy.http.request_head import append_xff, forwarded_client, mark_internal
from proxy.http.stream_info import StreamInfo
from proxy.routing.grpc import (
    GrpcStatus,
    format_grpc_timeout,
    grpc_local_reply_headers,
    is_grpc_content_type,
    parse_grpc_timeout,
    stream_duration_timeout,
)

if TYPE_CHECKING:
    from proxy.config.model_route import Route, RouteConfiguration, VirtualHost
    from proxy.http.codec_api import StreamEncoder
    from proxy.http.filter import Headers, HttpFilter, Timers, WatermarkListener
    from proxy.http.hcm import HcmRuntime
    from proxy.runtime import RuntimeSnapshot
    from proxy.stats import Counter
    from proxy.tracing.span import ActiveSpan

__all__ = ["ActiveStream"]

_NONE: list[HttpFilter] = []  # never appended to: a finished stream's filter lists


class ActiveStream(FilterManager):
    __slots__ = (
        "_complete_callbacks",
        "_duration_timer",
        "_read_disables",
        "_watermark_listener",
        "authority",
        "done",
        "encoder",
        "hcm",
        "idle_timeout",
        "is_head",
        "last_activity",
        "method",
        "path",
        "request",
        "request_complete",
        "request_headers",
        "response_headers",
        "response_started",
        "route",
        "route_config",
        "runtime",
        "span",
        "stream_info",
        "timers",
        "vhost",
    )

    def __init__(self, hcm: HcmRuntime, encoder: StreamEncoder, request: Request) -> None:
        self.hcm = hcm
        self.encoder = encoder
        self.timers: Timers = encoder.timers
        # One snapshot for the whole exchange: route, clusters and pools agree to its end.
        self.runtime: RuntimeSnapshot = hcm.runtime.current
        self.request = request
        self.request_headers = request.headers
        self.method = request.method
        self.path = request.target
        self.authority = b""
        self.is_head = request.method == b"HEAD"
        now = self.last_activity = self.timers.time()
        self.stream_info = StreamInfo(
            encoder.connection_info, now, request.method, request.target,
            b"HTTP/1.1" if request.http_version == b"1.1" else b"HTTP/" + request.http_version,
        )  # fmt: skip
        self.idle_timeout = hcm.stream_idle_timeout
        self.route: Route | None = None
        self.route_config: RouteConfiguration | None = None
        self.vhost: VirtualHost | None = None
        self.request_complete = False
        self.response_started = False
        self.done = False
        self.response_headers: Headers | None = None
        self._read_disables = 0
        self._watermark_listener: WatermarkListener | None = None
        self._complete_callbacks: list[Callable[[], None]] | None = None
        self._duration_timer: Any = None  # the Timers' handle (has cancel())
        self.span: ActiveSpan | None = None

    # -- decode path (the connection calls these) ----------------------------------------
    def decode_headers(self, end_stream: bool) -> None:
        hcm = self.hcm
        request = self.request
        headers = self.request_headers
        info = self.stream_info
        if end_stream:
            self.request_complete = True
            info.last_downstream_rx_byte = info.start_time
        self._init_filters([make() for make in hcm.filter_factories])
        if request.http_version == b"1.0" and not hcm.accept_http_10:
            self.encoder.close_after_response()
            self.send_local_reply(426, b"Upgrade Required", details="low_version")
            return
        if request.method == b"CONNECT":
            # Envoy routes CONNECT like any request, and only a connect_matcher route (which
            # pymesh does not implement) matches it.
            self.encoder.close_after_response()
            hcm.stats.no_route.value += 1
            self.send_local_reply(
                404, b"", flag=ResponseFlag.NO_ROUTE_FOUND, details="route_not_found"
            )
            return
        if request.upgrade:
            # Envoy refuses upgrades that no upgrade_config enables.
            self.encoder.close_after_response()
            self.send_local_reply(403, b"", details="upgrade_failed")
            return
        target = request.target
        if target[:1] != b"/" and not self._absolute_target(target):
            return
        if b"#" in target:
            # A fragment is the client's own business (RFC 9112 section 3.2); Envoy's
            # connection manager refuses a path that carries one.
            self.encoder.close_after_response()
            self.send_local_reply(400, b"", details="path_normalization_failed")
            return
        # One pass for every field this method reads (each get_header is a full scan).
        authority = request_id = forwarded_proto = None
        envoy_headers = forwarded_for = False
        for name, value in headers:
            if name == b"host":
                if authority is None:
                    authority = value
            elif name == b"x-request-id":
                if request_id is None:
                    request_id = value
            elif name == b"x-forwarded-proto":
                if forwarded_proto is None:
                    forwarded_proto = value
            elif name == b"x-forwarded-for":
                forwarded_for = True
            elif name[:8] == b"x-envoy-":
                envoy_headers = True
        if authority is None:
            if self.authority:
                headers.append((b"host", self.authority))
            else:
                self.encoder.close_after_response()
                self.send_local_reply(400, b"", details="missing_host_header")
                return
        else:
            self.authority = authority
        info.authority = self.authority
        if request.expect_continue:
            # Envoy answers 100-continue itself unless proxy_100_continue is set.
            self.encoder.encode_100_continue()
            remove_headers(headers, (b"expect",))
        if hcm.generate_request_id and request_id is None:
            headers.append((b"x-request-id", hcm.request_id()))
        peer = info.connection.remote_host
        if envoy_headers or hcm.internal_ranges:
            mark_internal(
                headers, peer, hcm.internal_ranges, use_remote_address=hcm.use_remote_address
            )
        scheme = info.connection.scheme
        if hcm.use_remote_address:
            # An untrusted peer's claim about the scheme is overwritten, as in Envoy.
            if hcm.xff_num_trusted_hops == 0 or forwarded_proto is None:
                set_header(headers, b"x-forwarded-proto", scheme)
            if not hcm.skip_xff_append:
                append_xff(headers, peer)
        elif forwarded_proto is None:
            headers.append((b"x-forwarded-proto", scheme))
        if forwarded_for and (hcm.xff_num_trusted_hops or not hcm.use_remote_address):
            # Envoy trusts the XFF entry this many hops from the right as the client; with
            # use_remote_address the peer was just appended, so the count is the same.
            client = forwarded_client(headers, hcm.xff_num_trusted_hops)
            if client is not None:
                info.set_forwarded_remote((client, 0))
        self._match_route()
        if hcm.max_stream_duration or (
            self.route is not None
            and type(self.route.action) is RouteAction
            and self.route.action.max_stream_duration is not None
        ):
            self._arm_stream_duration()
        tracer = hcm.tracer
        if tracer is not None:
            route = self.route
            self.span = tracer.start(info, headers, route.decorator_operation if route else None)
        self._decode_headers_from(0, end_stream)

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

    def is_grpc_request(self) -> bool:
        """``content-type: application/grpc[+...]``, as Envoy tells a gRPC request (looked up
        only when it matters: local replies, stream durations)."""
        return is_grpc_content_type(get_header(self.request_headers, b"content-type"))

    def _match_route(self) -> None:
        table = self.hcm.route_table(self.runtime)
        if table is None:
            return
        self.route_config = table.config
        vhost = self.vhost = table.find_virtual_host(self.authority)
        if vhost is None:
            return
        route = self.route = table.match(
            vhost,
            self.method,
            self.path,
            self.request_headers,
            metadata=self.stream_info.all_dynamic_metadata,
        )
        if route is None:
            return
        info = self.stream_info
        info.route_name = route.name or None
        action = route.action
        if type(action) is RouteAction:
            if action.idle_timeout is not None:
                self._route_idle_timeout(action.idle_timeout)
            if action.kind is RouteActionType.CLUSTER:
                # Known from the route on, as in Envoy: logged even when a filter answers
                # before the router runs.
                info.upstream_cluster = action.cluster

    def decode_data(self, data: bytes, end_stream: bool) -> None:
        self.last_activity = now = self.timers.time()
        self.stream_info.bytes_received += len(data)
        if end_stream:
            self.request_complete = True
            self.stream_info.last_downstream_rx_byte = now
        if not self._d_aborted:
            self._decode_data_from(0, data, end_stream)

    def decode_trailers(self, trailers: Headers) -> None:
        self.request_complete = True
        self.stream_info.last_downstream_rx_byte = self.timers.time()
        if not self._d_aborted:
            self._decode_trailers_from(0, trailers)

    def _absolute_target(self, target: bytes) -> bool:
        """absolute-form (``http://host:port/path``), as sent to a forward proxy."""
        scheme, sep, rest = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https") or not self.hcm.allow_absolute_url:
            self.encoder.close_after_response()
            self.send_local_reply(400, b"Bad Request", details="invalid_url")
            return False
        authority, slash, path = rest.partition(b"/")
        self.authority = authority
        self.path = self.stream_info.original_path = self.stream_info.path = (
            slash + path if slash else b"/"
        )
        set_header(self.request_headers, b"host", authority)
        return True

    # -- DownstreamCallbacks ------------------------------------------------------------------
    def expand(self, value: bytes) -> bytes:
        """A header value with Envoy's ``%COMMAND%`` substitutions, rendered for this stream
        (only values the translator marked dynamic come here)."""
        parts = compile_format(value.decode("latin-1"))
        return render_format(
            parts, self.stream_info, self.request_headers, self.response_headers
        ).encode("latin-1")

    def flush(self) -> None:
        self.encoder.flush()

    def _buffer_limit(self) -> int:
        return self.hcm.buffer_limit

    def read_disable(self, disable: bool) -> None:
        if disable:
            self._read_disables += 1
        elif self._read_disables:
            self._read_disables -= 1
        else:
            return  # never enable more than this stream disabled
        self.encoder.read_disable(disable)

    def arm_deadline(self, when: float, callback: Callable[[], None]) -> None:
        self.encoder.arm_deadline(when, callback)

    def disarm_deadline(self) -> None:
        self.encoder.disarm_deadline()

    def set_downstream_watermark_listener(self, listener: WatermarkListener | None) -> None:
        """The router hears when the client's write buffer fills, to stop reading upstream."""
        self._watermark_listener = listener

    def on_downstream_watermark(self, above: bool) -> None:
        listener = self._watermark_listener
        if listener is not None:
            listener.on_downstream_watermark(above)

    def add_response_flag(self, flag: str) -> None:
        self.stream_info.add_response_flag(flag)

    def on_complete(self, callback: Callable[[], None]) -> None:
        if self._complete_callbacks is None:
            self._complete_callbacks = []
        self._complete_callbacks.append(callback)

    def clear_route_cache(self) -> None:
        self.route = self.vhost = self.route_config = None
        info = self.stream_info
        info.route_name = info.upstream_cluster = None
        self._match_route()

    def per_route_config(self, filter_name: str) -> object | None:
        route = self.route
        if route is not None:
            cfg = route.typed_per_filter_config.get(filter_name)
            if cfg is not None:
                return cfg
        vhost = self.vhost
        if vhost is not None:
            return vhost.typed_per_filter_config.get(filter_name)
        return None

    def counter(self, name: str) -> Counter:
        return self.hcm.stats.counter(name)

    # -- encode path ----------------------------------------------------------------------
    def _write_headers(self, status: int, headers: Headers, end_stream: bool) -> None:
        """The response head leaves the filters: route mutations, Server and Date, codec."""
        self.last_activity = self.timers.time()
        hcm = self.hcm
        # One pass drops the hop-by-hop fields, Date (the proxy's clock replaces it, as Envoy's
        # date provider does) and, when overwriting, Server.
        headers = strip_fields(headers, hcm.response_drop)
        route = self.route
        if route is not None:
            self._mutate_response_headers(headers, route)
        transformation = hcm.server_transformation
        if transformation == "OVERWRITE" or (
            transformation == "APPEND_IF_ABSENT" and get_header(headers, b"server") is None
        ):
            headers.append((b"server", hcm.server_name))
        headers.append((b"date", hcm.date()))
        self.stream_info.response_code = status
        self.response_headers = headers
        self.response_started = True
        self.encoder.encode_headers(status, headers, end_stream, self.is_head)
        if end_stream:
            self._finish()

    def _mutate_response_headers(self, headers: Headers, route: Route) -> None:
        for owner in (route, self.vhost, self.route_config):
            if owner is None:
                continue
            if owner.response_headers_to_remove:
                remove_headers(headers, owner.response_headers_to_remove)
            if owner.response_headers_to_add:
                apply_header_options(headers, owner.response_headers_to_add, self.expand)

    def _write_data(self, data: bytes, end_stream: bool) -> None:
        if self.done:
            return
        if data and not self.is_head:
            if not end_stream:  # the end needs no idle tracking: the stream is over
                self.last_activity = self.timers.time()
            # bytes_sent counts body bytes only, as Envoy's %BYTES_SENT%.
            self.stream_info.bytes_sent += len(data)
            self.encoder.encode_data(data, end_stream)
        elif end_stream:
            self.encoder.encode_data(b"", True)
        if end_stream:
            self._finish()

    def _write_trailers(self, trailers: Headers) -> None:
        if not self.done:
            self.stream_info.response_trailers = trailers
            self.encoder.encode_trailers(trailers)
            self._finish()

    def send_local_reply(
        self,
        status: int,
        body: bytes = b"",
        *,
        flag: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        details: str = "",
        grpc_status: int | None = None,
    ) -> None:
        """Answer from the proxy itself, through the encoder filters. After the response
        head went out, the only honest thing left is to reset the stream."""
        info = self.stream_info
        if flag is not None:
            info.add_response_flag(flag)
        info.response_code_details = details
        if self.done:
            return
        self._d_aborted = True
        if self.response_started:
            self.reset()
            return
        self.encode_local_reply(LocalReply(status, body, flag, headers, details, grpc_status))

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

    # -- lifecycle ----------------------------------------------------------------------------
    def _route_idle_timeout(self, timeout: float) -> None:
        """A route's idle_timeout replaces the connection manager's stream_idle_timeout."""
        self.idle_timeout = timeout
        if timeout:
            self.encoder.check_idle_by(self.last_activity + timeout)

    def on_idle_timeout(self) -> None:
        """Nothing moved either way for idle_timeout: Envoy's stream idle timeout."""
        self.hcm.stats.downstream_rq_idle_timeout.value += 1
        self.stream_info.add_response_flag(ResponseFlag.STREAM_IDLE_TIMEOUT)
        if self.response_started:
            self.reset()
            return
        # 408 while the client still owes request bytes, 504 while the upstream owes a response.
        status = 504 if self.request_complete else 408
        self.send_local_reply(status, b"stream timeout", details="stream_idle_timeout")

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        hcm = self.hcm
        info = self.stream_info
        end = info.end_time = self.timers.time()
        stats = hcm.stats
        stats.downstream_rq_active.value -= 1
        stats.response(info.response_code)
        stats.downstream_rq_time.record((end - info.start_time) * 1000.0)
        self.destroy_filters()
        if self._duration_timer is not None:
            self._duration_timer.cancel()
            self._duration_timer = None
        callbacks = self._complete_callbacks
        if callbacks is not None:
            for cb in callbacks:
                cb()
        if self.span is not None and hcm.tracer is not None:
            hcm.tracer.finish(self.span, info, self.request_headers)
        if hcm.access_loggers:
            for logger in hcm.access_loggers:
                logger.log(info, self.request_headers, self.response_headers)
        # The filters (the router among them) point back at the stream: let go of them so
        # the exchange is freed by reference counting, not left to the cyclic collector.
        self._d_aborted = True
        self._filters = self._decoders = self._encoders = _NONE
        self._d_held = self._e_held = None
        self._watermark_listener = None
        disables = self._read_disables
        if disables:
            self._read_disables = 0
            for _ in range(disables):
                self.encoder.read_disable(False)
        self.encoder.on_stream_complete(self)

    def reset(self) -> None:
        """Abort the exchange: the downstream connection is closed without a clean end."""
        if self.done:
            return
        self._d_aborted = True
        self.hcm.stats.downstream_rq_tx_reset.value += 1
        self.encoder.close_after_response()
        self._finish()
        self.encoder.reset_stream()

    def on_downstream_reset(
        self,
        flag: str = ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION,
        details: str = "downstream_remote_disconnect",
    ) -> None:
        """The client went away before the response completed: its connection closed, or
        (HTTP/2) it reset the stream, which ``flag`` and ``details`` then say."""
        if self.done:
            return
        info = self.stream_info
        info.add_response_flag(flag)
        info.response_code_details = details
        if flag == ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION:
            info.connection_termination_details = details
        self._d_aborted = True
        self.hcm.stats.downstream_rq_rx_reset.value += 1
        if not self.response_started:
            info.response_code = 0
        self._finish()
