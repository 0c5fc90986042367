"""Proxy benchmark: nginx direct vs Envoy vs ``pymesh proxy``, same bootstrap, interleaved.

``python -m benchmarks.proxy [--quick] [--only direct,envoy,pymesh] [--duration S]``

Follows ../shared/BENCHMARKING.md: nginx-light backend and the load generator on CPU 0, the
proxy alone on CPU 1, a fresh proxy process for every measurement, a 2 s warm-up, repetitions
interleaved (direct, Envoy, pymesh, direct, …), medians with min and max, and ratios. Prints a
Markdown table and writes JSON to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import loadgen, procstat, report
from benchmarks.nginx import BODY_100, FILE_1M_SIZE, Nginx
from tests.support.envoy import (
    EnvoyProcess,
    ProxyProcess,
    PymeshProxyProcess,
    find_envoy,
    pymesh_proxy_missing,
    router_bootstrap,
)
from tests.support.httpclient import request_sync
from tests.support.procs import free_port

__all__ = ["main"]

HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = ("saturation", "latency", "throughput")


class TargetFailed(RuntimeError):
    """The target could not be started or does not serve the backend correctly."""


@dataclass(slots=True)
class Settings:
    reps: int
    wrk_seconds: float
    hey_seconds: float
    warmup: float
    connections: int
    rate: float
    rate_connections: int
    throughput_connections: int
    load_cpus: str | None
    proxy_cpus: str | None
    #: the fixed-rate generator: hey, or pymesh's open loop (pymesh.load)
    rate_tool: str = "hey"


class Target:
    """Where the load goes: nginx itself, or a proxy in front of it restarted per run."""

    def __init__(self, name: str, nginx: Nginx, workdir: Path, cpus: str | None) -> None:
        self.name = name
        self.nginx = nginx
        self.workdir = workdir / name
        self.cpus = cpus
        self.listen = (HOST, free_port(HOST)) if name != "direct" else (nginx.host, nginx.port)
        self.admin = (HOST, free_port(HOST))
        self.proxy: ProxyProcess | None = None
        self.starts = 0

    def start(self) -> int | None:
        """Start a fresh proxy; its pid (None for direct)."""
        if self.name == "direct":
            return None
        if self.name == "pymesh" and (why := pymesh_proxy_missing()) is not None:
            raise TargetFailed(why)
        # Fresh ports per start: a port free when the run began may be someone else's now.
        self.listen = (HOST, free_port(HOST))
        self.admin = (HOST, free_port(HOST))
        boot = router_bootstrap(self.listen, [(self.nginx.host, self.nginx.port)], admin=self.admin)
        cls = EnvoyProcess if self.name == "envoy" else PymeshProxyProcess
        self.starts += 1
        self.proxy = cls(
            boot,
            workdir=self.workdir,
            log_level="warning",
            cpus=self.cpus,
            name=f"{self.name}-{self.starts}",
        )
        try:
            self.proxy.start(timeout=15.0)
        except (OSError, TimeoutError, RuntimeError) as exc:
            raise TargetFailed(f"could not start: {_short(str(exc))}") from None
        return self.proxy.pid

    def check_alive(self) -> None:
        if self.proxy is not None and self.proxy.proc is not None and not self.proxy.proc.alive:
            raise TargetFailed(
                f"died during the run (exit {self.proxy.proc.returncode}): "
                + _short(self.proxy.log_tail(10))
            )

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None

    def url(self, path: str) -> str:
        return f"http://{self.listen[0]}:{self.listen[1]}{path}"


def _short(text: str, lines: int = 8) -> str:
    """The first line of an error and the last lines of the log it quotes."""
    parts = [ln for ln in text.strip().splitlines() if ln.strip()]
    if len(parts) > lines:
        parts = [parts[0], "…", *parts[-(lines - 1) :]]
    return "\n    ".join(parts)


def _sanity(target: Target, path: str, size: int) -> None:
    try:
        r = request_sync(*target.listen, target=path, timeout=5.0)
    except (OSError, TimeoutError) as exc:
        raise TargetFailed(f"GET {path} failed: {exc}") from None
    if r.status != 200 or len(r.body) != size:
        raise TargetFailed(
            f"GET {path} returned {r.status} with {len(r.body)} bytes: {r.body[:200]!r}"
        )


def measure(scenario: str, target: Target, rep: int, s: Settings, workdir: Path) -> report.Run:
    run = report.Run(scenario, target.name, rep)
    path, size = ("/1m", FILE_1M_SIZE) if scenario == "throughput" else ("/", len(BODY_100))
    url = ""  # known once the target is started (its ports are picked then)

    def load(seconds: float) -> loadgen.LoadResult:
        if scenario == "latency":
            run_rate = loadgen.run_open_loop if s.rate_tool == "pymesh" else loadgen.run_hey
            return run_rate(
                url, rate=s.rate, connections=s.rate_connections, seconds=seconds, cpus=s.load_cpus
            )
        conns = s.throughput_connections if scenario == "throughput" else s.connections
        return loadgen.run_wrk(
            url, connections=conns, seconds=seconds, workdir=workdir, cpus=s.load_cpus
        )

    try:
        pid = target.start()
        url = target.url(path)
        _sanity(target, path, size)
        load(s.warmup)
        cpu0 = procstat.cpu_seconds(pid) if pid else 0.0
        res = load(s.hey_seconds if scenario == "latency" else s.wrk_seconds)
        target.check_alive()
        m = run.metrics
        if pid:
            m["cpu_us_per_req"] = (procstat.cpu_seconds(pid) - cpu0) * 1e6 / max(res.requests, 1)
            m["peak_rss"] = procstat.peak_rss_bytes(pid)
        m["rps"] = res.rps
        m["requests"] = res.requests
        m["errors"] = res.errors
        if scenario == "latency":
            m.update(p50_ms=res.p50_ms, p90_ms=res.p90_ms, p99_ms=res.p99_ms)
            if res.rps < 0.9 * s.rate:
                # hey's workers are rate-limited closed loops: slow responses cost ticks.
                run.warning = f"reached only {res.rps:.0f} of {s.rate:.0f} req/s"
        if scenario == "throughput":
            m["mb_per_s"] = res.mb_per_s
        if res.error_ratio > 0.01:
            run.error = f"{res.errors} of {res.requests} requests failed (socket error or non-2xx)"
    except (TargetFailed, loadgen.ToolError) as exc:
        run.error = str(exc)
    finally:
        target.stop()
    return run


def _progress(run: report.Run) -> str:
    m = run.metrics
    if run.error:
        return f"FAILED: {run.error}"
    warn = f" (warning: {run.warning})" if run.warning else ""
    parts = []
    if run.scenario == "latency":
        parts.append(f"p50 {m['p50_ms']:.2f} p90 {m['p90_ms']:.2f} p99 {m['p99_ms']:.2f} ms")
    elif run.scenario == "throughput":
        parts.append(f"{m['mb_per_s']:.0f} MB/s")
    else:
        parts.append(f"{m['rps']:.0f} req/s")
    if "cpu_us_per_req" in m:
        parts.append(f"{m['cpu_us_per_req']:.1f} µs CPU/req, {m['peak_rss'] / 1e6:.0f} MB RSS")
    return ", ".join(parts) + warn


def _version(argv: Sequence[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (p.stdout + p.stderr).strip().splitlines()[0] if (p.stdout + p.stderr).strip() else ""


def _meta(args: argparse.Namespace, s: Settings, targets: Sequence[str]) -> dict[str, Any]:
    commit = _version(["git", "-C", str(RESULTS.parent.parent), "rev-parse", "--short", "HEAD"])
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "envoy": _version([find_envoy() or "envoy", "--version"]),
        "nginx": _version(["nginx", "-v"]),
        "commit": commit,
        "targets": list(targets),
        "settings": {k: getattr(s, k) for k in s.__slots__},
        "args": vars(args),
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.proxy", description=__doc__)
    p.add_argument("--quick", action="store_true", help="1 repetition, 3 s runs (smoke run)")
    p.add_argument("--only", default="direct,envoy,pymesh", help="comma list of targets")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of scenarios")
    p.add_argument("--duration", type=float, help="seconds per measurement (wrk 10, hey 15)")
    p.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each run")
    p.add_argument("--connections", type=int, default=50, help="wrk connections (saturation)")
    p.add_argument("--rate", type=float, default=1000.0, help="fixed rate for latency, req/s")
    p.add_argument(
        "--rate-tool",
        choices=("hey", "pymesh"),
        default="hey",
        help="fixed-rate generator: hey, or pymesh's open loop (latency from the schedule)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument("--results", type=Path, default=RESULTS, help="directory for the JSON")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    targets = [t.strip() for t in args.only.split(",") if t.strip()]
    scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    bad = [t for t in targets if t not in report.TARGETS] + [
        x for x in scenarios if x not in SCENARIOS
    ]
    if bad:
        print(f"unknown target or scenario: {', '.join(bad)}", file=sys.stderr)
        return 2
    if missing := loadgen.missing_tools():
        print(
            f"missing tools: {' '.join(missing)} (apt-get install wrk hey nginx-light util-linux)",
            file=sys.stderr,
        )
        return 2
    pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    if not pin and not args.no_pin:
        print("warning: fewer than 2 CPUs, running unpinned", file=sys.stderr)
    s = Settings(
        reps=args.reps or (1 if args.quick else 3),
        wrk_seconds=args.duration or (3.0 if args.quick else 10.0),
        hey_seconds=args.duration or (3.0 if args.quick else 15.0),
        warmup=args.warmup,
        connections=args.connections,
        rate=args.rate,
        rate_connections=16,
        throughput_connections=16,
        load_cpus="0" if pin else None,
        proxy_cpus="1" if pin else None,
        rate_tool=args.rate_tool,
    )
    runs: list[report.Run] = []
    failures: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="pymesh-bench-"))
    try:
        nginx = Nginx(work / "nginx", host=HOST, cpus=s.load_cpus).start()
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"nginx backend did not start: {_short(str(exc))}", file=sys.stderr)
        return 2
    try:
        tg = {t: Target(t, nginx, work, s.proxy_cpus) for t in targets}
        for scenario in scenarios:
            for rep in range(1, s.reps + 1):
                for name in targets:
                    if name in failures:
                        continue
                    run = measure(scenario, tg[name], rep, s, work)
                    runs.append(run)
                    label = f"[{scenario} {rep}/{s.reps}] {report.TITLES[name]}"
                    print(f"{label}: {_progress(run)}", file=sys.stderr, flush=True)
                    if run.error and not run.metrics:  # could not even start: stop trying
                        failures[name] = run.error
    finally:
        nginx.stop()
    for r in runs:  # a target that worked sometimes still reports its failed runs
        if r.error and r.target not in failures:
            failures.setdefault(r.target, f"{r.scenario} run {r.rep}: {r.error}")
    report.add_paired_latency(runs)
    summary = report.summarize(runs)
    print()
    title = f"Proxy benchmark, {s.reps} interleaved repetition(s), median (min–max):"  # noqa: RUF001
    print(title + "\n")
    notes = [
        f"{report.TITLES[r.target]} {r.scenario} run {r.rep}: {r.warning}"
        for r in runs
        if r.warning
    ]
    print(report.markdown(summary, failures, targets, notes))
    out = args.results / f"proxy-{time.strftime('%Y%m%dT%H%M%S')}.json"
    report.write_json(
        out, meta=_meta(args, s, targets), runs=runs, summary=summary, failures=failures
    )
    print(f"\nJSON: {out}")
    if failures:
        print(f"logs kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
