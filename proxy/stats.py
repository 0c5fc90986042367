"""Envoy-compatible statistics: counters, gauges and histograms with Envoy's names.

Names are the dotted names Envoy prints on ``/stats`` (``cluster.backend.upstream_rq_200``).
The hot path holds direct references to :class:`Counter` objects, so an increment is one
attribute add; names are only formatted when the admin endpoints render them.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "ClusterStats",
    "Counter",
    "Gauge",
    "Histogram",
    "HttpStats",
    "ListenerStats",
    "StatsStore",
    "render_prometheus",
    "render_text",
]

# Envoy's default histogram bucket bounds, in milliseconds.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)  # fmt: skip


class Counter:
    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0


class Gauge:
    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0


class Histogram:
    __slots__ = ("buckets", "count", "counts", "name", "total")

    def __init__(self, name: str, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.name = name
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.count = 0
        self.total = 0.0

    def record(self, value_ms: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value_ms)] += 1
        self.count += 1
        self.total += value_ms

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding quantile ``q`` (what Envoy's summary shows)."""
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            seen += n
            if seen >= rank:
                return bound
        return float("inf")


class StatsStore:
    """Owns every stat of one proxy process; stats live as long as the process."""

    def __init__(self) -> None:
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._histograms: dict[str, Histogram] = {}

    def counter(self, name: str) -> Counter:
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = Counter(name)
        return c

    def gauge(self, name: str) -> Gauge:
        g = self._gauges.get(name)
        if g is None:
            g = self._gauges[name] = Gauge(name)
        return g

    def histogram(self, name: str) -> Histogram:
        h = self._histograms.get(name)
        if h is None:
            h = self._histograms[name] = Histogram(name)
        return h

    def counters(self) -> Iterator[Counter]:
        return iter(sorted(self._counters.values(), key=lambda s: s.name))

    def gauges(self) -> Iterator[Gauge]:
        return iter(sorted(self._gauges.values(), key=lambda s: s.name))

    def histograms(self) -> Iterator[Histogram]:
        return iter(sorted(self._histograms.values(), key=lambda s: s.name))


class _Scope:
    """Stats under one name prefix; hot ones are attributes, rare ones come by ``counter``."""

    def __init__(self, store: StatsStore, prefix: str) -> None:
        self._store = store
        self._prefix = prefix

    def counter(self, suffix: str) -> Counter:
        return self._store.counter(self._prefix + suffix)


class ClusterStats(_Scope):
    """The ``cluster.<name>.*`` stats the router and connection pools touch per request."""

    def __init__(self, store: StatsStore, cluster: str) -> None:
        p = f"cluster.{cluster}."
        super().__init__(store, p)
        c, g = store.counter, store.gauge
        self.upstream_rq_total = c(p + "upstream_rq_total")
        self.upstream_rq_completed = c(p + "upstream_rq_completed")
        self.upstream_rq_retry = c(p + "upstream_rq_retry")
        self.upstream_rq_retry_success = c(p + "upstream_rq_retry_success")
        self.upstream_rq_retry_overflow = c(p + "upstream_rq_retry_overflow")
        self.upstream_rq_retry_limit_exceeded = c(p + "upstream_rq_retry_limit_exceeded")
        self.upstream_rq_timeout = c(p + "upstream_rq_timeout")
        self.upstream_rq_per_try_timeout = c(p + "upstream_rq_per_try_timeout")
        self.upstream_rq_pending_total = c(p + "upstream_rq_pending_total")
        self.upstream_rq_pending_overflow = c(p + "upstream_rq_pending_overflow")
        self.upstream_rq_pending_failure_eject = c(p + "upstream_rq_pending_failure_eject")
        self.upstream_rq_rx_reset = c(p + "upstream_rq_rx_reset")
        self.upstream_rq_tx_reset = c(p + "upstream_rq_tx_reset")
        self.upstream_rq_cancelled = c(p + "upstream_rq_cancelled")
        self.upstream_cx_total = c(p + "upstream_cx_total")
        self.upstream_cx_http1_total = c(p + "upstream_cx_http1_total")
        self.upstream_cx_http2_total = c(p + "upstream_cx_http2_total")
        self.upstream_cx_connect_fail = c(p + "upstream_cx_connect_fail")
        self.upstream_cx_connect_timeout = c(p + "upstream_cx_connect_timeout")
        self.upstream_cx_overflow = c(p + "upstream_cx_overflow")
        self.upstream_cx_destroy_local = c(p + "upstream_cx_destroy_local")
        self.upstream_cx_destroy_remote = c(p + "upstream_cx_destroy_remote")
        self.upstream_cx_none_healthy = c(p + "upstream_cx_none_healthy")
        self.upstream_cx_rx_bytes_total = c(p + "upstream_cx_rx_bytes_total")
        self.upstream_cx_tx_bytes_total = c(p + "upstream_cx_tx_bytes_total")
        self.lb_healthy_panic = c(p + "lb_healthy_panic")
        self.upstream_rq_active = g(p + "upstream_rq_active")
        self.upstream_rq_pending_active = g(p + "upstream_rq_pending_active")
        self.upstream_cx_active = g(p + "upstream_cx_active")
        self.membership_total = g(p + "membership_total")
        self.membership_healthy = g(p + "membership_healthy")
        self.ejections_active = g(p + "outlier_detection.ejections_active")
        self.upstream_rq_time = store.histogram(p + "upstream_rq_time")
        self._by_code: dict[int, tuple[Counter, Counter]] = {}

    def response(self, status: int) -> None:
        """Count one completed upstream response (``upstream_rq_<code>`` and ``_<N>xx``)."""
        pair = self._by_code.get(status)
        if pair is None:
            pair = self._by_code[status] = (
                self._store.counter(f"{self._prefix}upstream_rq_{status}"),
                self._store.counter(f"{self._prefix}upstream_rq_{status // 100}xx"),
            )
        pair[0].value += 1
        pair[1].value += 1
        self.upstream_rq_completed.value += 1


class HttpStats(_Scope):
    """The ``http.<stat_prefix>.*`` stats of one HTTP connection manager."""

    def __init__(self, store: StatsStore, stat_prefix: str) -> None:
        p = f"http.{stat_prefix}."
        super().__init__(store, p)
        c, g = store.counter, store.gauge
        self.downstream_cx_total = c(p + "downstream_cx_total")
        self.downstream_cx_http1_total = c(p + "downstream_cx_http1_total")
        self.downstream_cx_http2_total = c(p + "downstream_cx_http2_total")
        self.downstream_cx_destroy = c(p + "downstream_cx_destroy")
        self.downstream_cx_protocol_error = c(p + "downstream_cx_protocol_error")
        self.downstream_cx_idle_timeout = c(p + "downstream_cx_idle_timeout")
        self.downstream_rq_total = c(p + "downstream_rq_total")
        self.downstream_rq_http1_total = c(p + "downstream_rq_http1_total")
        self.downstream_rq_http2_total = c(p + "downstream_rq_http2_total")
        self.downstream_rq_completed = c(p + "downstream_rq_completed")
        self.downstream_rq_timeout = c(p + "downstream_rq_timeout")
        self.downstream_rq_idle_timeout = c(p + "downstream_rq_idle_timeout")
        self.downstream_rq_max_duration_reached = c(p + "downstream_rq_max_duration_reached")
        self.downstream_rq_header_timeout = c(p + "downstream_rq_header_timeout")
        self.downstream_rq_rx_reset = c(p + "downstream_rq_rx_reset")
        self.downstream_rq_tx_reset = c(p + "downstream_rq_tx_reset")
        self.downstream_cx_upgrades_total = c(p + "downstream_cx_upgrades_total")
        self.downstream_rq_ws_on_non_ws_route = c(p + "downstream_rq_ws_on_non_ws_route")
        self.downstream_cx_upgrades_active = g(p + "downstream_cx_upgrades_active")
        self.no_route = c(p + "no_route")
        self.no_cluster = c(p + "no_cluster")
        self.rq_direct_response = c(p + "rq_direct_response")
        self.rq_redirect = c(p + "rq_redirect")
        self.downstream_cx_active = g(p + "downstream_cx_active")
        self.downstream_rq_active = g(p + "downstream_rq_active")
        self.downstream_rq_time = store.histogram(p + "downstream_rq_time")
        self.by_class = tuple(c(f"{p}downstream_rq_{n}xx") for n in range(6))

    def response(self, status: int) -> None:
        cls = status // 100
        if 1 <= cls <= 5:
            self.by_class[cls].value += 1
        self.downstream_rq_completed.value += 1


class ListenerStats:
    def __init__(self, store: StatsStore, listener_stat_name: str) -> None:
        p = f"listener.{listener_stat_name}."
        self._store = store
        self._prefix = p
        self.downstream_cx_total = store.counter(p + "downstream_cx_total")
        self.downstream_cx_active = store.gauge(p + "downstream_cx_active")
        self.no_filter_chain_match = store.counter(p + "no_filter_chain_match")

    def counter(self, suffix: str) -> Counter:
        return self._store.counter(self._prefix + suffix)


def render_text(store: StatsStore) -> str:
    """``/stats``: ``name: value`` lines, histograms as Envoy's P-quantile summary."""
    lines = [f"{c.name}: {c.value}" for c in store.counters()]
    lines.extend(f"{g.name}: {g.value}" for g in store.gauges())
    lines.sort()
    for h in store.histograms():
        if not h.count:
            lines.append(f"{h.name}: No recorded values")
            continue
        qs = ", ".join(
            f"P{int(q * 100)}({h.quantile(q)},{h.quantile(q)})" for q in (0.5, 0.9, 0.99)
        )
        lines.append(f"{h.name}: {qs}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class _TagRule:
    regex: re.Pattern[str]
    tag: str


# A subset of Envoy's default tag extractors (``envoy.*`` tag names), applied in order;
# each removes the captured part from the metric name, as Envoy's TagProducer does.
_TAG_RULES: tuple[_TagRule, ...] = (
    _TagRule(re.compile(r"^cluster\.((.+?)\.)"), "envoy_cluster_name"),
    _TagRule(re.compile(r"^http\.((.*?)\.)"), "envoy_http_conn_manager_prefix"),
    # An IPv4 address and port (``127.0.0.1_15001``) or an IPv6 one, as Envoy's extractor
    # takes them; a listener with a stat_prefix (``listener.admin.``) keeps it in its name.
    _TagRule(
        re.compile(r"^listener\.(((?:[_.\d]*|[_\[\]a-fA-F\d]*))\.)"), "envoy_listener_address"
    ),
    _TagRule(re.compile(r"_rq(_(\d{3}))$"), "envoy_response_code"),
    _TagRule(re.compile(r"_rq(_(\dxx))$"), "envoy_response_code_class"),
)


def _tags(name: str) -> tuple[str, list[tuple[str, str]]]:
    tags: list[tuple[str, str]] = []
    for rule in _TAG_RULES:
        m = rule.regex.search(name)
        if m is None:
            continue
        value = m.group(2)
        if rule.tag == "envoy_response_code_class":
            value = value[0]
        tags.append((rule.tag, value))
        name = name[: m.start(1)] + name[m.end(1) :]
    if any(t == "envoy_response_code_class" for t, _ in tags):
        name += "_xx"
    return name, tags


_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def _prom_name(name: str) -> str:
    return "envoy_" + _INVALID.sub("_", name)


def _labels(tags: list[tuple[str, str]]) -> str:
    if not tags:
        return ""
    body = ",".join(f'{k}="{v}"' for k, v in reversed(tags))
    return "{" + body + "}"


def render_prometheus(store: StatsStore) -> str:
    """``/stats/prometheus``: Envoy's exposition (``envoy_`` prefix, tags as labels)."""
    families: dict[str, tuple[str, list[str]]] = {}

    def add(kind: str, name: str, sample: str) -> None:
        families.setdefault(name, (kind, []))[1].append(sample)

    for c in store.counters():
        base, tags = _tags(c.name)
        pname = _prom_name(base)
        add("counter", pname, f"{pname}{_labels(tags)} {c.value}")
    for g in store.gauges():
        base, tags = _tags(g.name)
        pname = _prom_name(base)
        add("gauge", pname, f"{pname}{_labels(tags)} {g.value}")
    for h in store.histograms():
        base, tags = _tags(h.name)
        pname = _prom_name(base)
        labels = ",".join(f'{k}="{v}"' for k, v in reversed(tags))
        sep = "," if labels else ""
        cumulative = 0
        for bound, n in zip(h.buckets, h.counts, strict=False):
            cumulative += n
            add("histogram", pname, f'{pname}_bucket{{{labels}{sep}le="{bound:g}"}} {cumulative}')
        add("histogram", pname, f'{pname}_bucket{{{labels}{sep}le="+Inf"}} {h.count}')
        add("histogram", pname, f"{pname}_sum{_labels(tags)} {h.total:g}")
        add("histogram", pname, f"{pname}_count{_labels(tags)} {h.count}")
    out: list[str] = []
    for name in sorted(families):
        kind, samples = families[name]
        out.append(f"# TYPE {name} {kind}")
        out.extend(samples)
    return "\n".join(out) + "\n"
