"""Merging N workers' stats into the one view Envoy's single store would show."""

from __future__ import annotations

from proxy.stats import StatsStore, render_prometheus
from proxy.workers.aggregate import dump_stats, merge_stats


def worker(cx: int, active: int, membership: int, remaining: int, rq_ms: list[float]) -> StatsStore:
    store = StatsStore()
    store.counter("listener.10.0.0.1_80.downstream_cx_total").value = cx
    store.counter("http.in.downstream_rq_total").value = cx * 2
    store.gauge("listener.10.0.0.1_80.downstream_cx_active").value = active
    store.gauge("cluster.b.upstream_rq_active").value = active
    store.gauge("cluster.b.membership_total").value = membership
    store.gauge("cluster.b.outlier_detection.ejections_active").value = 1
    store.gauge("cluster.b.circuit_breakers.default.remaining_rq").value = remaining
    store.gauge("cluster.b.circuit_breakers.default.rq_open").value = 0 if remaining else 1
    store.gauge("server.live").value = 1
    for ms in rq_ms:
        store.histogram("http.in.downstream_rq_time").record(ms)
    return store


def test_counters_and_owned_gauges_add_up_shared_state_is_shown_once() -> None:
    merged = merge_stats(
        [dump_stats(worker(3, 1, 2, 5, [0.2, 3])), dump_stats(worker(4, 2, 3, 0, [40]))],
        concurrency=2,
    )
    c = {s.name: s.value for s in merged.counters()}
    g = {s.name: s.value for s in merged.gauges()}
    assert c["listener.10.0.0.1_80.downstream_cx_total"] == 7
    assert c["http.in.downstream_rq_total"] == 14
    assert g["listener.10.0.0.1_80.downstream_cx_active"] == 3
    assert g["cluster.b.upstream_rq_active"] == 3
    # A push that reached one worker first: the newer membership shows.
    assert g["cluster.b.membership_total"] == 3
    assert g["cluster.b.outlier_detection.ejections_active"] == 1
    assert g["cluster.b.circuit_breakers.default.remaining_rq"] == 0
    assert g["cluster.b.circuit_breakers.default.rq_open"] == 1
    assert g["server.live"] == 1
    assert g["server.concurrency"] == 2
    # Envoy's per-worker listener stats.
    assert c["listener.10.0.0.1_80.worker_0.downstream_cx_total"] == 3
    assert c["listener.10.0.0.1_80.worker_1.downstream_cx_total"] == 4
    assert g["listener.10.0.0.1_80.worker_1.downstream_cx_active"] == 2
    h = next(merged.histograms())
    assert h.count == 3 and h.quantile(0.99) == 50
    assert 'envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix="in"} 3' in (
        render_prometheus(merged)
    )


def test_a_gauge_only_a_later_worker_has_is_taken_as_it_is() -> None:
    first, second = StatsStore(), StatsStore()
    second.gauge("cluster.new.circuit_breakers.default.remaining_cx").value = 7
    merged = merge_stats([dump_stats(first), dump_stats(second)], concurrency=2)
    assert {g.name: g.value for g in merged.gauges()}[
        "cluster.new.circuit_breakers.default.remaining_cx"
    ] == 7
