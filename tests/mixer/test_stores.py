"""mixer's sans-I/O parts at their seams: Istio metrics as prometheus-client renders them and
promtool reads them, the span store's bounds and queries, the graph's windows and the recent
log's search, all with a clock the test moves."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mixer.graph import Graph, quantile
from mixer.logstore import LogQuery, RecentLog, parse_status
from mixer.metrics import BUCKETS, IstioMetrics
from mixer.peers import PeerInfo, PeerRegistry, node_addresses
from mixer.report import Report, ServiceName
from mixer.traces import SpanError, TraceQuery, TraceStore, validate_span
from tests.mixer.harness import sample_value, samples
from tests.support.prometheus import promtool_check_metrics

PP = PeerInfo("productpage-v1", "default", "productpage", "v1", "productpage", "v1")
REVIEWS = PeerInfo("reviews-v2", "default", "reviews", "v2", "reviews", "v2")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def report(**kw: object) -> Report:
    base = Report(
        reporter="source",
        source=PP,
        destination=REVIEWS,
        service=ServiceName("reviews.default.svc.cluster.local", "reviews", "default"),
        protocol="http",
        response_code=200,
        grpc_status="",
        flags="-",
        security_policy="unknown",
        source_principal="unknown",
        destination_principal="unknown",
        start=1_000_000.0,
        duration_ms=12.0,
        request_bytes=300,
        response_bytes=4000,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_metrics_render_istios_names_buckets_and_labels() -> None:
    registry = CollectorRegistry()
    metrics = IstioMetrics()
    registry.register(metrics)
    for ms in (0.3, 12.0, 12.0, 7000.0):
        metrics.record(report(duration_ms=ms))
    metrics.record(report(response_code=503, flags="URX"))
    metrics.record(report(protocol="tcp", request_bytes=10, response_bytes=20, tcp_opened=True,
                          tcp_closed=True))  # fmt: skip
    text = generate_latest(registry).decode()
    assert sample_value(text, "istio_requests_total", response_code="200") == 4
    assert sample_value(text, "istio_requests_total", response_flags="URX") == 1
    buckets = {
        lab["le"]: v
        for lab, v in samples(text, "istio_request_duration_milliseconds_bucket")
        if lab["response_code"] == "200"
    }
    assert len(buckets) == len(BUCKETS) + 1
    assert (buckets["0.5"], buckets["10.0"], buckets["25.0"], buckets["10000.0"]) == (1, 1, 3, 4)
    assert buckets["+Inf"] == 4
    tcp = samples(text, "istio_tcp_sent_bytes_total")
    assert [v for _, v in tcp] == [20] and "response_code" not in tcp[0][0]
    assert sample_value(text, "istio_tcp_connections_closed_total") == 1
    if shutil.which("promtool"):
        rc, findings = promtool_check_metrics(text)
        assert rc in (0, 3) and all("milliseconds" in f for f in findings), findings
    assert metrics.series == 2 * 4 + 4


def test_peer_registry_by_address_and_node_id() -> None:
    peers = PeerRegistry(max_nodes=2)
    assert node_addresses("sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local", {}) == ("10.0.0.1",)
    assert node_addresses("x", {"INSTANCE_IPS": "10.0.0.2,fe80::1, bad"}) == ("10.0.0.2", "fe80::1")
    assert peers.add(PP, ("10.0.0.1",)) and not peers.add(PP, ("10.0.0.1",))
    assert peers.get("10.0.0.1:15006") is PP and peers.get("[fe80::1]:80") is None
    peers.add(REVIEWS, ("10.0.0.2", "10.0.0.3"))
    assert len(peers) == 2 and peers.get("10.0.0.1") is None  # the oldest made room


SPAN = {"traceId": "A" * 32, "id": "b" * 16, "name": "GET /", "timestamp": 1_000_000_000_000,
        "duration": 5000, "localEndpoint": {"serviceName": "Front"}, "kind": "SERVER"}  # fmt: skip


def test_span_validation_normalises_like_zipkin() -> None:
    span = validate_span({**SPAN, "traceId": "abc", "parentId": "b" * 16})
    assert span["traceId"] == "0000000000000abc" and "parentId" not in span  # self-parent
    assert span["name"] == "get /" and span["localEndpoint"]["serviceName"] == "front"
    for bad, field in (({"id": 5}, "id"), ({"traceId": "x" * 33}, "traceId"),
                       ({"tags": {"a": 1}}, "tags"), ({"duration": 1.5}, "duration")):  # fmt: skip
        with pytest.raises(SpanError, match=field):
            validate_span({**SPAN, **bad}, 3)


def test_trace_store_bounds_by_count_and_age() -> None:
    clock = Clock()
    store = TraceStore(max_spans=3, retention=60, clock=clock)
    for i in range(3):
        store.add([validate_span({**SPAN, "traceId": f"{i:032x}", "id": f"{i + 1:016x}"})])
    assert len(store) == 3
    store.add([validate_span({**SPAN, "traceId": f"{9:032x}", "id": "f" * 16})])
    assert len(store) == 3 and store.trace(f"{0:032x}") is None  # the oldest trace went first
    assert store.trace(f"{9:016x}") is not None  # a 64-bit id finds the 128-bit trace
    clock.now += 61
    assert store.services() == [] and len(store) == 0


def test_trace_queries_and_dependencies() -> None:
    store = TraceStore(100, 3600, Clock(1_000_000.0))
    root = validate_span(SPAN)
    call = validate_span({**SPAN, "id": "c" * 16, "parentId": "b" * 16, "kind": "CLIENT",
                          "name": "call", "remoteEndpoint": {"serviceName": "back"}})  # fmt: skip
    back = validate_span({**SPAN, "id": "d" * 16, "parentId": "c" * 16, "name": "serve",
                          "localEndpoint": {"serviceName": "back"},
                          "tags": {"error": "boom"}})  # fmt: skip
    store.add([root, call, back])
    assert store.services() == ["back", "front"]
    assert store.remote_services("front") == ["back"]
    assert store.traces(TraceQuery(service="back", limit=5))[0][0]["traceId"] == "a" * 32
    assert store.traces(TraceQuery(annotation_query="error=boom")) != []
    assert store.traces(TraceQuery(end_ts=1, lookback=1)) == []
    deps = store.dependencies(end_ts=1_000_000_000 + 1000, lookback=10_000)
    assert deps == [{"parent": "front", "child": "back", "callCount": 1, "errorCount": 1}]


def test_graph_windows_and_quantiles() -> None:
    clock = Clock()
    graph = Graph(clock, keep=60)
    for i in range(10):
        graph.record(report(start=clock.now - 30 + i, duration_ms=10.0 * (i + 1),
                            response_code=503 if i == 0 else 200))  # fmt: skip
    # the callee's report adds the mTLS fact, not a second count
    graph.record(report(reporter="destination", security_policy="mutual_tls"))
    snap = graph.snapshot(window=60)
    edges = {(e["source"], e["target"]): e for e in snap["edges"]}
    call = edges[("workload:default:productpage-v1",
                  "service:default:reviews.default.svc.cluster.local")]  # fmt: skip
    assert call["requests"] == 10 and call["error_rate"] == 0.1 and call["mtls"] is True
    assert call["p50_ms"] <= call["p99_ms"] <= 100
    assert graph.snapshot(window=5)["edges"] == []
    clock.now += 120
    assert graph.snapshot(window=60)["edges"] == []
    assert quantile(0.5, [0] * (len(BUCKETS) + 1)) is None


def test_graph_labels_services_by_short_name_and_addresses_whole() -> None:
    clock = Clock()
    graph = Graph(clock, keep=60)
    graph.record(report(start=clock.now))
    graph.record(report(start=clock.now, service=ServiceName("10.0.0.5:8000", "", "")))
    labels = {n["name"]: n["label"] for n in graph.snapshot()["nodes"] if n["kind"] == "service"}
    assert labels == {
        "reviews.default.svc.cluster.local": "reviews",
        "10.0.0.5:8000": "10.0.0.5:8000",
    }


def test_recent_log_search() -> None:
    clock = Clock()
    log = RecentLog(max_entries=5, retention=100, clock=clock)
    for i in range(7):
        log.record(report(start=clock.now - 50 + i, response_code=503 if i % 2 else 200))
    assert len(log) == 5
    assert [r.response_code for r in log.search(LogQuery(status="5xx"))] == [503, 503]
    assert log.search(LogQuery(workload="reviews-v2")) == []  # the source reported these
    assert len(log.search(LogQuery(workload="productpage-v1.default", since=45.5))) == 2
    clock.now += 200
    assert log.search(LogQuery()) == [] and len(log) == 0
    for bad in ("6xx", "50", "5x", "abc"):
        with pytest.raises(ValueError, match="expected a code"):
            parse_status(bad)
