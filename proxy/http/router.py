"""The router: the last filter of every chain, which forwards the request upstream.

Per request it answers what the route answers itself (no route, direct response, redirect),
picks the cluster (weighted or by header) from the stream's runtime snapshot, applies the
route's rewrites and header mutations, enforces the timeout, and runs *attempts* — one per
try — each of which gets a connection from the chosen host's pool. Whether a failed try is
retried is decided by :class:`proxy.routing.retry.RetryState` (pure); this module only does
the plumbing. It sees its stream only through
:class:`~proxy.http.filter.DownstreamCallbacks`, and is the load balancer's
:class:`~proxy.upstream.interfaces.LbContext`.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

import structlog

from proxy.codec import Response
from proxy.codec.headers import strip_hop_by_hop
from proxy.config.model_http import RouterConfig
from proxy.config.model_route import (
    DirectResponseAction,
    RedirectAction,
    RouteAction,
    RouteActionType,
)
from proxy.http.filter import (
    FilterContext,
    FilterDataStatus,
    FilterHeadersStatus,
    FilterTrailersStatus,
    HttpFilter,
)
from proxy.http.headers import apply_header_options, get_header, remove_headers, set_header
from proxy.http.local_reply import ResponseFlag
from proxy.http.mirror import ShadowRequest
from proxy.http.request_head import has_envoy_headers
from proxy.http.route_plan import RoutePlan, RoutePlans
from proxy.http.upstream_request import UpstreamAttempt
from proxy.routing.lb_hash import compute_hash, hash64
from proxy.routing.matcher import pick_weighted_cluster
from proxy.routing.retry import (
    ENVOY_REQUEST_CONTROL_HEADERS,
    ResetKind,
    RetryState,
    RetryStatus,
    final_timeouts,
    parse_envoy_request_controls,
)
from proxy.routing.rewrite import redirect_location, rewrite_host, rewrite_path
from proxy.routing.upgrade import terminates_connect
from proxy.upstream.interfaces import PoolFailure, ResetReason, UpstreamPool
from proxy.upstream.tcp_tunnel import TcpTunnelPool

if TYPE_CHECKING:
    from proxy.config.model_route import WeightedCluster
    from proxy.http.filter import DownstreamCallbacks, Headers
    from proxy.upstream.cluster import RuntimeCluster

__all__ = ["Router", "RouterShared", "router_factory"]

log = structlog.get_logger(__name__)

_RESET_PREFIX = "upstream connect error or disconnect/reset before headers. "
_STOP = FilterHeadersStatus.STOP_ITERATION
_TAKEN = FilterDataStatus.STOP_ITERATION_NO_BUFFER


class RouterShared:
    """The router's config for one connection manager, built once per snapshot."""

    __slots__ = ("buffer_limit", "config", "plans", "rng")

    def __init__(self, config: RouterConfig, context: FilterContext) -> None:
        self.config = config
        self.rng = context.rng
        self.buffer_limit = context.buffer_limit
        self.plans = RoutePlans()


def router_factory(config: object, context: FilterContext) -> Callable[[], HttpFilter]:
    assert isinstance(config, RouterConfig)
    shared = RouterShared(config, context)
    return lambda: Router(shared)


class Router(HttpFilter):
    __slots__ = (
        "_body",
        "_body_replayable",
        "_body_size",
        "_expected_timeout_ms",
        "_holds_request",
        "_per_try_timeout",
        "_request_end_time",
        "_retry_timer",
        "_set_cookies",
        "_timeout",
        "_timeout_armed",
        "_trailers",
        "action",
        "attempt",
        "attempts",
        "cb",
        "cluster",
        "excluded_hosts",
        "finished",
        "hash_key",
        "headers",
        "host_selection_attempts",
        "method",
        "original_destination",
        "path",
        "request_ended",
        "response_started",
        "retry",
        "route",
        "shared",
    )

    def __init__(self, shared: RouterShared) -> None:
        self.shared = shared
        self.cluster: RuntimeCluster | None = None
        self.attempt: UpstreamAttempt | None = None
        self.attempts = 0
        self.retry: RetryState | None = None
        self.hash_key: int | None = None
        self.excluded_hosts: AbstractSet[object] | None = None
        self.host_selection_attempts = 1
        self.request_ended = False
        self.response_started = False
        self.finished = False
        self._body: list[bytes] | None = None
        self._body_size = 0
        self._body_replayable = True
        self._holds_request = False
        self._per_try_timeout: float | None = None
        self._timeout_armed = False
        self._retry_timer: object | None = None
        self._set_cookies: list[bytes] | None = None
        self._trailers: Headers | None = None
        self._expected_timeout_ms: int | None = None
        self._request_end_time: float | None = None

    # -- LbContext ------------------------------------------------------------------------
    # hash_key, original_destination, excluded_hosts and host_selection_attempts are plain
    # attributes (set before each pick): the balancer reads them without a call.
    @property
    def downstream_headers(self) -> Headers | None:
        return self.headers

    # -- decoder hooks --------------------------------------------------------------------------
    def decode_headers(
        self, cb: DownstreamCallbacks, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        self.cb = cb
        self.headers = headers
        self.method = cb.method
        # CONNECT's request target is its authority (it has no path).
        self.path = cb.path if cb.method != b"CONNECT" else cb.authority
        self.request_ended = end_stream
        route = self.route = cb.route
        if route is None:
            cb.counter("no_route").value += 1
            self._answer(404, b"", ResponseFlag.NO_ROUTE_FOUND, "route_not_found")
            return _STOP
        action = route.action
        if type(action) is DirectResponseAction:
            cb.counter("rq_direct_response").value += 1
            self._answer(action.status, action.body or b"", None, "direct_response")
            return _STOP
        if type(action) is RedirectAction:
            cb.counter("rq_redirect").value += 1
            location = redirect_location(
                route, scheme=cb.stream_info.connection.scheme, host=cb.authority, path=cb.path
            )
            self.finished = True
            cb.send_local_reply(
                action.response_code, b"", headers=((b"location", location),), details="redirect"
            )
            return _STOP
        assert type(action) is RouteAction
        self.action = action
        self._timeout: float | None = action.timeout or None
        self.start()
        if end_stream and not self.finished:
            self._on_request_end()
        return _STOP

    def decode_data(
        self, cb: DownstreamCallbacks, data: bytes, end_stream: bool
    ) -> FilterDataStatus:
        if self.finished:
            return _TAKEN
        if data:
            self.on_request_data(data)
        if end_stream:
            self.on_request_end()
        return _TAKEN

    def decode_trailers(self, cb: DownstreamCallbacks, trailers: Headers) -> FilterTrailersStatus:
        if not self.finished and not self.request_ended:
            self._trailers = trailers  # kept for a retry, like the body
            attempt = self.attempt
            if attempt is not None and attempt.conn is not None:
                attempt.conn.encode_trailers(trailers)
            self.request_ended = True
            self._on_request_end()
        return FilterTrailersStatus.STOP_ITERATION

    def on_destroy(self) -> None:
        self.on_stream_done()

    def _answer(self, status: int, body: bytes, flag: str | None, details: str) -> None:
        self.finished = True
        self.cb.send_local_reply(status, body, flag=flag, details=details)

    # -- setup ----------------------------------------------------------------------------
    def start(self) -> None:
        cb = self.cb
        shared = self.shared
        action = self.action
        headers = self.headers
        info = cb.stream_info
        self.original_destination = info.connection.original_destination
        weighted = None
        if action.kind is RouteActionType.CLUSTER:
            name = action.cluster
        elif action.kind is RouteActionType.WEIGHTED_CLUSTERS:
            assert action.weighted_clusters is not None
            weighted = pick_weighted_cluster(action.weighted_clusters, shared.rng)
            name = weighted.name
        else:
            assert action.cluster_header is not None
            value = get_header(headers, action.cluster_header)
            name = value.decode("latin-1") if value else None
        cluster = cb.runtime.clusters.get(name) if name else None
        if cluster is None:
            cb.counter("no_cluster").value += 1
            self._answer(
                action.cluster_not_found_response_code,
                b"",
                ResponseFlag.NO_CLUSTER_FOUND,
                "cluster_not_found",
            )
            return
        self.cluster = cluster
        info.upstream_cluster = cluster.name
        info.upstream_cluster_metadata = cluster.model.metadata
        cb.set_downstream_watermark_listener(self)
        controls = None
        envoy_headers = has_envoy_headers(headers)
        if envoy_headers:
            controls = parse_envoy_request_controls(headers)
            remove_headers(headers, ENVOY_REQUEST_CONTROL_HEADERS)
        switch_to = get_header(headers, b"upgrade") if cb.upgrade is not None else None
        headers = self.headers = cb.request_headers = strip_hop_by_hop(headers)
        if switch_to is not None and cb.method != b"CONNECT":
            # The upgrade's own fields are hop-by-hop too, but they are what the upstream
            # must see to switch.
            headers += ((b"upgrade", switch_to), (b"connection", b"upgrade"))
        route = self.route
        assert route is not None
        plan = shared.plans.get(route, action, cb.vhost, cb.route_config)
        if plan.request_mutations or plan.rewrites_path or plan.rewrites_host or weighted:
            self._mutate_request(plan, weighted)
        if plan.attempt_count_header:
            set_header(headers, b"x-envoy-attempt-count", b"1")
        policy = plan.retry_policy
        expected: int | None
        # A route with max_stream_duration uses Envoy's "new timeouts": the stream's duration
        # limit (see ActiveStream) replaces the route timeout.
        route_timeout = action.timeout if action.max_stream_duration is None else 0.0
        if policy is None and controls is None:
            # Nothing to reconcile with the route's timeout, and no retries possible: what
            # final_timeouts() and RetryState.create() would give, without their allocations.
            self._timeout = route_timeout or None
            expected = int(route_timeout * 1000) if route_timeout else None
        else:
            timeouts = final_timeouts(
                route_timeout,
                policy.per_try_timeout if policy is not None else None,
                controls,
                respect_expected_rq_timeout=shared.config.respect_expected_rq_timeout,
            )
            self._timeout = timeouts.global_timeout
            self._per_try_timeout = timeouts.per_try_timeout
            expected = timeouts.expected_rq_timeout_ms
            self.retry = RetryState.create(
                policy, controls, shared.rng, request_headers=headers, limits=cluster.limits
            )
        if expected is not None and not shared.config.suppress_envoy_headers:
            self._expected_timeout_ms = expected
            if envoy_headers:
                set_header(headers, b"x-envoy-expected-rq-timeout-ms", b"%d" % expected)
            else:  # no x-envoy-* header came in: nothing to replace
                headers.append((b"x-envoy-expected-rq-timeout-ms", b"%d" % expected))
        if action.hash_policy and cluster.needs_hash:
            _, _, query = self.path.partition(b"?")
            self.hash_key = compute_hash(
                action.hash_policy,
                headers,
                info.connection.remote_host,
                query or None,
                self._add_cookie,
            )
        stats = cluster.stats
        if not cluster.limits.try_acquire_request():
            stats.counter("upstream_rq_active_overflow").value += 1  # Envoy's name for it
            self.finished = True
            self._overflow()
            return
        self._holds_request = True
        self._new_attempt()

    def _add_cookie(self, name: bytes, path: bytes | None, ttl: float) -> bytes:
        """A cookie hash policy with a TTL found no cookie: make one up, as Envoy does, from
        the connection's two addresses (the same for every request on the connection), and
        set it on the response. A TTL of 0 makes a session cookie."""
        connection = self.cb.stream_info.connection
        value = b"%x" % hash64(f"{connection.remote_address}{connection.local_address}".encode())
        cookie = b'%s="%s"' % (name, value)
        if ttl:
            cookie += b"; Max-Age=%d" % int(ttl)
        if path:
            cookie += b"; Path=" + path
        cookie += b"; HttpOnly"
        if self._set_cookies is None:
            self._set_cookies = []
        self._set_cookies.append(cookie)
        return value

    def _mutate_request(self, plan: RoutePlan, weighted: WeightedCluster | None) -> None:
        """Path and host rewrites, then the weighted cluster's, route's, virtual host's and
        route configuration's header mutations (only those the plan says exist)."""
        cb = self.cb
        route = self.route
        assert route is not None
        action = self.action
        headers = self.headers
        suppress = self.shared.config.suppress_envoy_headers
        if plan.rewrites_path:
            new_path = rewrite_path(route, self.path)
            if new_path is not None and new_path != self.path:
                if not suppress:
                    set_header(headers, b"x-envoy-original-path", self.path)
                self.path = cb.stream_info.path = new_path
        if plan.rewrites_host:
            new_host = rewrite_host(action, headers, weighted_cluster=weighted)
            if new_host is not None:
                if not suppress:
                    set_header(headers, b"x-envoy-original-host", cb.authority)
                set_header(headers, b"host", new_host)
        mutations = plan.request_mutations
        if weighted is not None and (
            weighted.request_headers_to_remove or weighted.request_headers_to_add
        ):
            mutations = (
                (weighted.request_headers_to_remove, weighted.request_headers_to_add),
                *mutations,
            )
        for remove, add in mutations:
            if remove:
                remove_headers(headers, remove)
            if add:
                apply_header_options(headers, add, cb.expand)

    # -- attempts ---------------------------------------------------------------------------
    def _new_attempt(self) -> None:
        cluster = self.cluster
        assert cluster is not None
        cb = self.cb
        retry = self.retry
        if retry is not None:
            self.excluded_hosts = retry.exclude
            self.host_selection_attempts = retry.host_selection_attempts
        host = cluster.choose_host(self)
        if host is None:
            cluster.stats.upstream_cx_none_healthy.value += 1
            self._fail(
                503, b"no healthy upstream", ResponseFlag.NO_HEALTHY_UPSTREAM, "no_healthy_upstream"
            )
            return
        self.attempts += 1
        info = cb.stream_info
        info.attempt_count = self.attempts
        if self.attempts > 1:
            vhost = cb.vhost
            if vhost is not None and vhost.include_request_attempt_count:
                set_header(self.headers, b"x-envoy-attempt-count", b"%d" % self.attempts)
            if self._expected_timeout_ms is not None:
                self._update_expected_timeout()
        if retry is not None:
            retry.on_host_attempted(host)
        pool: UpstreamPool
        if cb.upgrade == "connect" and terminates_connect(self.action.upgrade_configs):
            pool = TcpTunnelPool(cluster, host)
        else:
            pool = cluster.pool_for(host, cb.stream_info.protocol == b"HTTP/2")
        attempt = self.attempt = UpstreamAttempt(self, host, pool, cluster.stats, cb.timers)
        info.upstream_host = host.address_str
        result = pool.new_stream(attempt)
        if result is None:
            return  # queued: on_pool_ready / on_pool_failure follows
        if result is PoolFailure.OVERFLOW:
            # The circuit breaker said no: answered at once, never retried (as Envoy).
            attempt.finish()
            self.attempt = None
            self._overflow()
            return
        if isinstance(result, PoolFailure):
            attempt.on_pool_failure(result)
            return
        attempt.on_pool_ready(result, result.local_address)

    def _update_expected_timeout(self) -> None:
        """A retry tells the upstream the time that is left, as Envoy's setTimeoutHeaders."""
        expected = self._expected_timeout_ms
        assert expected is not None
        timeout = self._timeout
        if timeout and self._request_end_time is not None:
            elapsed_ms = int((self.cb.timers.time() - self._request_end_time) * 1000)
            left = int(timeout * 1000) - elapsed_ms
            expected = 1 if left <= 0 else min(expected, left)
        set_header(self.headers, b"x-envoy-expected-rq-timeout-ms", b"%d" % expected)

    def _overflow(self) -> None:
        self.finished = True
        self._count_local_reply(503)
        self.cb.send_local_reply(
            503,
            (_RESET_PREFIX + "reset reason: overflow").encode(),
            flag=ResponseFlag.UPSTREAM_OVERFLOW,
            headers=((b"x-envoy-overloaded", b"true"), *self._attempt_count_header()),
            details="upstream_reset_before_response_started{overflow}",
        )

    def _attempt_count_header(self) -> tuple[tuple[bytes, bytes], ...]:
        """What Envoy adds to its own replies with include_attempt_count_in_response."""
        vhost = self.cb.vhost
        if vhost is None or not vhost.include_attempt_count_in_response:
            return ()
        return ((b"x-envoy-attempt-count", b"%d" % max(self.attempts, 1)),)

    def write_request(self, attempt: UpstreamAttempt) -> None:
        """Send the request head, and the body received so far, on a fresh attempt."""
        conn = attempt.conn
        assert conn is not None
        body = self._body
        headers = self.headers
        if self.request_ended and self._trailers is None:
            if not body:
                conn.encode_headers(self.method, self.path, headers, True)
                return
            if conn.chunks_bodies and get_header(headers, b"content-length") is None:
                # The whole body is here: send it with a length instead of chunk framing.
                joined = b"".join(body)
                conn.encode_headers(
                    self.method, self.path, [*headers, (b"content-length", b"%d" % len(joined))],
                    False,
                )  # fmt: skip
                conn.encode_data(joined, True)
                return
        conn.encode_headers(self.method, self.path, headers, False)
        if body:
            for chunk in body:
                conn.encode_data(chunk, False)
        if self._trailers is not None:
            conn.encode_trailers(self._trailers)
        elif self.request_ended:
            conn.encode_data(b"", True)

    def on_request_data(self, data: bytes) -> None:
        attempt = self.attempt
        conn = attempt.conn if attempt is not None else None
        limit = self.shared.buffer_limit
        if self._body_replayable:
            if self._body is None:
                self._body = [data]
            else:
                self._body.append(data)
            self._body_size += len(data)
            if self._body_size > limit and conn is not None:
                # Too large to keep for a retry or a mirror: stream it and give up replays.
                self._body_replayable = False
                self._body = None
        if conn is not None:
            conn.encode_data(data, False)
        elif self._body_replayable and self._body_size > limit and attempt is not None:
            attempt.wait_for_connection()

    def on_request_end(self) -> None:
        if self.request_ended or self.finished:
            return
        self.request_ended = True
        attempt = self.attempt
        if attempt is not None and attempt.conn is not None:
            attempt.conn.encode_data(b"", True)
        self._on_request_end()

    def _on_request_end(self) -> None:
        cb = self.cb
        now = self._request_end_time = cb.timers.time()
        if self._timeout:
            # The connection's deadline timer, not a TimerHandle per request (see arm_deadline).
            self._timeout_armed = True
            cb.arm_deadline(now + self._timeout, self._on_timeout)
        if self.action.request_mirror_policies:
            self._mirror()

    def _mirror(self) -> None:
        cb = self.cb
        if not self._body_replayable:
            return
        body = b"".join(self._body) if self._body else b""
        rng = self.shared.rng
        for policy in self.action.request_mirror_policies:
            if policy.runtime_fraction < 1.0 and rng.random() >= policy.runtime_fraction:
                continue
            cluster = cb.runtime.clusters.get(policy.cluster)
            if cluster is None:
                continue
            ShadowRequest.send(
                cluster,
                self.method,
                self.path,
                self.headers,
                body,
                timeout=self._timeout,
                suffix_host=not policy.disable_shadow_host_suffix_append,
                timers=cb.timers,
            )

    # -- attempt outcomes -------------------------------------------------------------------
    def on_attempt_ready(self, attempt: UpstreamAttempt) -> None:
        if self._per_try_timeout:
            attempt.per_try_handle = self.cb.timers.call_later(
                self._per_try_timeout, self._on_per_try_timeout, attempt
            )

    def on_attempt_response(
        self, attempt: UpstreamAttempt, response: Response, end_stream: bool = False
    ) -> None:
        cluster = self.cluster
        assert cluster is not None
        cb = self.cb
        status = response.status
        headers = response.headers
        cluster.report_response(attempt.host, status)
        retry = self.retry
        if (
            retry is not None
            and not self.response_started
            and self._retry_decided(retry.decide_response(status, headers), attempt, response)
        ):
            return
        attempt.cancel_timer()
        self.response_started = True
        info = cb.stream_info
        info.response_code_details = "via_upstream"
        stats = cluster.stats
        stats.response(status)
        now = info.first_upstream_rx_byte = cb.timers.time()
        elapsed_ms = (now - attempt.start_time) * 1000.0
        stats.upstream_rq_time.record(elapsed_ms)
        if retry is not None and retry.retry_succeeded:
            stats.upstream_rq_retry_success.value += 1
        # Hop-by-hop fields are the stream's to drop, with Date and Server, in one pass.
        if status == 204:
            # No body, and no length either: Envoy drops a content-length a 204 carries.
            remove_headers(headers, (b"content-length",))
        if not self.shared.config.suppress_envoy_headers and self.request_ended:
            # Set, not added: a value from upstream (another sidecar's) is replaced, as Envoy's
            # setEnvoyUpstreamServiceTime does. Like Envoy, only once the whole request is in
            # (it is the time the upstream took from there): never on a tunnel's switch.
            set_header(headers, b"x-envoy-upstream-service-time", b"%d" % elapsed_ms)
        vhost = cb.vhost
        if vhost is not None and vhost.include_attempt_count_in_response:
            set_header(headers, b"x-envoy-attempt-count", b"%d" % self.attempts)
        if self._set_cookies:
            headers.extend((b"set-cookie", cookie) for cookie in self._set_cookies)
        if end_stream:
            attempt.finish()
            self.attempt = None
        cb.encode_headers(status, headers, end_stream)

    def on_attempt_end(self, attempt: UpstreamAttempt, last: bytes = b"") -> None:
        if attempt.per_try_handle is not None:
            attempt.cancel_timer()
        self.attempt = None
        self.cb.encode_data(last, True)

    def on_attempt_failure(
        self, attempt: UpstreamAttempt, kind: str, reason: ResetReason, transport_failure: str = ""
    ) -> None:
        """A try failed before a usable response: ``kind`` is connect_failure / reset /
        timeout (per try); ``transport_failure`` is why a TLS handshake failed."""
        cluster = self.cluster
        assert cluster is not None
        cb = self.cb
        info = cb.stream_info
        attempt.cancel_timer()
        protocol_error = reason is ResetReason.PROTOCOL_ERROR
        if self.response_started:
            # Envoy reports a response cut short (close or reset mid-body) as a protocol error.
            info.add_response_flag(
                ResponseFlag.UPSTREAM_PROTOCOL_ERROR
                if protocol_error
                else ResponseFlag.UPSTREAM_REMOTE_RESET
                if reason is ResetReason.REMOTE_RESET
                else ResponseFlag.UPSTREAM_CONNECTION_TERMINATION
            )
            info.response_code_details = f"upstream_reset_after_response_started{{{reason.detail}}}"
            # An HTTP/2 connection counted a remote reset; a tunnel's close is its end.
            if reason is not ResetReason.REMOTE_RESET and cb.upgrade is None:
                cluster.stats.upstream_rq_rx_reset.value += 1
            self.attempt = None
            cb.reset()
            return
        if kind == "connect_failure":
            # Envoy names no transport failure when the connect timed out.
            timed_out = reason is ResetReason.CONNECTION_TIMEOUT
            info.upstream_transport_failure_reason = transport_failure or (
                "" if timed_out else reason.value
            )
        cluster.report_local_failure(attempt.host, kind)
        retry = self.retry
        reset_kind = (
            ResetKind.REFUSED_STREAM
            if reason is ResetReason.REMOTE_REFUSED_STREAM
            else ResetKind(kind)
        )
        if retry is not None and self._retry_decided(retry.decide_reset(reset_kind), attempt):
            return
        if kind == "timeout":
            self.attempt = None
            self._on_timeout(per_try=True)
            return
        if reason is ResetReason.OVERFLOW:
            self.attempt = None
            self._overflow()
            return
        if kind == "connect_failure":
            flag = ResponseFlag.UPSTREAM_CONNECTION_FAILURE
        elif reason in (ResetReason.REMOTE_RESET, ResetReason.REMOTE_REFUSED_STREAM):
            flag = ResponseFlag.UPSTREAM_REMOTE_RESET
        elif protocol_error:
            flag = ResponseFlag.UPSTREAM_PROTOCOL_ERROR
        else:
            flag = ResponseFlag.UPSTREAM_CONNECTION_TERMINATION
        prefix = "retried and the latest " if self.attempts > 1 else ""
        body = f"{_RESET_PREFIX}{prefix}reset reason: {reason.value}".encode()
        self.attempt = None
        # An upstream that does not speak HTTP is a bad gateway; one that went away is not
        # available (Envoy's codes).
        self._fail(
            502 if protocol_error else 503,
            body,
            flag,
            f"upstream_reset_before_response_started{{{reason.detail}}}",
        )

    def _retry_decided(
        self, decision: RetryStatus, attempt: UpstreamAttempt, response: Response | None = None
    ) -> bool:
        """Act on a retry decision; True when a retry was scheduled."""
        cluster = self.cluster
        retry = self.retry
        assert cluster is not None and retry is not None
        if decision is RetryStatus.NO:
            return False
        info = self.cb.stream_info
        if decision is RetryStatus.LIMIT_EXCEEDED:
            cluster.stats.upstream_rq_retry_limit_exceeded.value += 1
            info.add_response_flag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
            return False
        if decision is RetryStatus.OVERFLOW:
            cluster.stats.upstream_rq_retry_overflow.value += 1
            info.add_response_flag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
            return False
        if not self._body_replayable:
            return False
        cluster.stats.upstream_rq_retry.value += 1
        if response is not None and self._complete_without_body(response):
            attempt.discard_response()
        else:
            attempt.abandon()
        self.attempt = None
        self._retry_timer = self.cb.timers.call_later(retry.next_backoff(), self._do_retry)
        return True

    def _complete_without_body(self, response: Response) -> bool:
        """The exchange ends with this head (both ways): its connection can be reused."""
        return self.request_ended and (
            self.method == b"HEAD" or response.status in (204, 304) or response.content_length == 0
        )

    def _do_retry(self) -> None:
        self._retry_timer = None
        if self.finished:
            return
        self._new_attempt()
        self.cb.flush()

    def _on_timeout(self, per_try: bool = False) -> None:
        if not per_try:
            self._timeout_armed = False  # the connection disarmed it before calling
        if self.finished:
            return
        cluster = self.cluster
        assert cluster is not None
        if not per_try:
            cluster.stats.upstream_rq_timeout.value += 1
        attempt = self.attempt
        if attempt is not None:
            attempt.abandon()
            self.attempt = None
        self._cancel_retry_timer()
        cb = self.cb
        cb.stream_info.add_response_flag(ResponseFlag.UPSTREAM_REQUEST_TIMEOUT)
        if self.response_started:
            cb.reset()
            return
        details = "upstream_per_try_timeout" if per_try else "response_timeout"
        self._fail(504, b"upstream request timeout", None, details)
        cb.flush()

    def _on_per_try_timeout(self, attempt: UpstreamAttempt) -> None:
        attempt.per_try_handle = None
        if attempt is not self.attempt or self.response_started:
            return
        assert self.cluster is not None
        self.cluster.stats.upstream_rq_per_try_timeout.value += 1
        self.on_attempt_failure(attempt, "timeout", ResetReason.LOCAL_RESET)
        self.cb.flush()

    def _fail(self, status: int, body: bytes, flag: str | None, details: str) -> None:
        self.finished = True
        self._count_local_reply(status)
        self.cb.send_local_reply(
            status, body, flag=flag, headers=self._attempt_count_header(), details=details
        )

    def _count_local_reply(self, status: int) -> None:
        cluster = self.cluster
        if cluster is not None and status >= 500 and not self.response_started:
            cluster.stats.response(status)

    def _cancel_retry_timer(self) -> None:
        timer = self._retry_timer
        if timer is not None:
            timer.cancel()  # type: ignore[attr-defined]
            self._retry_timer = None

    # -- stream events ------------------------------------------------------------------------
    def on_downstream_watermark(self, above: bool) -> None:
        """The client's write buffer filled (or drained): stop (resume) reading upstream."""
        attempt = self.attempt
        if attempt is not None:
            attempt.hold_upstream(above)

    def on_stream_done(self) -> None:
        if self._timeout_armed:
            self._timeout_armed = False
            self.cb.disarm_deadline()
        self._cancel_retry_timer()
        if self.retry is not None:
            self.retry.release()
        attempt = self.attempt
        if attempt is not None:
            attempt.abandon()
            self.attempt = None
        self.finished = True
        if self._holds_request:
            self._holds_request = False
            cluster = self.cluster
            assert cluster is not None
            cluster.limits.release_request()
