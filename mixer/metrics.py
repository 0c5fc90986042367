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
from typing import TypeVar, cast

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from mixer.attributes import attributes
from mixer.report import Report
from pymesh.config.cel import MISSING
from pymesh.config.telemetry_policy import MetricsPolicy

__all__ = ["BUCKETS", "LABELS", "TCP_LABELS", "IstioMetrics", "labels_of"]

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

# (name, help, what is counted) in exposition order
_COUNT = ("istio_requests_total", "Requests, by Istio's standard labels.")
_HISTOGRAMS = (
    ("istio_request_duration_milliseconds", "Request duration (ms).", "dur"),
    ("istio_request_bytes", "Request sizes (headers + body, bytes).", "req"),
    ("istio_response_bytes", "Response sizes (headers + body, bytes).", "resp"),
)
_TCP = (
    ("istio_tcp_sent_bytes_total", "Bytes sent to the downstream on TCP connections.", "sent"),
    ("istio_tcp_received_bytes_total", "Bytes received on TCP connections.", "received"),
    ("istio_tcp_connections_opened_total", "TCP connections opened.", "opened"),
    ("istio_tcp_connections_closed_total", "TCP connections closed.", "closed"),
)
HTTP_METRICS = (_COUNT[0], *(h[0] for h in _HISTOGRAMS))
TCP_METRICS = tuple(t[0] for t in _TCP)
Pairs = tuple[tuple[str, str], ...]
S = TypeVar("S")
_NB = len(BUCKETS) + 1  # + the +Inf bucket


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
    """The series of Istio's standard metrics; :meth:`record` one report at a time.

    Reports under the standard policy share one series per label tuple for all the HTTP (or
    TCP) metrics. A Telemetry override (a metric switched off, a tag removed or added) gives
    that reporter's reports their own series per metric, with their own label set.
    """

    def __init__(self) -> None:
        self._http: dict[tuple[str, ...], _Http] = {}
        self._tcp: dict[tuple[str, ...], _Tcp] = {}
        # metric name -> label pairs -> series, for reports under an override
        self._custom: dict[str, dict[Pairs, _Http | _Tcp]] = {}

    @property
    def series(self) -> int:
        """Active series, counting each histogram as one."""
        custom = sum(len(v) for v in self._custom.values())
        return len(self._http) * len(HTTP_METRICS) + len(self._tcp) * len(TCP_METRICS) + custom

    def record(self, r: Report, policy: MetricsPolicy | None = None) -> None:
        if policy is not None and not policy.plain:
            self._record_custom(r, policy)
            return
        key = labels_of(r)
        if r.protocol == "tcp":
            tkey = tuple(v for i, v in enumerate(key) if i not in _TCP_DROP)
            t = self._tcp.get(tkey)
            if t is None:
                t = self._tcp[tkey] = _Tcp()
            _add_tcp(t, r)
            return
        h = self._http.get(key)
        if h is None:
            h = self._http[key] = _Http()
        _add_http(h, r)

    def _record_custom(self, r: Report, policy: MetricsPolicy) -> None:
        if not policy.enabled:
            return
        names = TCP_LABELS if r.protocol == "tcp" else LABELS
        values = labels_of(r)
        if r.protocol == "tcp":
            values = tuple(v for i, v in enumerate(values) if i not in _TCP_DROP)
        base = dict(zip(names, values, strict=True))
        env = None
        for metric in TCP_METRICS if r.protocol == "tcp" else HTTP_METRICS:
            if metric in policy.disabled:
                continue
            labels = base
            rules = policy.tags.get(metric)
            if rules:
                labels = dict(base)
                for rule in rules:
                    if rule.value is None:
                        labels.pop(rule.name, None)
                        continue
                    env = env if env is not None else attributes(r)
                    value = rule.value.evaluate(env)
                    labels[rule.name] = "unknown" if value is MISSING else _text(value)
            store = self._custom.setdefault(metric, {})
            pairs = tuple(labels.items())
            series = store.get(pairs)
            if series is None:
                series = store[pairs] = _Tcp() if r.protocol == "tcp" else _Http()
            if isinstance(series, _Tcp):
                _add_tcp(series, r)
            else:
                _add_http(series, r)

    # -- exposition ---------------------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        http = [(dict(zip(LABELS, k, strict=True)), h) for k, h in self._http.items()]
        tcp = [(dict(zip(TCP_LABELS, k, strict=True)), t) for k, t in self._tcp.items()]
        name, help_text = _COUNT
        family = Metric(name.removesuffix("_total"), help_text, "counter")
        for labels, h in self._series(name, http):
            family.add_sample(name, labels, h.count)
        yield family
        for name, help_text, attr in _HISTOGRAMS:
            family = Metric(name, help_text, "histogram")
            for labels, h in self._series(name, http):
                _histogram(family, name, labels, getattr(h, attr), getattr(h, attr + "_sum"))
            yield family
        for name, help_text, attr in _TCP:
            family = Metric(name.removesuffix("_total"), help_text, "counter")
            for labels, t in self._series(name, tcp):
                family.add_sample(name, labels, getattr(t, attr))
            yield family

    def _series(
        self, metric: str, standard: list[tuple[dict[str, str], S]]
    ) -> Iterator[tuple[dict[str, str], S]]:
        yield from standard
        for pairs, series in list(self._custom.get(metric, {}).items()):
            yield dict(pairs), cast(S, series)


def _add_http(h: _Http, r: Report) -> None:
    h.count += 1
    h.dur[bisect_left(BUCKETS, r.duration_ms)] += 1
    h.dur_sum += r.duration_ms
    h.req[bisect_left(BUCKETS, r.request_bytes)] += 1
    h.req_sum += r.request_bytes
    h.resp[bisect_left(BUCKETS, r.response_bytes)] += 1
    h.resp_sum += r.response_bytes


def _add_tcp(t: _Tcp, r: Report) -> None:
    t.sent += r.response_bytes
    t.received += r.request_bytes
    t.opened += r.tcp_opened
    t.closed += r.tcp_closed


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_LE = tuple(floatToGoString(b) for b in BUCKETS)


def _histogram(
    family: Metric, name: str, labels: dict[str, str], counts: Sequence[int], total: float
) -> None:
    running = 0
    for le, n in zip(_LE, counts, strict=False):
        running += n
        family.add_sample(name + "_bucket", {**labels, "le": le}, running)
    running += counts[-1]
    family.add_sample(name + "_bucket", {**labels, "le": "+Inf"}, running)
    family.add_sample(name + "_count", labels, running)
    family.add_sample(name + "_sum", labels, total)
