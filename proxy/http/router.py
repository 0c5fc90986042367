"""The router: the terminal step of a stream, which forwards it upstream.

Per request it picks the cluster (weighted or by header), applies the route's rewrites and
header mutations, enforces the timeout, and runs *attempts* — one per try — each of which
borrows a connection from the chosen host's pool. Whether a failed try is retried is decided
by :class:`proxy.routing.retry.RetryState` (pure); this module only does the plumbing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from proxy.codec import Response
from proxy.codec.headers import strip_hop_by_hop
from proxy.config.model_route import RouteAction, RouteActionType
from proxy.http.headers import apply_header_options, get_header, remove_headers, set_header
from proxy.http.local_reply import ResponseFlag
from proxy.http.mirror import ShadowRequest
from proxy.http.upstream_request import UpstreamAttempt
from proxy.routing.lb_hash import hash64
from proxy.routing.matcher import pick_weighted_cluster
from proxy.routing.retry import (
    ENVOY_REQUEST_CONTROL_HEADERS,
    ResetKind,
    RetryState,
    RetryStatus,
    final_timeouts,
    parse_envoy_request_controls,
)
from proxy.routing.rewrite import rewrite_host, rewrite_path

if TYPE_CHECKING:
    from proxy.config.model_route import Route, WeightedCluster
    from proxy.http.stream import ActiveStream
    from proxy.upstream.cluster import RuntimeCluster
    from proxy.upstream.connection import UpstreamConnection

__all__ = ["Router"]

log = structlog.get_logger(__name__)

_RESET_PREFIX = "upstream connect error or disconnect/reset before headers. "


def _detail(reason: str) -> str:
    """A reset reason as Envoy writes it into response code details (no spaces)."""
    return reason.replace(" ", "_")


# Methods whose requests go upstream without a length when they have no body.
_BODYLESS = frozenset({b"GET", b"HEAD", b"DELETE", b"TRACE", b"CONNECT"})


class Router:
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
        "action",
        "attempt",
        "attempts",
        "cluster",
        "finished",
        "hash_key",
        "headers",
        "method",
        "path",
        "request_ended",
        "response_started",
        "retry",
        "route",
        "stream",
    )

    def __init__(self, stream: ActiveStream, route: Route, action: RouteAction) -> None:
        self.stream = stream
        self.route = route
        self.action = action
        self.cluster: RuntimeCluster | None = None
        self.attempt: UpstreamAttempt | None = None
        self.attempts = 0
        self.retry: RetryState | None = None
        self.hash_key: int | None = None
        self.headers = stream.request_headers
        self.method = stream.method
        self.path = stream.path
        self.request_ended = False
        self.response_started = False
        self.finished = False
        # Body received while filters held the chain (a fault delay) is where we start.
        self._body: list[bytes] | None = stream.early_body
        self._body_size = sum(map(len, stream.early_body)) if stream.early_body else 0
        self._body_replayable = True
        self._holds_request = False
        self._timeout: float | None = action.timeout or None
        self._per_try_timeout: float | None = None
        self._timeout_armed = False
        self._retry_timer: asyncio.TimerHandle | None = None
        self._set_cookies: list[bytes] | None = None
        self._expected_timeout_ms: int | None = None
        self._request_end_time: float | None = None

    # -- setup ----------------------------------------------------------------------------
    def start(self) -> None:
        stream = self.stream
        hcm = stream.hcm
        action = self.action
        headers = self.headers
        weighted = None
        if action.kind is RouteActionType.CLUSTER:
            name = action.cluster
        elif action.kind is RouteActionType.WEIGHTED_CLUSTERS:
            assert action.weighted_clusters is not None
            weighted = pick_weighted_cluster(action.weighted_clusters, hcm.rng)
            name = weighted.name
        else:
            assert action.cluster_header is not None
            value = get_header(headers, action.cluster_header)
            name = value.decode("latin-1") if value else None
        cluster = hcm.cluster_manager.get(name) if name else None
        if cluster is None:
            hcm.stats.no_cluster.value += 1
            self.finished = True
            stream.send_local_reply(
                action.cluster_not_found_response_code,
                flag=ResponseFlag.NO_CLUSTER_FOUND,
                details="cluster_not_found",
            )
            return
        self.cluster = cluster
        stream.cluster_name = cluster.name
        controls = None
        # Filters may have added x-envoy-* headers since the stream's own scan.
        if (stream.maybe_envoy_headers or hcm.filter_factories) and hcm.has_envoy_headers(headers):
            controls = parse_envoy_request_controls(headers)
            remove_headers(headers, ENVOY_REQUEST_CONTROL_HEADERS)
        headers = self.headers = stream.request_headers = strip_hop_by_hop(headers)
        self._mutate_request(weighted)
        policy = action.retry_policy
        if policy is None and stream.vhost is not None:
            policy = stream.vhost.retry_policy
        expected: int | None
        if policy is None and controls is None:
            # Nothing to reconcile with the route's timeout, and no retries possible: what
            # final_timeouts() and RetryState.create() would give, without their allocations.
            self._timeout = action.timeout or None
            expected = int(action.timeout * 1000) if action.timeout else None
        else:
            timeouts = final_timeouts(
                action.timeout,
                policy.per_try_timeout if policy is not None else None,
                controls,
                respect_expected_rq_timeout=hcm.router_config.respect_expected_rq_timeout,
            )
            self._timeout = timeouts.global_timeout
            self._per_try_timeout = timeouts.per_try_timeout
            expected = timeouts.expected_rq_timeout_ms
            self.retry = RetryState.create(
                policy, controls, hcm.rng, request_headers=headers, limits=cluster.limits
            )
        if expected is not None and not hcm.router_config.suppress_envoy_headers:
            self._expected_timeout_ms = expected
            set_header(headers, b"x-envoy-expected-rq-timeout-ms", b"%d" % expected)
        if action.hash_policy and cluster.needs_hash:
            self.hash_key = cluster.hash_key(action.hash_policy, headers, stream, self._add_cookie)
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
        conn = self.stream.conn
        transport = conn.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        value = b"%x" % hash64(f"{peer}{conn.local_address}".encode())
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

    def _mutate_request(self, weighted: WeightedCluster | None) -> None:
        """Route, virtual host and route-config header mutations plus path/host rewrites."""
        stream = self.stream
        route = self.route
        action = self.action
        headers = self.headers
        vhost = stream.vhost
        config = stream.route_config
        new_path = rewrite_path(route, self.path)
        if new_path is not None and new_path != self.path:
            if not stream.hcm.router_config.suppress_envoy_headers:
                set_header(headers, b"x-envoy-original-path", self.path)
            self.path = new_path
        new_host = rewrite_host(action, headers, weighted_cluster=weighted)
        if new_host is not None:
            if not stream.hcm.router_config.suppress_envoy_headers:
                set_header(headers, b"x-envoy-original-host", stream.authority)
            set_header(headers, b"host", new_host)
        for owner in (weighted, route, vhost, config):
            if owner is None:
                continue
            remove = owner.request_headers_to_remove
            if remove:
                remove_headers(headers, remove)
            add = owner.request_headers_to_add
            if add:
                apply_header_options(headers, add, stream.expand)
        if vhost is not None and vhost.include_request_attempt_count:
            set_header(headers, b"x-envoy-attempt-count", b"1")

    # -- attempts ---------------------------------------------------------------------------
    def _new_attempt(self) -> None:
        cluster = self.cluster
        assert cluster is not None
        stream = self.stream
        retry = self.retry
        exclude = attempts = None
        if retry is not None:
            exclude, attempts = retry.exclude, retry.host_selection_attempts
        host = cluster.choose_host(self.hash_key, exclude, stream, attempts or 1)
        if host is None:
            cluster.stats.upstream_cx_none_healthy.value += 1
            self._fail(
                503, b"no healthy upstream", ResponseFlag.NO_HEALTHY_UPSTREAM, "no_healthy_upstream"
            )
            return
        self.attempts += 1
        if self.attempts > 1:
            vhost = stream.vhost
            if vhost is not None and vhost.include_request_attempt_count:
                set_header(self.headers, b"x-envoy-attempt-count", b"%d" % self.attempts)
            if self._expected_timeout_ms is not None:
                self._update_expected_timeout()
        if retry is not None:
            retry.on_host_attempted(host)
        attempt = self.attempt = UpstreamAttempt(self, host, cluster.stats)
        stream.upstream_host = host.address_str
        pool = cluster.pool_for(host)
        result = pool.acquire(attempt)
        if result is None:
            return  # queued: on_pool_ready / on_pool_failure follows
        if type(result) is str:
            self.attempt = None
            self._overflow()
            return
        attempt.on_pool_ready(result)  # type: ignore[arg-type]

    def _update_expected_timeout(self) -> None:
        """A retry tells the upstream the time that is left, as Envoy's setTimeoutHeaders."""
        expected = self._expected_timeout_ms
        assert expected is not None
        timeout = self._timeout
        if timeout and self._request_end_time is not None:
            elapsed_ms = int((self.stream.loop.time() - self._request_end_time) * 1000)
            left = int(timeout * 1000) - elapsed_ms
            expected = 1 if left <= 0 else min(expected, left)
        set_header(self.headers, b"x-envoy-expected-rq-timeout-ms", b"%d" % expected)

    def _overflow(self) -> None:
        self.stream.send_local_reply(
            503,
            (_RESET_PREFIX + "reset reason: overflow").encode(),
            flag=ResponseFlag.UPSTREAM_OVERFLOW,
            headers=((b"x-envoy-overloaded", b"true"), *self._attempt_count_header()),
            details="upstream_reset_before_response_started{overflow}",
        )

    def _attempt_count_header(self) -> tuple[tuple[bytes, bytes], ...]:
        """What Envoy adds to its own replies with include_attempt_count_in_response."""
        vhost = self.stream.vhost
        if vhost is None or not vhost.include_attempt_count_in_response:
            return ()
        return ((b"x-envoy-attempt-count", b"%d" % max(self.attempts, 1)),)

    def write_request(self, conn: UpstreamConnection) -> None:
        """Send the request head, and the body received so far, on a fresh attempt."""
        request = self.stream.request
        chunked = request.chunked
        if self.request_ended and self._body is not None and chunked:
            # The whole body is here: send it with a length instead of chunk framing.
            body = b"".join(self._body)
            set_header(self.headers, b"content-length", b"%d" % len(body))
            conn.write_request_head(self.method, self.path, self.headers, False)
            remove_headers(self.headers, (b"content-length",))
            if body:
                conn.write_data(body)
            return
        headers = self.headers
        if not chunked and request.content_length is None and self.method not in _BODYLESS:
            # Envoy's codec frames a POST, PUT, OPTIONS... that has no body with a length.
            headers = [*headers, (b"content-length", b"0")]
        conn.write_request_head(self.method, self.path, headers, chunked)
        if self._body:
            for chunk in self._body:
                conn.write_data(chunk)
        if self.request_ended:
            conn.write_end()

    def on_request_data(self, data: bytes) -> None:
        attempt = self.attempt
        limit = self.stream.hcm.buffer_limit
        if self._body_replayable:
            if self._body is None:
                self._body = [data]
            else:
                self._body.append(data)
            self._body_size += len(data)
            if self._body_size > limit and attempt is not None and attempt.conn is not None:
                # Too large to keep for a retry or a mirror: stream it and give up replays.
                self._body_replayable = False
                self._body = None
        if attempt is not None and attempt.conn is not None:
            attempt.conn.write_data(data)
        elif not self._body_replayable:
            pass
        elif self._body_size > limit:
            self.stream.conn.pause_reading()  # wait for the upstream connection

    def on_request_end(self) -> None:
        if self.request_ended or self.finished:
            return
        self.request_ended = True
        now = self._request_end_time = self.stream.loop.time()
        attempt = self.attempt
        if attempt is not None and attempt.conn is not None:
            attempt.conn.write_end()
        if self._timeout:
            # The connection's deadline timer, not a TimerHandle per request (see arm_deadline).
            self._timeout_armed = True
            self.stream.conn.arm_deadline(now + self._timeout, self._on_timeout)
        if self.action.request_mirror_policies:
            self._mirror()

    def _mirror(self) -> None:
        stream = self.stream
        hcm = stream.hcm
        if not self._body_replayable:
            return
        body = b"".join(self._body) if self._body else b""
        for policy in self.action.request_mirror_policies:
            if policy.runtime_fraction < 1.0 and hcm.rng.random() >= policy.runtime_fraction:
                continue
            cluster = hcm.cluster_manager.get(policy.cluster)
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
                loop=stream.loop,
            )

    # -- attempt outcomes -------------------------------------------------------------------
    def on_attempt_ready(self, attempt: UpstreamAttempt) -> None:
        if self._per_try_timeout:
            attempt.per_try_handle = self.stream.loop.call_later(
                self._per_try_timeout, self._on_per_try_timeout, attempt
            )
        # Reading may have been paused while the body waited for this connection.
        self.stream.conn.resume_reading()

    def on_attempt_response(self, attempt: UpstreamAttempt, response: Response) -> None:
        cluster = self.cluster
        assert cluster is not None
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
        self.stream.response_details = "via_upstream"
        stats = cluster.stats
        stats.response(status)
        elapsed_ms = (self.stream.loop.time() - attempt.start_time) * 1000.0
        stats.upstream_rq_time.record(elapsed_ms)
        if retry is not None and retry.retry_succeeded:
            stats.upstream_rq_retry_success.value += 1
        headers = strip_hop_by_hop(headers)
        if status == 204:
            # No body, and no length either: Envoy drops a content-length a 204 carries.
            remove_headers(headers, (b"content-length",))
        if not self.stream.hcm.router_config.suppress_envoy_headers:
            headers.append((b"x-envoy-upstream-service-time", b"%d" % elapsed_ms))
        vhost = self.stream.vhost
        if vhost is not None and vhost.include_attempt_count_in_response:
            headers.append((b"x-envoy-attempt-count", b"%d" % self.attempts))
        if self._set_cookies:
            headers.extend((b"set-cookie", cookie) for cookie in self._set_cookies)
        has_body = not (self.stream.is_head or status in (204, 304) or 100 <= status < 200)
        chunked = has_body and response.content_length is None
        self.stream.encode_headers(status, headers, chunked=chunked)

    def on_attempt_end(self, attempt: UpstreamAttempt) -> None:
        attempt.cancel_timer()
        self.attempt = None
        self.stream.encode_end()

    def on_attempt_failure(self, attempt: UpstreamAttempt, kind: str, reason: str) -> None:
        """A try failed before a usable response: ``kind`` is connect_failure / reset /
        timeout (per try)."""
        cluster = self.cluster
        assert cluster is not None
        attempt.cancel_timer()
        protocol_error = reason == "protocol error"
        if self.response_started:
            # Envoy reports a response cut short (close or reset mid-body) as a protocol error.
            self.stream.add_response_flag(
                ResponseFlag.UPSTREAM_PROTOCOL_ERROR
                if protocol_error
                else ResponseFlag.UPSTREAM_CONNECTION_TERMINATION
            )
            self.stream.response_details = (
                f"upstream_reset_after_response_started{{{_detail(reason)}}}"
            )
            cluster.stats.upstream_rq_rx_reset.value += 1
            self.attempt = None
            self.stream.reset()
            return
        cluster.report_local_failure(attempt.host, kind)
        retry = self.retry
        if retry is not None and self._retry_decided(retry.decide_reset(ResetKind(kind)), attempt):
            return
        if kind == "timeout":
            self.attempt = None
            self._on_timeout(per_try=True)
            return
        if kind == "connect_failure":
            flag = ResponseFlag.UPSTREAM_CONNECTION_FAILURE
        elif protocol_error:
            flag = ResponseFlag.UPSTREAM_PROTOCOL_ERROR
        else:
            flag = ResponseFlag.UPSTREAM_CONNECTION_TERMINATION
        prefix = "retried and the latest " if self.attempts > 1 else ""
        body = f"{_RESET_PREFIX}{prefix}reset reason: {reason}".encode()
        self.attempt = None
        # An upstream that does not speak HTTP is a bad gateway; one that went away is not
        # available (Envoy's codes).
        self._fail(
            502 if protocol_error else 503,
            body,
            flag,
            f"upstream_reset_before_response_started{{{_detail(reason)}}}",
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
        if decision is RetryStatus.LIMIT_EXCEEDED:
            cluster.stats.upstream_rq_retry_limit_exceeded.value += 1
            self.stream.add_response_flag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
            return False
        if decision is RetryStatus.OVERFLOW:
            cluster.stats.upstream_rq_retry_overflow.value += 1
            self.stream.add_response_flag(ResponseFlag.UPSTREAM_RETRY_LIMIT_EXCEEDED)
            return False
        if not self._body_replayable:
            return False
        cluster.stats.upstream_rq_retry.value += 1
        if response is not None and self._complete_without_body(response):
            attempt.discard_response()
        else:
            attempt.abandon()
        self.attempt = None
        self._retry_timer = self.stream.loop.call_later(retry.next_backoff(), self._do_retry)
        return True

    def _complete_without_body(self, response: Response) -> bool:
        """The exchange ends with this head (both ways): its connection can be reused."""
        return self.request_ended and (
            self.method == b"HEAD" or response.status in (204, 304) or response.content_length == 0
        )

    def _do_retry(self) -> None:
        self._retry_timer = None
        if self.finished or self.stream.done:
            return
        self._new_attempt()
        self.stream.conn.flush()

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
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        self.stream.add_response_flag(ResponseFlag.UPSTREAM_REQUEST_TIMEOUT)
        if self.response_started:
            self.stream.reset()
            return
        details = "upstream_per_try_timeout" if per_try else "response_timeout"
        self._fail(504, b"upstream request timeout", None, details)

    def _on_per_try_timeout(self, attempt: UpstreamAttempt) -> None:
        attempt.per_try_handle = None
        if attempt is not self.attempt or self.response_started:
            return
        assert self.cluster is not None
        self.cluster.stats.upstream_rq_per_try_timeout.value += 1
        self.on_attempt_failure(attempt, "timeout", "per try timeout")
        self.stream.conn.flush()

    def _fail(self, status: int, body: bytes, flag: str | None, details: str) -> None:
        self.finished = True
        self.stream.send_local_reply(
            status, body, flag=flag, headers=self._attempt_count_header(), details=details
        )

    # -- stream callbacks -----------------------------------------------------------------------
    def on_local_reply(self, status: int) -> None:
        cluster = self.cluster
        if cluster is not None and status >= 500 and not self.response_started:
            cluster.stats.response(status)

    def on_downstream_reset(self) -> None:
        attempt = self.attempt
        if attempt is not None:
            attempt.abandon()
            self.attempt = None

    def on_stream_done(self) -> None:
        if self._timeout_armed:
            self._timeout_armed = False
            self.stream.conn.disarm_deadline()
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
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
