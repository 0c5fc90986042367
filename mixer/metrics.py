"""Istio's standard metrics (names, types, buckets and labels as Istio documents them), kept
from reports and exposed through prometheus-client.

Series are kept in plain dicts keyed by the label tuple rather than prometheus-client's
``labels()`` objects: one dict lookup and a few additions per report, no lock, which is what
lets one core keep up with many sidecars. :class:`IstioMetrics` is a prometheus-client
collector, so the exposition (text format, ``# HELP``/``# TYPE``, ``_bucket``/``_sum``/
``_count``) is the library's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from mixer.report import Report

__all__ = ["BUCKETS", "LABELS", "TCP_LABELS", "IstioMetrics", "MetricsView", "labels_of"]

#: Istio's buckets (Envoy's defaults), milliseconds for durations and bytes for sizes
BUCKETS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000,
)  # fmt: skip

LABELS: tuple[str, ...] = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
)
#: TCP metrics carry the same labels but the HTTP-only ones
TCP_LABELS: tuple[str, ...] = tuple(
    n for n in LABELS if n not in ("response_code", "grpc_response_status")
)
_TCP_DROP = (LABELS.index("response_code"), LABELS.index("grpc_response_status"))

HTTP_METRICS = (
    "istio_requests_total",
    "istio_request_duration_milliseconds",
    "istio_request_bytes",
    "istio_response_bytes",
)
TCP_METRICS = (
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
    "istio_tcp_connections_opened_total",
    "istio_tcp_connections_closed_total",
)
_NB = len(BUCKETS) + 1  # + the +Inf bucket


@dataclass(frozen=True, slots=True)
class MetricsView:
    """How a Telemetry ``metrics`` override shapes what is kept: metrics switched off, and
    label values replaced per metric (``None`` removes the label)."""

    disabled: frozenset[str] = frozenset()


class _Http:
    __slots__ = ("count", "dur", "dur_sum", "req", "req_sum", "resp", "resp_sum")

    def __init__(self) -> None:
        self.count = 0
        self.dur = [0] * _NB
        self.req = [0] * _NB
        self.resp = [0] * _NB
        self.dur_sum = 0.0
        self.req_sum = 0.0
        self.resp_sum = 0.0


class _Tcp:
    __slots__ = ("closed", "opened", "received", "sent")

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.opened = 0
        self.closed = 0


def labels_of(r: Report) -> tuple[str, ...]:
    """The label values of ``r`` in :data:`LABELS` order."""
    s, d, svc = r.source, r.destination, r.service
    return (
        r.reporter,
        s.workload,
        s.namespace,
        r.source_principal,
        s.app,
        s.version,
        s.canonical_service,
        s.canonical_revision,
        s.cluster,
        d.workload,
        d.namespace,
        r.destination_principal,
        d.app,
        d.version,
        svc.host,
        svc.name,
        svc.namespace,
        d.canonical_service,
        d.canonical_revision,
        d.cluster,
        r.protocol,
        str(r.response_code),
        r.grpc_status or "-",
        r.flags,
        r.security_policy,
    )


class IstioMetrics(Collector):  # type: ignore[misc]
    """The series of Istio's standard metrics; :meth:`record` one report at a time."""

    def __init__(self, view: MetricsView | None = None) -> None:
        self.view = view or MetricsView()
        self._http: dict[tuple[str, ...], _Http] = {}
        self._tcp: dict[tuple[str, ...], _Tcp] = {}

    @property
    def series(self) -> int:
        """Active series, counting each histogram as one."""
        http = len(self._http) * (4 - len(self.view.disabled.intersection(HTTP_METRICS)))
        tcp = len(self._tcp) * (4 - len(self.view.disabled.intersection(TCP_METRICS)))
        return http + tcp

    def record(self, r: Report, labels: tuple[str, ...] | None = None) -> None:
        key = labels or labels_of(r)
        if r.protocol == "tcp":
            tkey = tuple(v for i, v in enumerate(key) if i not in _TCP_DROP)
            t = self._tcp.get(tkey)
            if t is None:
                t = self._tcp[tkey] = _Tcp()
            t.sent += r.response_bytes
            t.received += r.request_bytes
            t.opened += r.tcp_opened
            t.closed += r.tcp_closed
            return
        h = self._http.get(key)
        if h is None:
            h = self._http[key] = _Http()
        h.count += 1
        h.dur[bisect_left(BUCKETS, r.duration_ms)] += 1
        h.dur_sum += r.duration_ms
        h.req[bisect_left(BUCKETS, r.request_bytes)] += 1
        h.req_sum += r.request_bytes
        h.resp[bisect_left(BUCKETS, r.response_bytes)] += 1
        h.resp_sum += r.response_bytes

    # -- exposition ---------------------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        off = self.view.disabled
        http = list(self._http.items())
        tcp = list(self._tcp.items())
        if "istio_requests_total" not in off:
            # prometheus-client appends _total to counter names itself
            total = CounterMetricFamily(
                "istio_requests", "Requests, by Istio's standard labels.", labels=LABELS
            )
            for key, h in http:
                total.add_metric(key, h.count)
            yield total
        for name, unit_help, attr, sum_attr in (
            ("istio_request_duration_milliseconds", "Request duration (ms).", "dur", "dur_sum"),
            ("istio_request_bytes", "Request sizes (headers + body, bytes).", "req", "req_sum"),
            ("istio_response_bytes", "Response sizes (headers + body, bytes).", "resp", "resp_sum"),
        ):
            if name in off:
                continue
            hist = HistogramMetricFamily(name, unit_help, labels=LABELS)
            for key, h in http:
                hist.add_metric(key, _cumulative(getattr(h, attr)), getattr(h, sum_attr))
            yield hist
        for name, help_text, tattr in (
            ("istio_tcp_sent_bytes", "Bytes sent to the downstream on TCP connections.", "sent"),
            ("istio_tcp_received_bytes", "Bytes received on TCP connections.", "received"),
            ("istio_tcp_connections_opened", "TCP connections opened.", "opened"),
            ("istio_tcp_connections_closed", "TCP connections closed.", "closed"),
        ):
            if name + "_total" in off:
                continue
            counter = CounterMetricFamily(name, help_text, labels=TCP_LABELS)
            for tkey, t in tcp:
                counter.add_metric(tkey, getattr(t, tattr))
            yield counter


def _cumulative(counts: Sequence[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip(BUCKETS, counts, strict=False):
        running += n
        out.append((_le(bound), running))
    out.append(("+Inf", running + counts[-1]))
    return out


def _le(bound: float) -> str:
    return str(float(bound))
