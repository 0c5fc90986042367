"""One stats view from N workers' stats: what Envoy's single store shows for N threads.

Counters and histograms add up. A gauge either counts something each worker owns (active
connections, requests, faults), which Envoy's shared gauge sums across threads, or describes
state every worker holds alike (cluster membership, active clusters, liveness), which Envoy
keeps once (its ``NeverImport`` gauges); those are taken once, not multiplied by N. The
listener's connection stats are also shown per worker (``listener.<address>.worker_<id>.*``),
as Envoy's per-handler listener stats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from proxy.stats import StatsStore

__all__ = ["StatsDump", "dump_stats", "merge_stats"]


class HistogramDump(TypedDict):
    buckets: list[float]
    counts: list[int]
    total: float


class StatsDump(TypedDict):
    counters: dict[str, int]
    gauges: dict[str, int]
    histograms: dict[str, HistogramDump]


# Gauges summed across workers; every other gauge is per-process state, taken once.
_SUMMED_SUFFIXES = ("_active", ".active_faults", "_open")
# ...except these, which end like a count but describe shared state.
_SHARED = ("ejections_active", "total_listeners_active")
_PER_WORKER_LISTENER_STATS = ("downstream_cx_total", "downstream_cx_active")


def dump_stats(store: StatsStore) -> StatsDump:
    """A worker's whole store as JSON-ready values (histograms with their raw buckets, so
    that percentiles can be computed over the merged counts)."""
    return {
        "counters": {c.name: c.value for c in store.counters()},
        "gauges": {g.name: g.value for g in store.gauges()},
        "histograms": {
            h.name: {"buckets": list(h.buckets), "counts": list(h.counts), "total": h.total}
            for h in store.histograms()
        },
    }


def _summed(name: str) -> bool:
    if name.endswith(_SHARED):
        return False
    return name.endswith(_SUMMED_SUFFIXES)


def merge_stats(dumps: Sequence[Mapping[str, Any]], *, concurrency: int) -> StatsStore:
    """The workers' dumps (worker ``i`` at index ``i``) as one store."""
    store = StatsStore()
    seen: set[str] = set()
    for worker, data in enumerate(dumps):
        for name, value in data["counters"].items():
            store.counter(name).value += value
            _per_worker(store, name, worker, value, counter=True)
        for name, value in data["gauges"].items():
            gauge = store.gauge(name)
            if _summed(name):
                gauge.value += value
            elif name not in seen:
                gauge.value = value
            elif ".remaining_" in name:
                gauge.value = min(gauge.value, value)
            else:
                # Shared state is the same in every worker once a push has reached them all;
                # while one is behind, the larger value shows (a membership being added).
                gauge.value = max(gauge.value, value)
            seen.add(name)
            _per_worker(store, name, worker, value, counter=False)
        for name, raw in data["histograms"].items():
            h = store.histogram(name)
            if tuple(raw["buckets"]) != h.buckets:
                continue  # not the same histogram shape: cannot be added bucket by bucket
            for i, n in enumerate(raw["counts"]):
                h.counts[i] += n
            h.count += sum(raw["counts"])
            h.total += raw["total"]
    store.gauge("server.concurrency").value = concurrency
    return store


def _per_worker(store: StatsStore, name: str, worker: int, value: int, *, counter: bool) -> None:
    if not name.startswith("listener."):
        return
    scope, _, stat = name.rpartition(".")
    if stat not in _PER_WORKER_LISTENER_STATS:
        return
    per_worker = f"{scope}.worker_{worker}.{stat}"
    if counter:
        store.counter(per_worker).value = value
    else:
        store.gauge(per_worker).value = value
