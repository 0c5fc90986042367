"""Telemetry benchmark: what reporting costs a sidecar, and what mixer can take.

``python -m benchmarks.telemetry [--reps 3] [--seconds 10]``

1. **Sidecar cost**: Envoy 1.40 and ``pymesh proxy`` (each alone on CPU 1) routing to nginx
   (CPU 0) with ``wrk -c50``, with and without the ALS (``http_grpc`` to mixer) plus Zipkin
   tracing at 100%, interleaved; req/s and CPU µs per request.
2. **Mixer ingest**: ``pymesh mixer`` alone on CPU 1; 20 concurrent ALS streams from this
   process (CPU 0) send batches of Envoy-shaped HTTP entries as fast as mixer takes them;
   entries per CPU-second of mixer.
3. **Mixer memory**: RSS once its exposition holds 10,000 series (Prometheus' count: every
   histogram bucket is one), and at 10,000 label sets.

Prints a Markdown summary and writes JSON to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import struct_pb2

from benchmarks import loadgen, procstat
from benchmarks.nginx import Nginx
from tests.support.envoy import find_envoy, find_pymesh, make_proxy, router_bootstrap
from tests.support.procs import ManagedProcess, free_port, wait_for_http

__all__ = ["main"]

HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results"
METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"
SIDECARS = 20
BATCH = 50  # entries per ALS message (Envoy flushes 16 KiB buffers)


class Mixer:
    """``pymesh mixer`` on free ports, pinned to ``cpus``."""

    def __init__(self, workdir: Path, cpus: str | None) -> None:
        self.ports = {k: free_port(HOST) for k in ("grpc", "metrics", "zipkin", "dashboard")}
        argv = [find_pymesh() or "pymesh", "--log-level", "warning", "mixer"]
        for k, port in self.ports.items():
            argv += [f"--{k}-address", f"{HOST}:{port}"]
        self.proc = ManagedProcess(argv, log_path=workdir / "mixer.log", name="mixer", cpus=cpus)

    def __enter__(self) -> Mixer:
        self.proc.start()
        wait_for_http(HOST, self.ports["metrics"], "/ready", 30, proc=self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stop()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{HOST}:{self.ports['metrics']}/metrics") as r:
            return str(r.read().decode())


def _node(i: int) -> bytes:
    meta = struct_pb2.Struct()
    meta.update(
        {
            "NAMESPACE": "default",
            "WORKLOAD_NAME": f"app{i}-v1",
            "LABELS": {"app": f"app{i}", "version": "v1"},
            "INSTANCE_IPS": f"10.1.0.{i}",
        }
    )
    msg = als_pb2.StreamAccessLogsMessage()
    msg.identifier.node.id = f"sidecar~10.1.0.{i}~app{i}-1.default~default.svc.cluster.local"
    msg.identifier.node.metadata.CopyFrom(meta)
    msg.identifier.log_name = "outbound"
    return bytes(msg.SerializeToString())


def _batch(i: int, distinct: int = 0) -> bytes:
    """BATCH entries of sidecar ``i`` calling its neighbours (``distinct`` > 0: each entry
    to a service of its own, for series growth)."""
    msg = als_pb2.StreamAccessLogsMessage()
    for n in range(BATCH):
        e = msg.http_logs.log_entry.add()
        c = e.common_properties
        c.start_time.GetCurrentTime()
        c.duration.FromMilliseconds(3 + n % 40)
        # distinct: one sidecar calling itself (a node mixer knows), each call a new service
        peer = i if distinct else (i + 1 + n % 3) % SIDECARS
        service = f"svc{distinct + n}" if distinct else f"app{peer}"
        c.upstream_cluster = f"outbound|9080||{service}.default.svc.cluster.local"
        c.upstream_remote_address.socket_address.address = f"10.1.0.{peer}"
        c.upstream_remote_address.socket_address.port_value = 15006
        c.downstream_remote_address.socket_address.address = f"10.1.0.{i}"
        e.request.authority = f"{service}:9080"
        e.request.path = f"/items/{n}"
        e.request.request_method = 1
        e.request.request_headers_bytes = 200
        e.response.response_code.value = 503 if n % 50 == 0 else 200
        e.response.response_headers_bytes = 150
        e.response.response_body_bytes = 1024
    return bytes(msg.SerializeToString())


async def _stream(target: str, i: int, stop: asyncio.Event) -> None:
    """Write batches as fast as mixer's gRPC flow control lets them through, until ``stop``."""
    batch = _batch(i)
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.stream_unary(METHOD)()
        await call.write(_node(i))
        while not stop.is_set():
            await call.write(batch)
        call.cancel()


def _counter(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def ingest(workdir: Path, seconds: float, cpus: str | None) -> dict[str, float]:
    """Entries mixer took in ``seconds`` of saturation, and its CPU time meanwhile."""
    with Mixer(workdir, cpus) as mixer:
        pid = mixer.proc.pid
        target = f"{HOST}:{mixer.ports['grpc']}"

        async def run() -> tuple[float, float, float]:
            stop = asyncio.Event()
            tasks = [asyncio.create_task(_stream(target, i, stop)) for i in range(SIDECARS)]
            await asyncio.sleep(2.0)  # warm-up: every stream open and flowing
            metrics = await asyncio.to_thread(mixer.metrics)
            before, cpu0, t0 = (
                _counter(metrics, "mixer_als_entries_total"),
                procstat.cpu_seconds(pid),
                time.monotonic(),
            )
            await asyncio.sleep(seconds)
            metrics = await asyncio.to_thread(mixer.metrics)
            after, cpu, wall = (
                _counter(metrics, "mixer_als_entries_total"),
                procstat.cpu_seconds(pid) - cpu0,
                time.monotonic() - t0,
            )
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            return after - before, cpu, wall

        entries, cpu, wall = asyncio.run(run())
        return {
            "entries": entries,
            "entries_per_s": entries / wall,
            "entries_per_cpu_s": entries / cpu,
            "cpu_us_per_entry": cpu * 1e6 / entries,
            "mixer_cpu_share": cpu / wall,
        }


def memory(workdir: Path, cpus: str | None) -> dict[str, float]:
    found: dict[str, float] = {}
    with Mixer(workdir, cpus) as mixer:
        target = f"{HOST}:{mixer.ports['grpc']}"
        found["rss_idle_mb"] = _rss(mixer.proc.pid)

        async def grow(upto: int) -> None:
            async with grpc.aio.insecure_channel(target) as channel:

                async def gen() -> AsyncIterator[bytes]:
                    yield _node(0)
                    for start in range(0, upto, BATCH):
                        yield _batch(0, distinct=start + 1)

                await channel.stream_unary(METHOD)(gen(), timeout=120)

        # one label set is 67 Prometheus series: a counter, three histograms of 22
        for label_sets, key in ((150, "rss_10k_series_mb"), (10_000, "rss_10k_label_sets_mb")):
            asyncio.run(grow(label_sets))
            text = mixer.metrics()
            series = sum(1 for ln in text.splitlines() if ln.startswith("istio_"))
            found[key] = _rss(mixer.proc.pid)
            found[key.replace("rss", "series").replace("_mb", "")] = series
    return found


def _rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _envoy_bootstrap(listen: int, nginx: Nginx, mixer: Mixer | None) -> dict[str, Any]:
    boot = router_bootstrap((HOST, listen), [(HOST, nginx.port)])
    if mixer is None:
        return boot
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    cfg = hcm["typed_config"]
    cfg["access_log"] = [
        {
            "name": "envoy.access_loggers.http_grpc",
            "typed_config": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
                "common_config": {
                    "log_name": "outbound",
                    "transport_api_version": "V3",
                    "grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}},
                },
            },
        }
    ]
    cfg["tracing"] = {
        "random_sampling": {"value": 100},
        "provider": {
            "name": "envoy.tracers.zipkin",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                "collector_cluster": "zipkin",
                "collector_endpoint": "/api/v2/spans",
                "collector_endpoint_version": "HTTP_JSON",
                "trace_id_128bit": True,
                "shared_span_context": False,
            },
        },
    }
    clusters = boot["static_resources"]["clusters"]
    for name, port, h2 in (
        ("mixer", mixer.ports["grpc"], True),
        ("zipkin", mixer.ports["zipkin"], False),
    ):
        c: dict[str, Any] = {
            "name": name,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {"address": HOST, "port_value": port}
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
        if h2:
            c["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            }
        clusters.append(c)
    boot["node"] = {
        "id": "sidecar~127.0.0.1~bench-1.default~default.svc.cluster.local",
        "cluster": "bench.default",
        "metadata": {"NAMESPACE": "default", "WORKLOAD_NAME": "bench"},
    }
    return boot


def sidecar_cost(workdir: Path, reps: int, seconds: float, kind: str) -> dict[str, Any]:
    """``kind`` (``envoy`` or ``pymesh``) with reporting off and on, interleaved."""
    nginx = Nginx(workdir / "nginx", cpus="0").start()
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    try:
        with Mixer(workdir, "0") as mixer:
            for rep in range(reps):
                for mode in ("off", "on"):
                    listen = free_port(HOST)
                    boot = _envoy_bootstrap(listen, nginx, mixer if mode == "on" else None)
                    proxy = make_proxy(
                        kind, boot, workdir=workdir / f"{kind}-{mode}-{rep}", cpus="1"
                    )
                    proxy.start()
                    try:
                        url = f"http://{HOST}:{listen}/"
                        loadgen.run_wrk(url, connections=50, seconds=2, workdir=workdir)
                        cpu0 = procstat.cpu_seconds(proxy.pid)
                        res = loadgen.run_wrk(url, connections=50, seconds=seconds, workdir=workdir)
                        cpu = procstat.cpu_seconds(proxy.pid) - cpu0
                    finally:
                        proxy.stop()
                    runs[mode].append(
                        {
                            "rps": res.rps,
                            "cpu_us_per_req": cpu * 1e6 / res.requests,
                            "errors": res.errors,
                        }
                    )
                    print(
                        f"  {kind} reporting {mode}: {res.rps:,.0f} req/s, "
                        f"{cpu * 1e6 / res.requests:.1f} µs CPU/req",
                        file=sys.stderr,
                    )
    finally:
        nginx.stop()
    out: dict[str, Any] = {}
    for mode, rs in runs.items():
        for key in ("rps", "cpu_us_per_req"):
            values = [r[key] for r in rs]
            out[f"{mode}_{key}"] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.telemetry")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--skip-envoy", action="store_true")
    parser.add_argument("--skip-mixer", action="store_true", help="sidecar costs only")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as tmp:
        work = Path(tmp)
        if not args.skip_mixer:
            ingests = [ingest(work, args.seconds, "1") for _ in range(args.reps)]
            result["ingest"] = {k: statistics.median(r[k] for r in ingests) for k in ingests[0]}
            print(f"mixer ingest: {result['ingest']}", file=sys.stderr)
            result["memory"] = memory(work, "1")
            print(f"mixer memory: {result['memory']}", file=sys.stderr)
        if Nginx.binary() is not None:
            if not args.skip_envoy and find_envoy() is not None:
                result["sidecar"] = sidecar_cost(work, args.reps, args.seconds, "envoy")
            result["pymesh_sidecar"] = sidecar_cost(work, args.reps, args.seconds, "pymesh")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"telemetry-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
