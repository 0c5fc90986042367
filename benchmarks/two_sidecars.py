"""Istio's two-sidecar benchmark, on both data planes in one run, both configured by pilot.

``python -m benchmarks.two_sidecars [--quick] [--rates 100,500,1000] [--duration S]``

client (the open-loop generator, as an app through ``HTTP_PROXY``) → sidecar A (outbound
listener) → sidecar B (inbound listener) → server (nginx, 1 KiB on ``/1k``), 16 connections,
fixed rates (latency from each request's scheduled start, HDR histograms, no coordinated
omission) and saturation (``wrk -t1 -c16``). ``pymesh pilot`` configures both pairs: the
Envoy pair (``server-envoy``) and the pymesh pair (``server-pymesh``) are separate Kubernetes
Services in one config directory, each with its client and server pod in process mode.

Both sidecars of a pair on CPU 1, nginx, pilot and the load on CPU 0. A fresh pair per
repetition; the planes take turns (A B, B A, ...); the direct path (load → nginx) is measured
in every repetition, so "added" compares runs made minutes apart at most. Plaintext between
the sidecars (``benchmarks.mesh_tls`` measures mTLS on static bootstraps).

Output, in ``benchmarks/results/two_sidecars-<time>/``: ``report.md`` (the table, the
machine, the commit, the load average of every measurement), ``latency.png`` and the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import loadgen, procstat
from benchmarks.machine import commit, machine
from benchmarks.nginx import BODY_1K, Nginx
from benchmarks.rate_cli import planes_to_run, rate_parser, stamp_row
from benchmarks.rate_report import SATURATION, markdown, plot, write
from pymesh.load.report import latency_ms
from tests.integration.pilot_harness import PilotProcess, sidecar_bootstrap
from tests.support.envoy import ProxyProcess, make_proxy

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "results"
PILOT = "127.0.55.100"
# client pod, server pod (process mode: a loopback address each).
PODS = {"envoy": ("127.0.55.101", "127.0.55.102"), "pymesh": ("127.0.55.103", "127.0.55.104")}
PORT = 8080
CONNECTIONS = 16


def _service(kind: str, target_port: int) -> str:
    return (
        "apiVersion: v1\nkind: Service\n"
        f"metadata: {{name: server-{kind}, namespace: default, labels: {{app: server-{kind}}}}}\n"
        f"spec:\n  selector: {{app: server-{kind}}}\n"
        f"  ports: [{{name: http, port: {PORT}, targetPort: {target_port}}}]\n"
    )


class Pair:
    """Sidecar B in front of the server pod's nginx, sidecar A in the client pod."""

    def __init__(self, kind: str, pilot: PilotProcess, work: Path, args: Any) -> None:
        self.kind = kind
        self.client_ip, self.server_ip = PODS[kind]
        extra = ["--concurrency", str(args.concurrency)] if kind == "pymesh" else []

        def proxy(pod: str, ip: str, app: str) -> ProxyProcess:
            boot = sidecar_bootstrap(pod, ip, pilot.xds, labels={"app": app, "version": "v1"})
            return make_proxy(kind, boot, workdir=work / pod, name=pod, log_level="warning",
                              cpus=args.proxy_cpus, extra_args=extra)  # fmt: skip

        self.b = proxy(f"server-{kind}-0", self.server_ip, f"server-{kind}")
        self.a = proxy(f"client-{kind}-0", self.client_ip, f"client-{kind}")
        self.url = f"http://server-{kind}:{PORT}/1k"
        self.via = f"http://{self.client_ip}:15001"

    def start(self, timeout: float = 60.0) -> Pair:
        self.b.start(timeout)
        self.a.start(timeout)
        # Until pilot has pushed the route and B's endpoint to A: the first answer is a 200.
        deadline = time.monotonic() + timeout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": self.via}))
        while True:
            try:
                with opener.open(self.url, timeout=5) as resp:
                    if resp.status == 200 and resp.read() == BODY_1K.encode():
                        return self
            except OSError as exc:
                last = exc
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.kind} pair never routed {self.url}: {last}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()


def _percentiles(doc: dict[str, Any]) -> dict[str, float]:
    return {f"{p}_ms": latency_ms(doc, float(p[1:])) for p in ("p50", "p90", "p99", "p99.9")}


def fixed_rate(
    url: str,
    rate: float,
    args: Any,
    proxy: str | None = None,
    *,
    expect: str = "",
    connections: int = CONNECTIONS,
) -> dict[str, Any]:
    """The open-loop generator at ``rate`` (0: as fast as answers come) after a warm-up;
    ``expect``: a 200 without this text is a failed request (code -2)."""
    load = {"rate": rate, "connections": connections, "cpus": args.load_cpus, "proxy": proxy,
            "expect": expect}  # fmt: skip
    loadgen.open_loop_document(url, seconds=args.warmup, **load)
    doc = loadgen.open_loop_document(url, seconds=args.duration, **load)
    codes = {int(k): int(v) for k, v in doc["RetCodes"].items()}
    total = sum(codes.values())
    failed = sum(n for c, n in codes.items() if not 200 <= c < 400)
    out: dict[str, Any] = {
        **_percentiles(doc),
        "rps": total / (int(doc["ActualDuration"]) / 1e9),
        "requests": total,
        "errors": failed,
    }
    if failed > 0.01 * max(total, 1):
        out["error"] = f"{failed} of {total} requests failed: {codes}"
    return out


def measure_pair(pair: Pair, rep: int, args: Any) -> list[dict[str, Any]]:
    runs = []
    for rate in [*args.rates, SATURATION]:
        cpu0 = procstat.cpu_seconds(pair.a.pid), procstat.cpu_seconds(pair.b.pid)
        try:
            if rate == SATURATION:
                host = {"Host": f"server-{pair.kind}:{PORT}"}
                sat = loadgen.run_wrk(f"{pair.via}/1k", connections=CONNECTIONS,
                                      seconds=args.duration, workdir=args.work,
                                      cpus=args.load_cpus, headers=host)  # fmt: skip
                row: dict[str, Any] = {"rps": sat.rps, "requests": sat.requests}
                if sat.error_ratio > 0.01:
                    row["error"] = f"{sat.errors} of {sat.requests} requests failed"
            else:
                row = fixed_rate(pair.url, float(rate), args, proxy=pair.via)
        except (loadgen.ToolError, OSError) as exc:
            row = {"error": str(exc)}
        if row.get("requests"):
            cpu = (
                procstat.cpu_seconds(pair.a.pid) - cpu0[0],
                procstat.cpu_seconds(pair.b.pid) - cpu0[1],
            )
            # Warm-up requests are in the CPU time too (fixed rate): count them in.
            n = row["requests"] * (1 + (args.warmup / args.duration if rate != SATURATION else 0))
            row["cpu_a_us"], row["cpu_b_us"] = cpu[0] / n * 1e6, cpu[1] / n * 1e6
        runs.append(stamp_row(row, pair.kind, rate, rep))
    return runs


def _parser() -> argparse.ArgumentParser:
    p = rate_parser("python -m benchmarks.two_sidecars", __doc__, "100,500,1000", "req", RESULTS)
    p.add_argument("--concurrency", type=int, default=1, help="pymesh workers per sidecar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.reps, args.duration, args.warmup = 1, 3.0, 1.0
    planes = planes_to_run(args)
    if planes is None:
        return 1
    work = args.work = Path(tempfile.mkdtemp(prefix="pymesh-bench-two-sidecars-"))
    nginx = {k: Nginx(work / f"nginx-{k}", host=PODS[k][1], cpus=args.load_cpus) for k in planes}
    config = work / "mesh"
    config.mkdir()
    pilot = PilotProcess(PILOT, config, work / "logs")
    runs: list[dict[str, Any]] = []
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        for kind, server in nginx.items():
            server.start()
            (config / f"server-{kind}.yaml").write_text(_service(kind, server.port))
        asyncio.run(pilot.start())
        for rep in range(args.reps):
            direct = next(iter(nginx.values())).url("/1k")
            for rate in args.rates:
                runs.append(stamp_row(fixed_rate(direct, rate, args), "direct", rate, rep))
            for kind in planes if rep % 2 == 0 else planes[::-1]:
                pair = Pair(kind, pilot, work / f"rep{rep}", args).start()
                try:
                    runs.extend(measure_pair(pair, rep, args))
                finally:
                    pair.stop()
    finally:
        pilot.stop()
        for server in nginx.values():
            server.stop()
    shown = ["direct", *planes]
    info = machine()
    head = "\n".join([
        "# Two sidecars: client → sidecar → sidecar → nginx (1 KiB, 16 connections)",
        "",
        f"- started {started}; commit `{commit()}`",
        f"- machine: {info['host']}, {info['cpus']} CPUs ({info['cpu']}), Linux {info['kernel']}, "
        f"Python {info['python']}; shared and loaded: the load average of each row is its own",
        f"- {args.reps} repetition(s) of {args.duration:g} s after {args.warmup:g} s warm-up; "
        f"pymesh sidecars with --concurrency {args.concurrency}; Envoy with --concurrency 1",
        "- medians (min-max); latency from each request's scheduled start (open loop)",
    ])  # fmt: skip
    table = markdown(runs, shown)
    print(table)
    out = args.results / f"two_sidecars-{time.strftime('%Y%m%dT%H%M%S')}"
    settings = {k: str(v) for k, v in vars(args).items()}
    doc = {"machine": info, "commit": commit(), "settings": settings, "runs": runs}
    md = write(out, "report", head, table, doc)
    if plot(
        runs, shown, out / "latency.png", f"two sidecars, commit {commit()[:12]}, {info['host']}"
    ):
        print(f"plots: {out / 'latency.png'}", file=sys.stderr)
    else:
        print("matplotlib missing: no plot (pip install '.[bench]')", file=sys.stderr)
    print(f"report: {md}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return 1 if any(r.get("error") for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
