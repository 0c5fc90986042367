"""Bookinfo through the ingress gateway under load, on both data planes in one run.

``python -m benchmarks.bookinfo [--quick] [--rates 25,50,100,200] [--duration S]``

``GET /productpage`` through the ingress gateway: gateway → productpage's sidecar → the app,
which calls details and reviews (v1, v2 or v3, round robin) through its sidecar, reviews v2
and v3 calling ratings through theirs: seven proxies, all configured by one ``pymesh pilot``
from the project's Bookinfo manifests (:mod:`benchmarks.bookinfo_mesh`). Once with Envoy 1.40
as every sidecar and the gateway, once with ``pymesh proxy``; same pilot, same app processes.
The direct path (productpage → details, reviews v3 → ratings, no proxy) is the apps' own
ceiling and the baseline "added" latency is measured against.

The load is the open-loop generator (fixed arrival rate, latency from each request's
scheduled start, HDR histograms) at each rate, then as fast as answers come back over the
same connections (saturation, a closed loop). The proxies' CPU per page (warm-up included),
their CPU while idle and their peak RSS are measured too. Every answer must be a 200 with the
page's title: anything else is a failed request, counted in the table (a run with more than
1 % failed is reported as failed and left out of the medians, never dropped).

Pinning as in the other benchmarks: every proxy on CPU 1; apps, pilot and the load on CPU 0,
where the Python apps are the bottleneck (the direct path saturates at a few hundred pages/s
on the 2-core VM: the default rates stay below the mesh's knee). A fresh set of proxies per
repetition, the planes taking turns (direct, A, B; direct, B, A; ...).

Output, in ``benchmarks/results/bookinfo-<time>/``: ``report.md`` (the latency table, the
pymesh/Envoy table, machine, commit, load averages), ``latency.png`` and ``report.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from benchmarks import loadgen
from benchmarks.bookinfo_mesh import (
    PILOT_IP,
    DirectApps,
    MeshApps,
    Plane,
    bookinfo_pods,
    pilot_config,
    pod_addresses,
)
from benchmarks.machine import commit, machine
from benchmarks.rate_cli import planes_to_run, rate_parser, stamp_row
from benchmarks.rate_report import SATURATION, markdown, plot, write
from benchmarks.two_sidecars import fixed_rate
from pymesh.samples.bookinfo.constants import PAGE_TITLE
from tests.integration.pilot_harness import PilotProcess

__all__ = ["main", "ratio_table"]

log = structlog.get_logger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
# Concurrent pages in flight at most: productpage's own calls are sequential per page, so
# this is how many pages the apps work on at once at saturation.
CONNECTIONS = 8
CPU_COLUMNS = (("cpu_us", "all 7 proxies, per page"),)
#: the pymesh/Envoy table's columns: key, format, whether a ratio is shown
COMPARED = (
    ("p50_ms", ".1f", True),
    ("p99_ms", ".1f", True),
    ("rps", ".1f", False),
    ("cpu_us", ",.0f", True),
    ("rss_mb", ".0f", True),
    ("idle_cpu_pct", ".1f", True),
)


def measure(url: str, plane: str, rep: int, args: Any,
            proxy_cpu: Callable[[], float] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Every rate, then saturation, against ``url``; with ``proxy_cpu`` (the CPU seconds of
    the plane's proxies so far), their CPU per page."""
    rows = []
    for rate in [*args.rates, SATURATION]:
        before = proxy_cpu() if proxy_cpu else 0.0
        try:
            row = fixed_rate(url, 0.0 if rate == SATURATION else float(rate), args,
                             expect=PAGE_TITLE, connections=CONNECTIONS)  # fmt: skip
        except (loadgen.ToolError, OSError, ValueError) as exc:
            row = {"error": str(exc)}
        if proxy_cpu is not None and row.get("requests"):
            # The warm-up's pages are in the CPU time too: count them in, at the same rate.
            pages = row["requests"] * (1 + args.warmup / args.duration)
            row["cpu_us"] = (proxy_cpu() - before) / pages * 1e6
        rows.append(stamp_row(row, plane, rate, rep))
    return rows


def _median(rows: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else f"{value:{spec}}"


def ratio_table(runs: Sequence[dict[str, Any]], rates: Sequence[Any]) -> str:
    """Per rate: failed requests of every plane (all repetitions, failed runs included), and
    Envoy's and pymesh's medians side by side with pymesh/Envoy."""
    head = ("| rate (req/s) | failed / requests: direct | envoy | pymesh | p50 ms envoy / "
            "pymesh (ratio) | p99 ms envoy / pymesh (ratio) | reached req/s envoy / pymesh "
            "| proxy CPU µs/page envoy / pymesh (ratio) | proxies' peak RSS MB envoy / "
            "pymesh (ratio) | idle proxies' CPU % of a core envoy / pymesh (ratio) |")  # fmt: skip
    lines = [head, "| --- " * 10 + "|"]
    for rate in rates:
        cells = []
        for plane in ("direct", "envoy", "pymesh"):
            rows = [r for r in runs if r["plane"] == plane and r["rate"] == rate]
            failed = sum(r.get("errors", 0) for r in rows)
            broken = sum(1 for r in rows if "requests" not in r)
            total = sum(r.get("requests", 0) for r in rows)
            cells.append(f"{failed} / {total}" + (f" (+{broken} runs failed)" if broken else ""))
        ok = {p: [r for r in runs if r["plane"] == p and r["rate"] == rate
                  and not r.get("error")] for p in ("envoy", "pymesh")}  # fmt: skip
        pairs = []
        for key, spec, ratio in COMPARED:
            if rate == SATURATION and key in ("p50_ms", "p99_ms"):
                pairs.append("-")
                continue
            e, p = _median(ok["envoy"], key), _median(ok["pymesh"], key)
            text = f"{_fmt(e, spec)} / {_fmt(p, spec)}"
            if ratio and e and p is not None:
                text += f" ({p / e:.2f}x)"
            pairs.append(text)
        label = rate if rate == SATURATION else f"{rate:g}"
        lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(pairs)} |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = rate_parser("python -m benchmarks.bookinfo", __doc__, "25,50,100,200", "pages", RESULTS)
    p.add_argument("--idle", type=float, default=5.0, help="seconds of idle proxies' CPU")
    return p


def _header(args: Any, planes: Sequence[str], started: str, info: dict[str, Any]) -> str:
    return "\n".join([
        "# Bookinfo through the ingress gateway: GET /productpage",
        "",
        f"- started {started}; commit `{commit()}`",
        f"- machine: {info['host']}, {info['cpus']} CPUs ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}; shared and loaded: the load average of each row is its own",
        f"- data planes: {', '.join(planes)}; 7 proxies each (6 sidecars, the gateway), "
        "one worker each, all on CPU 1; apps, pilot and load on CPU 0"
        + (" (not pinned)" if args.no_pin else ""),
        f"- {args.reps} repetition(s) of {args.duration:g} s after {args.warmup:g} s warm-up, "
        f"{CONNECTIONS} connections; saturation = as fast as answers come on them",
        "- direct: productpage → details, reviews v3 → ratings, no proxy (mesh: reviews v1-v3)",
        "- medians (min-max); latency from each request's scheduled start (open loop); a "
        "request fails unless it is a 200 with the page title",
    ])  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.reps, args.duration, args.warmup, args.idle = 1, 3.0, 1.0, 2.0
    planes = planes_to_run(args)
    if planes is None:
        return 1
    work = args.work = Path(tempfile.mkdtemp(prefix="pymesh-bench-bookinfo-"))
    pods = bookinfo_pods()
    ips = pod_addresses(pods)
    pilot_config(work / "mesh")
    pilot = PilotProcess(PILOT_IP, work / "mesh", work / "logs")
    runs: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    apps: list[MeshApps | DirectApps] = []
    try:
        asyncio.run(pilot.start())
        apps.append(MeshApps(pods, ips, work / "logs", args.load_cpus))
        direct = DirectApps(work / "logs", args.load_cpus)
        apps.append(direct)
        for rep in range(args.reps):
            runs.extend(measure(direct.url, "direct", rep, args))
            for kind in planes if rep % 2 == 0 else planes[::-1]:
                plane = Plane(kind, pods, ips, pilot, work / f"rep{rep}" / kind, args.proxy_cpus)
                try:
                    plane.start()
                except (RuntimeError, TimeoutError, OSError) as exc:
                    # Named in the report as a failed run at every rate, never dropped.
                    for rate in [*args.rates, SATURATION]:
                        row = {"error": f"did not start: {str(exc)[:300]}"}
                        runs.append(stamp_row(row, kind, rate, rep))
                    continue
                try:
                    idle = plane.idle_cpu_share(args.idle) * 100
                    rows = measure(plane.url, kind, rep, args, plane.cpu_seconds)
                    rss = plane.peak_rss_bytes() / 1e6
                finally:
                    plane.stop()
                for row in rows:
                    row["rss_mb"] = rss  # fresh proxies per repetition: their peak over it
                    row["idle_cpu_pct"] = idle
                runs.extend(rows)
    finally:
        for group in apps:
            group.stop()
        pilot.stop()
    shown = ["direct", *planes]
    info = machine()
    rates = [*args.rates, SATURATION]
    table = markdown(runs, shown, CPU_COLUMNS)
    ratios = ratio_table(runs, rates)
    print(table + "\n\n" + ratios)
    out = args.results / f"bookinfo-{time.strftime('%Y%m%dT%H%M%S')}"
    settings = {k: str(v) for k, v in vars(args).items()}
    doc = {"machine": info, "commit": commit(), "settings": settings, "runs": runs}
    body = f"{table}\n\n## pymesh / Envoy\n\n{ratios}"
    md = write(out, "report", _header(args, planes, started, info), body, doc)
    title = f"Bookinfo via the gateway, commit {commit()[:12]}, {info['host']}"
    if plot(runs, shown, out / "latency.png", title):
        print(f"plots: {out / 'latency.png'}", file=sys.stderr)
    print(f"report: {md}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r.get("error") for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
