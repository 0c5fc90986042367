"""Runs → medians with min and max → a Markdown table with ratios, and a JSON record."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ROWS", "Run", "Stat", "add_paired_latency", "markdown", "summarize", "write_json"]

TARGETS = ("direct", "envoy", "pymesh")
TITLES = {"direct": "nginx direct", "envoy": "Envoy", "pymesh": "pymesh"}


@dataclass(slots=True)
class Run:
    scenario: str  # saturation | latency | throughput
    target: str  # direct | envoy | pymesh
    rep: int
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None  # the run is left out of the summary
    warning: str | None = None  # the run counts, but the reader should know this


@dataclass(frozen=True, slots=True)
class Stat:
    median: float
    min: float
    max: float
    n: int


Summary = dict[str, dict[str, dict[str, Stat]]]  # scenario → target → metric → Stat


def add_paired_latency(runs: Sequence[Run]) -> None:
    """Added latency of each proxy run against the direct run of the same repetition."""
    direct = {r.rep: r for r in runs if r.scenario == "latency" and r.target == "direct"}
    for r in runs:
        base = direct.get(r.rep)
        if r.scenario != "latency" or r.target == "direct" or r.error or base is None:
            continue
        if base.error:
            continue
        for p in ("p50", "p90", "p99"):
            r.metrics[f"added_{p}_ms"] = r.metrics[f"{p}_ms"] - base.metrics[f"{p}_ms"]


def summarize(runs: Sequence[Run]) -> Summary:
    values: dict[tuple[str, str, str], list[float]] = {}
    for r in runs:
        if r.error:
            continue
        for metric, v in r.metrics.items():
            values.setdefault((r.scenario, r.target, metric), []).append(v)
    out: Summary = {}
    for (scenario, target, metric), vs in values.items():
        stat = Stat(statistics.median(vs), min(vs), max(vs), len(vs))
        out.setdefault(scenario, {}).setdefault(target, {})[metric] = stat
    return out


def _k(v: float) -> str:
    return f"{v / 1000:.1f}k" if abs(v) >= 10_000 else f"{v:.0f}"


def _f1(v: float) -> str:
    return f"{v:.1f}"


def _f2(v: float) -> str:
    return f"{v:.2f}"


def _mb(v: float) -> str:
    return f"{v / 1e6:.0f}"


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    scenario: str
    metric: str
    fmt: Callable[[float], str]
    direct: bool = True  # the direct column has this metric
    vs_direct: bool = True  # a pymesh/direct ratio makes sense


ROWS = (
    Row("req/s, wrk -c50 (saturation)", "saturation", "rps", _k),
    Row("CPU µs/req at saturation", "saturation", "cpu_us_per_req", _f1, False, False),
    Row("p50 ms at fixed rate", "latency", "p50_ms", _f2),
    Row("p90 ms at fixed rate", "latency", "p90_ms", _f2),
    Row("p99 ms at fixed rate", "latency", "p99_ms", _f2),
    Row("added p50 ms vs direct", "latency", "added_p50_ms", _f2, False, False),
    Row("added p90 ms vs direct", "latency", "added_p90_ms", _f2, False, False),
    Row("added p99 ms vs direct", "latency", "added_p99_ms", _f2, False, False),
    Row("CPU µs/req at fixed rate", "latency", "cpu_us_per_req", _f1, False, False),
    Row("peak RSS MB (VmHWM)", "saturation", "peak_rss", _mb, False, False),
    Row("1 MiB bodies, MB/s", "throughput", "mb_per_s", _f1),
    Row("CPU µs/req, 1 MiB bodies", "throughput", "cpu_us_per_req", _f1, False, False),
    Row("peak RSS MB, 1 MiB bodies", "throughput", "peak_rss", _mb, False, False),
)


def _cell(stat: Stat | None, fmt: Callable[[float], str]) -> str:
    if stat is None:
        return "—"
    if stat.n == 1:
        return fmt(stat.median)
    return f"{fmt(stat.median)} ({fmt(stat.min)}–{fmt(stat.max)})"  # noqa: RUF001


def _ratio(a: Stat | None, b: Stat | None) -> str:
    if a is None or b is None or b.median == 0:
        return "—"
    return f"{a.median / b.median:.2f}×"  # noqa: RUF001


def markdown(
    summary: Summary,
    failures: dict[str, str],
    targets: Sequence[str],
    notes: Sequence[str] = (),
) -> str:
    cols = [t for t in TARGETS if t in targets]
    head = ["metric", *(TITLES[t] for t in cols), "pymesh/Envoy", "pymesh/direct"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in ROWS:
        get = summary.get(row.scenario, {})
        if not any(row.metric in get.get(t, {}) for t in cols):
            continue
        stats = {t: get.get(t, {}).get(row.metric) for t in cols}
        cells = []
        for t in cols:
            if t in failures and stats[t] is None:
                cells.append("failed")
            elif t == "direct" and not row.direct:
                cells.append("—")
            else:
                cells.append(_cell(stats[t], row.fmt))
        pym = stats.get("pymesh")
        cells.append(_ratio(pym, stats.get("envoy")))
        cells.append(_ratio(pym, stats.get("direct")) if row.vs_direct else "—")
        lines.append("| " + " | ".join([row.label, *cells]) + " |")
    for t, why in failures.items():
        lines.append(f"\n**{TITLES[t]} failed:** {why}")
    for note in notes:
        lines.append(f"\n*note:* {note}")
    return "\n".join(lines)


def write_json(
    path: Path,
    *,
    meta: dict[str, Any],
    runs: Sequence[Run],
    summary: Summary,
    failures: dict[str, str],
) -> None:
    doc = {
        "meta": meta,
        "runs": [asdict(r) for r in runs],
        "summary": {
            s: {t: {m: asdict(st) for m, st in ms.items()} for t, ms in ts.items()}
            for s, ts in summary.items()
        },
        "failures": failures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
