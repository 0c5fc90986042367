"""Latency-vs-rate results: medians over repetitions, a Markdown table and PNG plots.

One row per (data plane, rate): latency percentiles measured by the open-loop generator
(from each request's scheduled start), the latency added over the direct path of the same
repetition, the rate reached, CPU per request of each proxy, and the load average recorded
with the measurement. Saturation rows carry req/s only.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["PERCENTILES", "TWO_SIDECARS_CPU", "markdown", "plot", "write"]

PERCENTILES = ("p50", "p90", "p99", "p99.9")
SATURATION = "saturation"


def _key(p: str) -> str:
    return f"{p}_ms"


def _med(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def _rates(runs: Sequence[dict[str, Any]]) -> list[Any]:
    fixed = sorted({r["rate"] for r in runs if r["rate"] != SATURATION})
    return [*fixed, *([SATURATION] if any(r["rate"] == SATURATION for r in runs) else [])]


def added(runs: Sequence[dict[str, Any]], run: dict[str, Any], p: str) -> float | None:
    """``run``'s percentile minus the direct path's at the same rate and repetition."""
    base = next(
        (
            r
            for r in runs
            if r["plane"] == "direct" and r["rate"] == run["rate"] and r["rep"] == run["rep"]
        ),
        None,
    )
    if base is None or run["plane"] == "direct":
        return None
    return float(run[_key(p)] - base[_key(p)])


def _ok(runs: Sequence[dict[str, Any]], plane: str, rate: Any) -> list[dict[str, Any]]:
    return [r for r in runs if r["plane"] == plane and r["rate"] == rate and not r.get("error")]


TWO_SIDECARS_CPU = (("cpu_a_us", "client sidecar"), ("cpu_b_us", "server sidecar"))


def markdown(
    runs: Sequence[dict[str, Any]],
    planes: Sequence[str],
    cpu: Sequence[tuple[str, str]] = TWO_SIDECARS_CPU,
) -> str:
    cpu_head = "".join(f" CPU µs/req ({title}) |" for _, title in cpu)
    lines = [
        "| data plane | rate (req/s) | p50 ms | p90 ms | p99 ms | p99.9 ms | added p50 ms "
        f"| added p99 ms | reached req/s |{cpu_head} load avg (1 min) |",
        "| --- " * (10 + len(cpu)) + "|",
    ]
    for plane in planes:
        for rate in _rates(runs):
            rows = _ok(runs, plane, rate)
            if not rows:
                continue
            load = _med([r["load1"] for r in rows], ".1f")
            rps = _med([r["rps"] for r in rows], ",.0f")
            cpus = "".join(f" {_med([r[k] for r in rows if k in r], '.0f')} |" for k, _ in cpu)
            if rate == SATURATION:
                blank = " |" * 6
                lines.append(f"| {plane} | saturation |{blank} {rps} |{cpus} {load} |")
                continue
            pct = [_med([r[_key(p)] for r in rows], ".2f") for p in PERCENTILES]
            add = [
                _med([a for r in rows if (a := added(runs, r, p)) is not None], ".2f")
                for p in ("p50", "p99")
            ]
            lines.append(
                f"| {plane} | {rate:g} | {' | '.join(pct)} | {' | '.join(add)} | {rps} |{cpus}"
                f" {load} |"
            )
    for r in runs:
        if r.get("error"):
            lines.append(f"\nfailed: {r['plane']} at {r['rate']} (rep {r['rep']}): {r['error']}")
    return "\n".join(lines)


def plot(runs: Sequence[dict[str, Any]], planes: Sequence[str], path: Path, title: str) -> bool:
    """Latency percentiles vs rate, one line per (data plane, percentile); False without
    matplotlib (``pip install '.[bench]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rates = [r for r in _rates(runs) if r != SATURATION]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), width_ratios=(3, 3, 1.4))
    colours = {"direct": "tab:gray", "envoy": "tab:blue", "pymesh": "tab:orange"}
    styles = {"p50": "o-", "p90": "s--", "p99": "^-.", "p99.9": "x:"}
    for i, plane in enumerate(planes):
        colour = colours.get(plane, f"C{i + 3}")
        for p in PERCENTILES:
            xs, ys, adds = [], [], []
            for rate in rates:
                rows = _ok(runs, plane, rate)
                if not rows:
                    continue
                xs.append(rate)
                ys.append(statistics.median(r[_key(p)] for r in rows))
                a = [v for r in rows if (v := added(runs, r, p)) is not None]
                adds.append(statistics.median(a) if a else float("nan"))
            if not xs:
                continue
            axes[0].plot(xs, ys, styles[p], color=colour, label=f"{plane} {p}")
            if plane != "direct" and p in ("p50", "p99"):
                axes[1].plot(xs, adds, styles[p], color=colour, label=f"{plane} {p}")
    axes[0].set_title("latency (from each request's scheduled start)", fontsize=9)
    axes[1].set_title("added over the direct path", fontsize=9)
    for ax in axes[:2]:
        ax.set_xlabel("rate (req/s)")
        ax.set_ylabel("ms")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    sat = [(p, [r["rps"] for r in _ok(runs, p, SATURATION)]) for p in planes]
    sat = [(p, statistics.median(v)) for p, v in sat if v]
    axes[2].bar([p for p, _ in sat], [v for _, v in sat],
                color=[colours.get(p, "C5") for p, _ in sat])  # fmt: skip
    axes[2].set_title("saturation (req/s)", fontsize=9)
    axes[2].grid(True, axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(out_dir: Path, name: str, header: str, table: str, doc: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / f"{name}.md"
    md.write_text(f"{header}\n\n{table}\n")
    (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2))
    return md
