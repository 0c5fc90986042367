"""The latency a global rate limit check adds: Envoy and pymesh calling the same mixer.

``python -m benchmarks.ratelimit_latency [--seconds S] [--reps N] [--rate R]``

For each proxy (Envoy 1.40, pymesh) the same bootstrap runs twice: plain (router only) and
with ``envoy.filters.http.ratelimit`` asking mixer's Rate Limit Service about every request
(one descriptor, a limit never reached). ``hey`` sends a fixed 1000 req/s; the proxy is alone
on CPU 1, nginx, hey and the service on CPU 0; runs are interleaved and repeated; the table
gives p50/p99 and the p99 the check adds (with minus plain, per repetition).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import loadgen
from benchmarks.nginx import Nginx
from tests.support.envoy import EnvoyProcess, PymeshProxyProcess, router_bootstrap
from tests.support.procs import ManagedProcess, free_port, wait_for_port

__all__ = ["main"]

HOST = "127.0.0.1"
TYPE = "type.googleapis.com/"
CONFIG = """
domain: bench
descriptors:
  - key: generic_key
    rate_limit: {unit: hour, requests_per_unit: 4000000000}
"""


def _bootstrap(listen: tuple[str, int], nginx: Nginx, rls_port: int | None) -> dict[str, Any]:
    boot = router_bootstrap(listen, [(nginx.host, nginx.port)], admin=(HOST, free_port(HOST)))
    if rls_port is None:
        return boot
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    typed = hcm["typed_config"]
    typed["http_filters"].insert(0, {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": TYPE + "envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "bench",
            "timeout": "1s",
            "rate_limit_service": {
                "grpc_service": {"envoy_grpc": {"cluster_name": "rls"}},
                "transport_api_version": "V3",
            },
        },
    })  # fmt: skip
    typed["route_config"]["virtual_hosts"][0]["rate_limits"] = [
        {"actions": [{"generic_key": {"descriptor_value": "all"}}]}
    ]
    boot["static_resources"]["clusters"].append({
        "name": "rls",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "rls", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": HOST, "port_value": rls_port}}}}
        ]}]},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    })  # fmt: skip
    return boot


def _measure(
    kind: str, boot: dict[str, Any], workdir: Path, rate: float, seconds: float
) -> loadgen.LoadResult:
    cls = EnvoyProcess if kind == "envoy" else PymeshProxyProcess
    proxy = cls(boot, workdir=workdir, log_level="warning", cpus="1")
    proxy.start(timeout=20)
    try:
        host, port = proxy.listener()
        url = f"http://{host}:{port}/"
        loadgen.run_hey(url, rate=rate, connections=16, seconds=2, cpus="0")  # warm up
        return loadgen.run_hey(url, rate=rate, connections=16, seconds=seconds, cpus="0")
    finally:
        proxy.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ratelimit_latency")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0)
    args = parser.parse_args(argv)
    results: dict[tuple[str, str], list[loadgen.LoadResult]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        nginx = Nginx(workdir / "nginx", host=HOST, cpus="0")
        nginx.start()
        config = workdir / "ratelimit.yaml"
        config.write_text(CONFIG)
        rls_port = free_port(HOST)
        rls = ManagedProcess(
            [sys.executable, "-m", "mixer.ratelimit", "--host", HOST, "--grpc-port", str(rls_port),
             "--ratelimit-config", str(config), "--log-level", "warning"],
            log_path=workdir / "rls.log", name="rls", cpus="0",
        ).start()  # fmt: skip
        try:
            wait_for_port(HOST, rls_port, timeout=20, proc=rls)
            for rep in range(args.reps):
                for kind in ("envoy", "pymesh"):
                    for mode in ("plain", "ratelimit"):
                        listen = (HOST, free_port(HOST))
                        port = rls_port if mode == "ratelimit" else None
                        boot = _bootstrap(listen, nginx, port)
                        result = _measure(
                            kind, boot, workdir / f"{kind}-{mode}-{rep}", args.rate, args.seconds
                        )
                        results.setdefault((kind, mode), []).append(result)
                        print(f"{kind} {mode}: p50 {result.p50_ms:.2f} p99 {result.p99_ms:.2f} "
                              f"ms, {result.rps:.0f} req/s, {result.errors} errors",
                              file=sys.stderr)  # fmt: skip
        finally:
            rls.stop()
            nginx.stop()
    print("| proxy | p50 plain | p99 plain | p50 with check | p99 with check | added p99 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for kind in ("envoy", "pymesh"):
        plain, limited = results[(kind, "plain")], results[(kind, "ratelimit")]
        added = [b.p99_ms - a.p99_ms for a, b in zip(plain, limited, strict=True)]

        def med(values: list[float]) -> str:
            return f"{statistics.median(values):.2f} ms"

        print(
            f"| {kind} | {med([r.p50_ms for r in plain])} | {med([r.p99_ms for r in plain])} "
            f"| {med([r.p50_ms for r in limited])} | {med([r.p99_ms for r in limited])} "
            f"| {med(added)} (min {min(added):.2f}, max {max(added):.2f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
