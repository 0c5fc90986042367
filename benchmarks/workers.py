"""Two workers against one: ``pymesh proxy --concurrency 1`` and ``2``, with Envoy's
``--concurrency 1`` and ``2`` beside them to show what the machine allows.

``python -m benchmarks.workers [--quick] [--rates 100,500,1000] [--duration S]``

One proxy (listener → router → nginx ``/1k``), measured as ``benchmarks.two_sidecars`` does:
fixed rates with the open-loop generator over 16 connections (latency from each request's
scheduled start) and saturation with ``wrk -t2 -c50``. The proxy may run on both CPUs; nginx
and the load generator run on them too (a 2-core machine has no third core to keep them
apart), so a second worker competes with them: Envoy's own ratio in the same run is the
yardstick. A fresh proxy per configuration and repetition, configurations interleaved.

Output in ``benchmarks/results/workers-<time>/``: ``report.md`` (machine, commit, load
average per row, the saturation ratios), ``latency.png``, ``report.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import loadgen, procstat
from benchmarks.machine import commit, machine, uptime
from benchmarks.nginx import Nginx
from benchmarks.rate_report import SATURATION, markdown, plot, write
from benchmarks.two_sidecars import CONNECTIONS, _percentiles
from tests.support.envoy import EnvoyProcess, ProxyProcess, find_envoy, make_proxy, router_bootstrap
from tests.support.procs import free_port

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results"
HOST = "127.0.55.110"
SATURATION_CONNECTIONS = 50


class EnvoyWorkers(EnvoyProcess):
    """The real Envoy with ``--concurrency N`` instead of the tests' one worker."""

    def __init__(self, bootstrap: Any, *, concurrency: int, **kwargs: Any) -> None:
        super().__init__(bootstrap, **kwargs)
        self.concurrency = concurrency

    def argv(self) -> list[str]:
        argv = super().argv()
        argv[argv.index("--concurrency") + 1] = str(self.concurrency)
        return argv


def _proxy(kind: str, workers: int, nginx: Nginx, work: Path, args: Any) -> ProxyProcess:
    boot = router_bootstrap((HOST, free_port(HOST)), [(nginx.host, nginx.port)],
                            admin=(HOST, free_port(HOST)))  # fmt: skip
    common: dict[str, Any] = {"workdir": work, "log_level": "warning", "cpus": args.proxy_cpus}
    if kind == "envoy":
        return EnvoyWorkers(boot, concurrency=workers, **common)
    return make_proxy(kind, boot, extra_args=["--concurrency", str(workers)], **common)


def measure(proxy: ProxyProcess, plane: str, rep: int, args: Any) -> list[dict[str, Any]]:
    host, port = proxy.listener()
    url = f"http://{host}:{port}/1k"
    rows = []
    for rate in [*args.rates, SATURATION]:
        cpu0 = procstat.cpu_seconds(proxy.pid)
        try:
            if rate == SATURATION:
                loadgen.run_wrk(url, connections=SATURATION_CONNECTIONS, seconds=args.warmup,
                                threads=2, workdir=args.work, cpus=None)  # fmt: skip
                cpu0 = procstat.cpu_seconds(proxy.pid)
                sat = loadgen.run_wrk(url, connections=SATURATION_CONNECTIONS,
                                      seconds=args.duration, threads=2, workdir=args.work,
                                      cpus=None)  # fmt: skip
                row: dict[str, Any] = {"rps": sat.rps, "requests": sat.requests}
                if sat.error_ratio > 0.01:
                    row["error"] = f"{sat.errors} of {sat.requests} requests failed"
            else:
                load = {"rate": rate, "connections": CONNECTIONS, "cpus": None}
                loadgen.open_loop_document(url, seconds=args.warmup, **load)
                cpu0 = procstat.cpu_seconds(proxy.pid)
                doc = loadgen.open_loop_document(url, seconds=args.duration, **load)
                codes = {int(k): int(v) for k, v in doc["RetCodes"].items()}
                total = sum(codes.values())
                row = {**_percentiles(doc), "requests": total,
                       "rps": total / (int(doc["ActualDuration"]) / 1e9)}  # fmt: skip
                failed = sum(n for c, n in codes.items() if not 200 <= c < 400)
                if failed > 0.01 * max(total, 1):
                    row["error"] = f"{failed} of {total} requests failed: {codes}"
        except (loadgen.ToolError, OSError) as exc:
            row = {"error": str(exc)}
        if row.get("requests"):
            row["cpu_a_us"] = (procstat.cpu_seconds(proxy.pid) - cpu0) / row["requests"] * 1e6
        row.update(plane=plane, rate=rate, rep=rep, uptime=uptime())
        row["load1"] = float(row["uptime"].split(": ")[1].split(",")[0])
        shown = {k: round(v, 2) for k, v in row.items() if isinstance(v, float)}
        print(f"rep {rep + 1} {plane} {rate}: {shown} {row.get('error', '')}", file=sys.stderr)
        rows.append(row)
    return rows


def ratios(runs: Sequence[dict[str, Any]], kinds: Sequence[str]) -> list[str]:
    lines = []
    for kind in kinds:
        per_rep = []
        for rep in sorted({r["rep"] for r in runs}):
            sat = {
                r["plane"]: r["rps"]
                for r in runs
                if r["rep"] == rep and r["rate"] == SATURATION and not r.get("error")
            }
            one, two = sat.get(f"{kind} x1"), sat.get(f"{kind} x2")
            if one and two:
                per_rep.append(two / one)
        if per_rep:
            shown = ", ".join(f"{v:.2f}" for v in per_rep)
            lines.append(
                f"- {kind}: two workers / one at saturation = "
                f"{statistics.median(per_rep):.2f}x (per repetition: {shown})"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="1 repetition of 3 s runs")
    p.add_argument("--only", default="pymesh,envoy")
    p.add_argument("--rates", default="100,500,1000")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--proxy-cpus", default="0,1", help="taskset list for the proxy")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.duration, args.warmup = 1, 3.0, 1.0
    args.rates = [float(r) for r in args.rates.split(",") if r]
    kinds = [k for k in args.only.split(",") if k and (k != "envoy" or find_envoy())]
    if missing := loadgen.missing_tools():
        print(f"missing tools: {', '.join(missing)} (make apt-bench)", file=sys.stderr)
        return 1
    work = args.work = Path(tempfile.mkdtemp(prefix="pymesh-bench-workers-"))
    nginx = Nginx(work / "nginx", host=HOST, cpus=None).start()
    planes = [f"{k} x{n}" for k in kinds for n in (1, 2)]
    runs: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        for rep in range(args.reps):
            for plane in planes if rep % 2 == 0 else planes[::-1]:
                kind, workers = plane.split(" x")
                proxy = _proxy(kind, int(workers), nginx, work / f"{rep}-{kind}-{workers}", args)
                proxy.start(timeout=60)
                try:
                    runs.extend(measure(proxy, plane, rep, args))
                finally:
                    proxy.stop()
    finally:
        nginx.stop()
    info = machine()
    head = "\n".join([
        "# One proxy, one worker vs two (listener → router → nginx /1k)",
        "",
        f"- started {started}; commit `{commit()}`",
        f"- machine: {info['host']}, {info['cpus']} CPUs ({info['cpu']}), Linux {info['kernel']}; "
        "shared and loaded: the load average of each row is its own",
        f"- proxy on CPUs {args.proxy_cpus}; nginx and the load generators unpinned (they share "
        "the same cores); saturation `wrk -t2 -c50`, fixed rates open loop over 16 connections",
        f"- {args.reps} repetition(s) of {args.duration:g} s after {args.warmup:g} s warm-up; "
        "medians (min-max); CPU µs/req is the proxy's, all workers together",
        "",
        *ratios(runs, kinds),
    ])  # fmt: skip
    table = markdown(runs, planes, cpu=(("cpu_a_us", "proxy"),))
    print(head + "\n\n" + table)
    out = args.results / f"workers-{time.strftime('%Y%m%dT%H%M%S')}"
    settings = {k: str(v) for k, v in vars(args).items()}
    write(out, "report", head, table, {"machine": info, "commit": commit(),
                                       "settings": settings, "runs": runs})  # fmt: skip
    plot(runs, planes, out / "latency.png", f"one proxy, 1 vs 2 workers, commit {commit()[:12]}")
    print(f"report: {out / 'report.md'}", file=sys.stderr)
    return 1 if any(r.get("error") for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
