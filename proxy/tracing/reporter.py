"""Spans to a Zipkin collector: ``POST <collector_endpoint>`` with a JSON list (v2), through
the collector cluster with the proxy's own HTTP client, as Envoy's Zipkin reporter does.

Spans are sent in batches of ``min_flush_spans`` (Envoy's 5) or every ``flush_interval``
seconds (Envoy's 5 s), whichever comes first. Reporting never slows a request: a batch is
one HTTP call in the background, at most ``max_in_flight`` of them at once, and spans beyond
that (a slow or absent collector) are dropped and counted. Stats are Envoy's
``tracing.zipkin.*``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from proxy.http.async_client import HttpCall
from proxy.stats import StatsStore
from proxy.tracing.span import ActiveSpan, LocalEndpoint, encode_spans

if TYPE_CHECKING:
    from proxy.upstream.cluster import RuntimeCluster
    from proxy.upstream.interfaces import Headers

__all__ = ["ZipkinReporter"]

log = structlog.get_logger(__name__)


class _Report:
    """The callbacks of one POST."""

    __slots__ = ("_count", "_owner")

    def __init__(self, owner: ZipkinReporter, count: int) -> None:
        self._owner = owner
        self._count = count

    def on_call_response(self, status: int, headers: Headers, body: bytes) -> None:
        self._owner.done(self._count, 200 <= status < 300, f"HTTP {status}")

    def on_call_failure(self, reason: str) -> None:
        self._owner.done(self._count, False, reason)


class ZipkinReporter:
    def __init__(
        self,
        *,
        cluster: str,
        endpoint: str,
        hostname: str | None,
        local: LocalEndpoint,
        clusters: Callable[[str], RuntimeCluster | None],
        loop: asyncio.AbstractEventLoop,
        stats: StatsStore,
        min_flush_spans: int = 5,
        flush_interval: float = 5.0,
        timeout: float = 5.0,
        max_in_flight: int = 8,
    ) -> None:
        self._cluster = cluster
        self._path = (endpoint or "/api/v2/spans").encode()
        self._host = (hostname or cluster).encode()
        self._local = local
        self._clusters = clusters
        self._loop = loop
        self._min_flush = min_flush_spans
        self._interval = flush_interval
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._spans: list[ActiveSpan] = []
        self._timer: asyncio.TimerHandle | None = None
        self._calls = 0
        c = stats.counter
        self._spans_sent = c("tracing.zipkin.spans_sent")
        self._reports_sent = c("tracing.zipkin.reports_sent")
        self._reports_dropped = c("tracing.zipkin.reports_dropped")
        self._reports_failed = c("tracing.zipkin.reports_failed")
        self._no_cluster = c("tracing.zipkin.reports_skipped_no_cluster")
        self._timer_flushed = c("tracing.zipkin.timer_flushed")
        self._spans_dropped = c("tracing.zipkin.spans_dropped")

    def report(self, span: ActiveSpan) -> None:
        self._spans.append(span)
        if len(self._spans) >= self._min_flush:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(self._interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_flushed.value += 1
        self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        spans, self._spans = self._spans, []
        if not spans:
            return
        cluster = self._clusters(self._cluster)
        if cluster is None:
            self._no_cluster.value += 1
            self._spans_dropped.value += len(spans)
            return
        if self._calls >= self._max_in_flight:
            self._spans_dropped.value += len(spans)
            return
        headers = [(b"host", self._host), (b"content-type", b"application/json")]
        body = encode_spans(spans, self._local)
        self._calls += 1
        HttpCall.send(
            cluster,
            b"POST",
            self._path,
            headers,
            body,
            timeout=self._timeout,
            timers=self._loop,
            callbacks=_Report(self, len(spans)),
        )

    def done(self, count: int, ok: bool, reason: str) -> None:
        self._calls -= 1
        if ok:
            self._reports_sent.value += 1
            self._spans_sent.value += count
        else:
            # Envoy counts a refused report as dropped and an unanswered one as failed.
            if reason.startswith("HTTP "):
                self._reports_dropped.value += 1
            else:
                self._reports_failed.value += 1
            self._spans_dropped.value += count
            log.debug("zipkin report failed", cluster=self._cluster, reason=reason)

    def close(self) -> None:
        """Send what is buffered (best effort, as Envoy at shutdown)."""
        self.flush()
