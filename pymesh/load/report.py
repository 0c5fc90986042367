"""A run's result in fortio's formats: the text ``fortio load`` prints and its ``-json``
document, so that Istio's tasks read the same and scripts written for fortio parse it.

Times in both are seconds, as fortio writes them; histogram buckets use fortio's boundaries.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from hdrh.histogram import HdrHistogram

from pymesh.load.generator import LoadResult, LoadSpec, SizeStats

__all__ = ["PERCENTILES", "header_lines", "latency_ms", "to_json", "to_text"]

#: the ``# target`` lines fortio prints by default
PERCENTILES = (50.0, 75.0, 90.0, 99.0, 99.9)

# fortio's bucket boundaries in milliseconds (its histogram's default "divider" of 1e-3).
_BOUNDS_MS = (
    *range(1, 11),
    11, 12, 14, 16, 18, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90, 100,
    120, 140, 160, 180, 200, 250, 300, 350, 400, 450, 500, 600, 700, 800, 900, 1000,
    2000, 3000, 4000, 5000, 7500, 10000, 20000, 30000, 40000, 50000, 60000,
    70000, 80000, 90000, 100000,
)  # fmt: skip


def _g(value: float) -> str:
    """Go's %g-like short form (fortio prints 0.0056869, not 5.6869e-03)."""
    return f"{value:.6g}" if value else "0"


def _seconds(us: float) -> float:
    return us / 1e6


def _buckets(hist: HdrHistogram) -> Iterator[tuple[float, float, float, int]]:
    """``(start, end, cumulative percent, count)`` in seconds, fortio's boundaries, the first
    starting at the minimum and the last ending at the maximum."""
    total = hist.get_total_count()
    if not total:
        return
    counts: dict[int, int] = {}
    for item in hist.get_recorded_iterator():
        value_ms = item.value_iterated_to / 1000.0
        index = next((i for i, b in enumerate(_BOUNDS_MS) if value_ms <= b), len(_BOUNDS_MS))
        counts[index] = counts.get(index, 0) + item.count_at_value_iterated_to
    low, high = _seconds(hist.get_min_value()), _seconds(hist.get_max_value())
    seen = 0
    for index in sorted(counts):
        start = low if index == 0 else max(low, _BOUNDS_MS[index - 1] / 1000.0)
        end = high if index >= len(_BOUNDS_MS) else min(high, _BOUNDS_MS[index] / 1000.0)
        seen += counts[index]
        yield start, end, 100.0 * seen / total, counts[index]


def _histogram_lines(name: str, hist: HdrHistogram) -> list[str]:
    n = hist.get_total_count()
    if not n:
        return [f"{name} : no data"]
    mean, std = _seconds(hist.get_mean_value()), _seconds(hist.get_stddev())
    lines = [
        f"{name} : count {n} avg {_g(mean)} +/- {_g(std)} min {_g(_seconds(hist.get_min_value()))}"
        f" max {_g(_seconds(hist.get_max_value()))} sum {_g(mean * n)}",
        "# range, mid point, percentile, count",
    ]
    for i, (start, end, percent, count) in enumerate(_buckets(hist)):
        op = ">=" if i == 0 else ">"
        lines.append(
            f"{op} {_g(start)} <= {_g(end)} , {_g((start + end) / 2)} , {percent:.2f}, {count}"
        )
    for p in PERCENTILES:
        lines.append(f"# target {p:g}% {_g(_seconds(hist.get_value_at_percentile(p)))}")
    return lines


def _sizes(name: str, s: SizeStats) -> str:
    return (
        f"{name} : count {s.count} avg {_g(s.mean)} +/- {_g(s.stddev)} min {s.minimum}"
        f" max {s.maximum} sum {s.total}"
    )


def _requested(result: LoadResult) -> tuple[str, str]:
    spec = result.spec
    qps = "max" if spec.qps == 0 else f"{spec.qps:g}"
    duration = f"exactly {spec.requests} calls" if spec.requests else f"{spec.duration:g}s"
    return qps, duration


def header_lines(spec: LoadSpec, url: str, version: str) -> list[str]:
    """What fortio prints before it starts."""
    cpus = os.cpu_count() or 1
    what = f"{spec.requests} calls" if spec.requests else f"{spec.duration:g}s"
    lines = [
        f"Fortio {version} running at {spec.qps:g} queries per second, {cpus}->{cpus} procs,"
        f" for {what}: {url}"
    ]
    rate = "max qps" if spec.qps == 0 else f"{spec.qps:g} qps"
    per = "" if spec.qps == 0 else f" at {spec.qps / spec.connections:g} qps per thread"
    if spec.requests:
        each, extra = divmod(spec.requests, spec.connections)
        lines.append(
            f"Starting at {rate} with {spec.connections} thread(s) [gomax {cpus}]{per}"
            f" for exactly {spec.requests} calls ({each} per thread + {extra})"
        )
    else:
        lines.append(
            f"Starting at {rate} with {spec.connections} thread(s) [gomax {cpus}]{per}"
            f" for {spec.duration:g}s"
        )
    return lines


def to_text(result: LoadResult) -> list[str]:
    """The lines fortio prints once the run is over."""
    n, elapsed = result.count, result.elapsed
    perfect = result.spec.connections
    avg_ms = _seconds(result.histogram.get_mean_value()) * 1e3 if n else 0.0
    lines = [
        f"Ended after {_duration(elapsed)} : {n} calls. qps={result.actual_qps:.5g}",
        *_histogram_lines("Aggregated Function Time", result.histogram),
    ]
    # fortio's summary line of the answers that were not a 200 ("no data" when none).
    lines.append(_histogram_lines("Error cases", result.error_histogram)[0])
    lines += [
        f"Sockets used: {result.sockets} (for perfect keepalive, would be {perfect})",
        "Uniform: false, Jitter: false, Catchup allowed: true",
        "IP addresses distribution:",
        f"{result.spec.target.address}: {result.sockets}",
    ]
    for code in sorted(result.codes):
        count = result.codes[code]
        lines.append(f"Code {code} : {count} ({100.0 * count / max(n, 1):.1f} %)")
    lines += [
        _sizes("Response Header Sizes", result.header_sizes),
        _sizes("Response Body/Total Sizes", result.body_sizes),
        f"All done {n} calls (plus 0 warmup) {avg_ms:.3f} ms avg, {result.actual_qps:.1f} qps",
    ]
    return lines


def _duration(seconds: float) -> str:
    """Go's Duration.String() for the magnitudes a run has."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.4g}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.6g}ms"
    return f"{seconds:.6g}s"


def _histogram_json(hist: HdrHistogram) -> dict[str, Any]:
    n = hist.get_total_count()
    mean = _seconds(hist.get_mean_value()) if n else 0.0
    return {
        "Count": n,
        "Min": _seconds(hist.get_min_value()) if n else 0.0,
        "Max": _seconds(hist.get_max_value()) if n else 0.0,
        "Sum": mean * n,
        "Avg": mean,
        "StdDev": _seconds(hist.get_stddev()) if n else 0.0,
        "Data": [{"Start": s, "End": e, "Percent": p, "Count": c} for s, e, p, c in _buckets(hist)],
        "Percentiles": [
            {"Percentile": p, "Value": _seconds(hist.get_value_at_percentile(p))}
            for p in PERCENTILES
        ]
        if n
        else [],
    }


def to_json(result: LoadResult, url: str, version: str) -> dict[str, Any]:
    """fortio's ``-json`` document (the fields scripts read)."""
    qps, duration = _requested(result)
    return {
        "RunType": "HTTP",
        "Labels": "",
        "Version": version,
        "StartTime": datetime.fromtimestamp(result.started_at, UTC).isoformat(),
        "RequestedQPS": qps,
        "RequestedDuration": duration,
        "ActualQPS": result.actual_qps,
        "ActualDuration": round(result.elapsed * 1e9),
        "NumThreads": result.spec.connections,
        "Exactly": result.spec.requests or 0,
        "URL": url,
        "DurationHistogram": _histogram_json(result.histogram),
        "ErrorsDurationHistogram": _histogram_json(result.error_histogram),
        "RetCodes": {str(code): count for code, count in sorted(result.codes.items())},
        "Sockets": [result.sockets],
        "HeaderSizes": _sizes_json(result.header_sizes),
        "Sizes": _sizes_json(result.body_sizes),
    }


def _sizes_json(s: SizeStats) -> dict[str, Any]:
    return {"Count": s.count, "Min": s.minimum, "Max": s.maximum, "Sum": s.total, "Avg": s.mean,
            "StdDev": s.stddev}  # fmt: skip


def latency_ms(document: dict[str, Any], percentile: float) -> float:
    """A percentile of a ``-json`` document's latency in milliseconds (for benchmarks)."""
    for item in document["DurationHistogram"]["Percentiles"]:
        if float(item["Percentile"]) == percentile:
            return float(item["Value"]) * 1e3
    raise KeyError(f"percentile {percentile} not in the document")
