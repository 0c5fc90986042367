"""One HTTP request/response exchange on a downstream connection (Envoy's ``ActiveStream``).

The stream runs the decode side of the filter chain, hands the request to the router, and
encodes whatever comes back (an upstream response or a local reply) onto the connection.
Everything is driven by callbacks from the two connections; the stream never awaits.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from proxy.access_log import compile_format, render_format
from proxy.codec import Request
from proxy.config.model_route import (
    DirectResponseAction,
    RedirectAction,
    Route,
    RouteAction,
    RouteActionType,
)
from proxy.http.filter import FilterStatus, HttpFilter
from proxy.http.headers import (
    apply_header_options,
    get_all,
    get_header,
    remove_headers,
    set_header,
)
from proxy.http.local_reply import LocalReply, ResponseFlag
from proxy.http.router import Router
from proxy.routing.retry import ENVOY_REQUEST_CONTROL_HEADERS
from proxy.routing.rewrite import redirect_location

if TYPE_CHECKING:
    from proxy.config.model_common import CidrRange
    from proxy.config.model_route import RouteConfiguration, VirtualHost
    from proxy.http.connection_manager import DownstreamConnection, HcmRuntime
    from proxy.stats import Counter

__all__ = ["ActiveStream"]

log = structlog.get_logger(__name__)

_STATUS_TEXT_LOCAL = {
    400: b"Bad Request",
    403: b"Forbidden",
    408: b"Request Timeout",
    426: b"Upgrade Required",
    431: b"Request Header Fields Too Large",
}


# What Envoy removes from external requests (cleanInternalHeaders), and from edge requests.
_EXTERNAL_STRIPPED = ENVOY_REQUEST_CONTROL_HEADERS | {
    b"x-envoy-internal",
    b"x-envoy-expected-rq-timeout-ms",
    b"x-envoy-force-trace",
    b"x-envoy-ip-tags",
    b"x-envoy-original-url",
    b"x-envoy-upstream-alt-stat-name",
}
_EDGE_STRIPPED = _EXTERNAL_STRIPPED | {
    b"x-envoy-decorator-operation",
    b"x-envoy-downstream-service-cluster",
    b"x-envoy-downstream-service-node",
}


def _in_ranges(address: bytes, ranges: tuple[CidrRange, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.decode("latin-1"))
    except ValueError:
        return False
    return any(r.contains(ip) for r in ranges)


class ActiveStream:
    __slots__ = (
        "_complete_callbacks",
        "_filter_index",
        "_filters",
        "authority",
        "bytes_received",
        "bytes_sent",
        "cluster_name",
        "conn",
        "done",
        "downstream_address",
        "early_body",
        "hcm",
        "idle_timeout",
        "is_head",
        "last_activity",
        "loop",
        "maybe_envoy_headers",
        "method",
        "original_path",
        "path",
        "request",
        "request_complete",
        "request_headers",
        "response_chunked",
        "response_code",
        "response_details",
        "response_flags",
        "response_headers",
        "response_started",
        "route",
        "route_config",
        "router",
        "start_time",
        "upstream_host",
        "vhost",
    )

    def __init__(self, conn: DownstreamConnection, request: Request) -> None:
        self.conn = conn
        self.hcm: HcmRuntime = conn.hcm
        self.loop: asyncio.AbstractEventLoop = conn.loop
        self.request = request
        self.request_headers = request.headers
        self.method = request.method
        self.path = request.target
        self.original_path = request.target
        self.authority = b""
        self.downstream_address = conn.peer_host
        self.is_head = request.method == b"HEAD"
        self.start_time = self.last_activity = self.loop.time()
        self.idle_timeout = self.hcm.stream_idle_timeout
        self.route: Route | None = None
        self.route_config: RouteConfiguration | None = None
        self.vhost: VirtualHost | None = None
        self.cluster_name: str | None = None
        self.router: Router | None = None
        self.request_complete = False
        self.response_started = False
        self.response_chunked = False
        self.done = False
        self.response_code = 0
        self.response_flags: list[str] | None = None
        self.response_details = ""
        self.response_headers: list[tuple[bytes, bytes]] | None = None
        self.upstream_host: str | None = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self.early_body: list[bytes] | None = None
        # Whether the request may carry x-envoy-* headers (the router skips its own scan).
        self.maybe_envoy_headers = False
        self._filters: list[HttpFilter] | None = None
        self._filter_index = 0
        self._complete_callbacks: list[Callable[[], None]] | None = None

    # -- decode path ----------------------------------------------------------------------
    def on_request_headers(self) -> None:
        hcm = self.hcm
        request = self.request
        headers = self.request_headers
        if request.http_version != b"1.1" and not hcm.accept_http_10:
            self.conn.close_after_response = True
            self.send_local_reply(426, b"Upgrade Required", details="low_version")
            return
        if request.method == b"CONNECT":
            # Envoy routes CONNECT like any request, and only a connect_matcher route (which
            # pymesh does not implement) matches it.
            self.conn.close_after_response = True
            hcm.stats.no_route.value += 1
            self.send_local_reply(
                404, b"", flag=ResponseFlag.NO_ROUTE_FOUND, details="route_not_found"
            )
            return
        if request.upgrade:
            # Envoy refuses upgrades that no upgrade_config enables.
            self.conn.close_after_response = True
            self.send_local_reply(403, b"", details="upgrade_failed")
            return
        target = request.target
        if target[:1] != b"/" and not self._absolute_target(target):
            return
        # One pass for every field this method reads (each get_header is a full scan).
        authority = request_id = forwarded_proto = None
        envoy_headers = False
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
            elif name[:8] == b"x-envoy-":
                envoy_headers = True
        if authority is None:
            if self.authority:
                headers.append((b"host", self.authority))
            else:
                self.conn.close_after_response = True
                self.send_local_reply(400, b"", details="missing_host_header")
                return
        else:
            self.authority = authority
        if request.expect_continue:
            # Envoy answers 100-continue itself unless proxy_100_continue is set.
            self.conn.write(self.conn.codec.send_continue())
            remove_headers(headers, (b"expect",))
        if hcm.generate_request_id and request_id is None:
            headers.append((b"x-request-id", hcm.request_id()))
        self.maybe_envoy_headers = envoy_headers
        if envoy_headers or hcm.internal_ranges:
            self._mark_internal(headers)
        if hcm.use_remote_address:
            # An untrusted peer's claim about the scheme is overwritten, as in Envoy.
            if hcm.xff_num_trusted_hops == 0 or forwarded_proto is None:
                set_header(headers, b"x-forwarded-proto", self.conn.scheme)
            if not hcm.skip_xff_append:
                self._append_xff()
        elif forwarded_proto is None:
            headers.append((b"x-forwarded-proto", self.conn.scheme))
        table = hcm.route_table()
        if table is not None:
            self.route_config = table.config
            vhost = self.vhost = table.find_virtual_host(self.authority)
            if vhost is not None:
                route = self.route = table.match(vhost, self.method, self.path, headers)
                if route is not None:
                    action = route.action
                    if type(action) is RouteAction and action.idle_timeout is not None:
                        self._route_idle_timeout(action.idle_timeout)
                    if type(action) is RouteAction and action.kind is RouteActionType.CLUSTER:
                        # Known from the route on, as in Envoy: logged even when a filter
                        # answers before the router runs.
                        self.cluster_name = action.cluster
        factories = hcm.filter_factories
        if factories:
            self._filters = [make() for make in factories]
        self._continue_decoding()

    def expand(self, value: bytes) -> bytes:
        """A header value with Envoy's ``%COMMAND%`` substitutions, rendered for this stream
        (only values the translator marked dynamic come here)."""
        return render_format(compile_format(value.decode("latin-1")), self).encode("latin-1")

    def _route_idle_timeout(self, timeout: float) -> None:
        """A route's idle_timeout replaces the connection manager's stream_idle_timeout."""
        self.idle_timeout = timeout
        if timeout:
            self.conn.check_idle_by(self.last_activity + timeout)

    def on_idle_timeout(self) -> None:
        """Nothing moved either way for idle_timeout: Envoy's stream idle timeout."""
        self.hcm.stats.downstream_rq_idle_timeout.value += 1
        self.add_response_flag(ResponseFlag.STREAM_IDLE_TIMEOUT)
        if self.response_started:
            self.reset()
            return
        # 408 while the client still owes request bytes, 504 while the upstream owes a response.
        status = 504 if self.request_complete else 408
        self.send_local_reply(status, b"stream timeout", details="stream_idle_timeout")

    def _absolute_target(self, target: bytes) -> bool:
        """absolute-form (``http://host:port/path``), as sent to a forward proxy."""
        scheme, sep, rest = target.partition(b"://")
        if not sep or scheme.lower() not in (b"http", b"https") or not self.hcm.allow_absolute_url:
            self.conn.close_after_response = True
            self.send_local_reply(400, b"Bad Request", details="invalid_url")
            return False
        authority, slash, path = rest.partition(b"/")
        self.authority = authority
        self.path = self.original_path = slash + path if slash else b"/"
        set_header(self.request_headers, b"host", authority)
        return True

    def _mark_internal(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Envoy's internal-request rule: a request is internal when the address it comes from
        (the peer with use_remote_address and no XFF yet, else the one XFF entry) is in
        ``internal_address_config``, which is empty by default. Only internal requests may
        steer the router with x-envoy-* headers; an external request loses them."""
        hcm = self.hcm
        internal = False
        ranges = hcm.internal_ranges
        if ranges:
            xff = get_all(headers, b"x-forwarded-for")
            address: bytes | None = None
            if hcm.use_remote_address:
                address = None if xff else self.downstream_address.encode()
            else:
                entries = b",".join(xff).split(b",") if xff else []
                address = entries[0].strip() if len(entries) == 1 else None
            internal = address is not None and _in_ranges(address, ranges)
        if internal:
            set_header(headers, b"x-envoy-internal", b"true")
            self.maybe_envoy_headers = True
        elif hcm.has_envoy_headers(headers):
            remove_headers(
                headers, _EDGE_STRIPPED if hcm.use_remote_address else _EXTERNAL_STRIPPED
            )

    def _append_xff(self) -> None:
        headers = self.request_headers
        peer = self.downstream_address.encode()
        xff = get_header(headers, b"x-forwarded-for")
        set_header(headers, b"x-forwarded-for", xff + b"," + peer if xff else peer)

    def _continue_decoding(self) -> None:
        filters = self._filters
        if filters is not None:
            while self._filter_index < len(filters):
                f = filters[self._filter_index]
                self._filter_index += 1
                if f.on_request_headers(self) is FilterStatus.STOP or self.response_started:
                    return
        self._dispatch_route()

    def resume(self) -> None:
        """Continue the decode chain after a filter returned STOP."""
        if not self.done and not self.response_started:
            self._continue_decoding()
            self.conn.flush()

    def _dispatch_route(self) -> None:
        route = self.route
        hcm = self.hcm
        if route is None:
            hcm.stats.no_route.value += 1
            self.send_local_reply(
                404, b"", flag=ResponseFlag.NO_ROUTE_FOUND, details="route_not_found"
            )
            return
        action = route.action
        if type(action) is DirectResponseAction:
            hcm.stats.rq_direct_response.value += 1
            self.send_local_reply(action.status, action.body or b"", details="direct_response")
            return
        if type(action) is RedirectAction:
            hcm.stats.rq_redirect.value += 1
            location = redirect_location(
                route, scheme=self.conn.scheme, host=self.authority, path=self.path
            )
            self.send_local_reply(
                action.response_code, b"", headers=((b"location", location),), details="redirect"
            )
            return
        self.router = Router(self, route, action)  # type: ignore[arg-type]
        self.router.start()
        if self.request_complete and self.router is not None:
            self.router.on_request_end()

    def on_request_data(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        self.bytes_received += len(data)
        router = self.router
        if router is not None:
            router.on_request_data(data)
        elif not self.response_started:
            # Filters paused the chain (a fault delay): keep the body for the router.
            self._stash_body(data)

    def on_request_end(self) -> None:
        self.request_complete = True
        if self.router is not None:
            self.router.on_request_end()

    def _stash_body(self, data: bytes) -> None:
        # Pausing the connection bounds what a paused chain can buffer.
        self.conn.pause_reading()
        if self.early_body is None:
            self.early_body = [data]
        else:
            self.early_body.append(data)

    # -- encode path ----------------------------------------------------------------------
    def encode_headers(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        *,
        chunked: bool,
        extra_route_headers: Callable[[list[tuple[bytes, bytes]]], None] | None = None,
    ) -> None:
        """Send a response head. ``chunked`` means the body length is not known."""
        self.last_activity = self.loop.time()
        hcm = self.hcm
        if self._filters:
            for f in reversed(self._filters):
                status = f.on_response_headers(self, status, headers)
        route = self.route
        if route is not None:
            self._mutate_response_headers(headers, route)
        if extra_route_headers is not None:
            extra_route_headers(headers)
        transformation = hcm.server_transformation
        if transformation == "OVERWRITE":
            set_header(headers, b"server", hcm.server_name)
        elif transformation == "APPEND_IF_ABSENT" and get_header(headers, b"server") is None:
            headers.append((b"server", hcm.server_name))
        # Like Envoy's date provider: the proxy's clock replaces any upstream Date.
        set_header(headers, b"date", hcm.date())
        if not self.request_complete and (self.request.chunked or self.request.content_length):
            # Answered before its body was read (a local reply, an early upstream answer):
            # like Envoy, the connection is not reused.
            self.conn.close_after_response = True
        if self.conn.close_after_response:
            headers.append((b"connection", b"close"))
        self.response_code = status
        self.response_headers = headers
        self.response_started = True
        self.response_chunked = chunked
        # bytes_sent counts body bytes only, as Envoy's %BYTES_SENT%.
        self.conn.write(
            self.conn.codec.send_response(
                status, headers, chunked=chunked, head_request=self.is_head
            )
        )

    def _mutate_response_headers(self, headers: list[tuple[bytes, bytes]], route: Route) -> None:
        vhost = self.vhost
        config = self.route_config
        if route.response_headers_to_remove:
            remove_headers(headers, route.response_headers_to_remove)
        if route.response_headers_to_add:
            apply_header_options(headers, route.response_headers_to_add, self.expand)
        if vhost is not None:
            if vhost.response_headers_to_remove:
                remove_headers(headers, vhost.response_headers_to_remove)
            if vhost.response_headers_to_add:
                apply_header_options(headers, vhost.response_headers_to_add, self.expand)
        if config is not None:
            if config.response_headers_to_remove:
                remove_headers(headers, config.response_headers_to_remove)
            if config.response_headers_to_add:
                apply_header_options(headers, config.response_headers_to_add, self.expand)

    def encode_data(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if self.is_head:
            return
        out = self.conn.codec.send_data(data)
        self.bytes_sent += len(data)
        self.conn.write(out)

    def encode_end(self) -> None:
        end = self.conn.codec.send_end()
        if end:
            self.conn.write(end)
        self._finish()

    def send_local_reply(
        self,
        status: int,
        body: bytes = b"",
        *,
        flag: str | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        details: str = "",
    ) -> None:
        """Answer from the proxy itself. After the response head went out, the only honest
        thing left is to reset the stream (close the connection)."""
        if flag is not None:
            self.add_response_flag(flag)
        self.response_details = details
        if self.done:
            return
        if self.response_started:
            self.reset()
            return
        self.encode_local_reply(LocalReply(status, body, flag, headers, details))

    def encode_local_reply(self, reply: LocalReply) -> None:
        body = reply.body
        if body:
            hdrs = [
                (b"content-length", str(len(body)).encode()),
                (b"content-type", b"text/plain"),
                *reply.headers,
            ]
        elif reply.status in (204, 304):
            hdrs = [*reply.headers]  # no body and, as in Envoy, no length either
        else:
            hdrs = [*reply.headers, (b"content-length", b"0")]
        if self.router is not None:
            self.router.on_local_reply(reply.status)
        self.encode_headers(reply.status, hdrs, chunked=False)
        if body:
            self.encode_data(body)
        self.encode_end()
        self.conn.flush()

    # -- lifecycle ----------------------------------------------------------------------------
    def add_response_flag(self, flag: str) -> None:
        flags = self.response_flags
        if flags is None:
            self.response_flags = [flag]
        elif flag not in flags:
            flags.append(flag)

    def on_complete(self, callback: Callable[[], None]) -> None:
        if self._complete_callbacks is None:
            self._complete_callbacks = []
        self._complete_callbacks.append(callback)

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

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        hcm = self.hcm
        stats = hcm.stats
        stats.downstream_rq_active.value -= 1
        stats.response(self.response_code)
        stats.downstream_rq_time.record((self.loop.time() - self.start_time) * 1000.0)
        router = self.router
        if router is not None:
            router.on_stream_done()
        callbacks = self._complete_callbacks
        if callbacks is not None:
            for cb in callbacks:
                cb()
        if hcm.access_loggers:
            for logger in hcm.access_loggers:
                logger.log(self)
        self.conn.on_stream_done(self)

    def reset(self) -> None:
        """Abort the exchange: the downstream connection is closed without a clean end."""
        if self.done:
            return
        if self.router is not None:
            self.router.on_downstream_reset()
        self.hcm.stats.downstream_rq_tx_reset.value += 1
        self.conn.close_after_response = True
        self._finish()
        self.conn.abort()

    def on_downstream_disconnect(self) -> None:
        """The client went away before the response completed."""
        if self.done:
            return
        self.add_response_flag(ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION)
        self.response_details = "downstream_remote_disconnect"
        self.hcm.stats.downstream_rq_rx_reset.value += 1
        if self.router is not None:
            self.router.on_downstream_reset()
        if not self.response_started:
            self.response_code = 0
        self._finish()
