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
from proxy.http.request_head import XFCC, forwarding_headers
from proxy.http.stream_info import StreamInfo
from proxy.http.stream_limits import StreamLimits
from proxy.routing.upgrade import upgrade_allowed, upgrade_type

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


class ActiveStream(StreamLimits, FilterManager):
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
        "upgrade",
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
        # The protocol the stream switches to once the upstream agrees (a 101, or a 2xx to
        # CONNECT); from then on its body is the tunnel's raw bytes both ways.
        self.upgrade: str | None = None

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
        target = request.target
        if target[:1] != b"/" and self.method != b"CONNECT" and not self._absolute_target(target):
            return
        if b"#" in target:
            # A fragment is the client's own business (RFC 9112 section 3.2); Envoy's
            # connection manager refuses a path that carries one.
            self.encoder.close_after_response()
            self.send_local_reply(400, b"", details="path_normalization_failed")
            return
        if self.method == b"CONNECT":
            if request.http_version != b"2":
                # An HTTP/1.1 CONNECT's target is its authority (RFC 9110 section 9.3.6), as
                # Envoy's codec takes it, whatever Host says.
                set_header(headers, b"host", target)
            # It has no path: routes match it with connect_matcher, logs show none.
            self.path = info.path = info.original_path = b""
        # One pass for every field this method reads (each get_header is a full scan).
        authority = request_id = forwarded_proto = None
        envoy_headers = forwarded_for = client_cert = False
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
            elif name == XFCC:
                client_cert = True
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
        forwarding_headers(
            headers,
            hcm,
            info,
            forwarded_proto=forwarded_proto,
            envoy_headers=envoy_headers,
            forwarded_for=forwarded_for,
            client_cert=client_cert,
        )
        self._match_route()
        if request.upgrade and not self._admit_upgrade():
            return
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

    def _admit_upgrade(self) -> bool:
        """An upgrade or CONNECT goes on only where a route's or the connection manager's
        ``upgrade_configs`` allow its type; else Envoy answers 403 (404 when no route
        matched, which the router says). Either way a refused switch closes the connection:
        what the client sends next is not HTTP."""
        hcm = self.hcm
        route = self.route
        action = route.action if route is not None else None
        per_route = action.upgrade_configs if type(action) is RouteAction else ()
        kind = upgrade_type(self.method, get_header(self.request_headers, b"upgrade"))
        self.encoder.close_after_response()
        if upgrade_allowed(kind, hcm.model.upgrade_configs, per_route):
            self.upgrade = kind
            hcm.stats.downstream_cx_upgrades_total.value += 1
            hcm.stats.downstream_cx_upgrades_active.value += 1
            return True
        if route is None:
            return True
        hcm.stats.downstream_rq_ws_on_non_ws_route.value += 1
        self.send_local_reply(403, b"", details="upgrade_failed")
        return False

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
                name = info.upstream_cluster = action.cluster
                cluster = self.runtime.clusters.get(name) if name is not None else None
                if cluster is not None:
                    info.upstream_cluster_metadata = cluster.model.metadata

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
        info.route_name = info.upstream_cluster = info.upstream_cluster_metadata = None
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
        switch = None
        if status == 101 and self.upgrade is not None:
            # The switch keeps the fields that say what the connection becomes.
            switch = [field for field in headers if field[0] in (b"upgrade", b"connection")]
        headers = strip_fields(headers, hcm.response_drop)
        if switch:
            headers[0:0] = switch
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

    # -- lifecycle ----------------------------------------------------------------------------
    def _route_idle_timeout(self, timeout: float) -> None:
        """A route's idle_timeout replaces the connection manager's stream_idle_timeout."""
        self.idle_timeout = timeout
        if timeout:
            self.encoder.check_idle_by(self.last_activity + timeout)

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
        if self.upgrade is not None:
            stats.downstream_cx_upgrades_active.value -= 1
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
