"""Two-sidecar benchmark, the path Istio publishes: client → sidecar A → sidecar B → server,
plaintext and mesh mTLS, the Envoy pair beside the pymesh pair.

``python -m benchmarks.mesh_tls [--quick] [--reps N] [--duration S] [--only envoy,pymesh]``

Sidecar A's outbound cluster to B is shaped as pilot writes it for ``ISTIO_MUTUAL`` (workload
certificate, mesh root, B's SPIFFE ID, ALPN ``istio``); B's inbound listener as pilot writes a
PERMISSIVE one (TLS inspector, an mTLS chain that requires a client certificate, a plaintext
chain). Certificates come from pymesh's CA code, from files (SDS from the agent is what the
integration tests cover). The server is nginx answering 1 KiB on ``/1k``.

Per configuration, a fresh pair of proxies (both on CPU 1, nginx and the load on CPU 0):
the open-loop generator at a fixed 1000 req/s over 16 connections (latency from each
request's scheduled start), then ``wrk -t1 -c16`` for the pair's saturation. Reported: the
latency the pair adds over the direct path (same repetition), CPU per 1000 req/s of each
sidecar, peak RSS, saturation, and TLS handshakes on B (connection reuse: a handful, not one
per request). Repetitions are interleaved; medians with min and max.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import loadgen, procstat
from benchmarks.nginx import Nginx
from tests.support.envoy import PROXY_KINDS, ProxyProcess, make_proxy
from tests.support.mesh_pki import MeshPki
from tests.support.procs import free_port

__all__ = ["main"]

HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results"
_T = "type.googleapis.com/"
_TLS = _T + "envoy.extensions.transport_sockets.tls.v3."
_HCM = _T + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
B_ID = "spiffe://cluster.local/ns/default/sa/server"


def _sa(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _files(cert: Path, key: Path) -> dict[str, Any]:
    return {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}


def _hcm(stat_prefix: str, cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": _HCM,
            "stat_prefix": stat_prefix,
            "route_config": {
                "virtual_hosts": [
                    {
                        "name": "all",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                    }
                ]
            },
            "http_filters": [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {
                        "@type": _T + "envoy.extensions.filters.http.router.v3.Router"
                    },
                }
            ],
        },
    }


def _cluster(name: str, address: tuple[str, int], socket: dict[str, Any] | None) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _sa(*address)}}]}],
        },
    }
    if socket is not None:
        cluster["transport_socket"] = socket
    return cluster


def sidecar_a(
    port: int, admin: int, b: tuple[str, int], pki: dict[str, Path], mtls: bool
) -> dict[str, Any]:
    socket = None
    if mtls:
        common = {
            "tls_certificates": [_files(pki["client"], pki["client-key"])],
            "validation_context": {
                "trusted_ca": {"filename": str(pki["root"])},
                "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": B_ID}}],
            },
            "alpn_protocols": ["istio-peer-exchange", "istio"],
        }
        socket = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": _TLS + "UpstreamTlsContext",
                "common_tls_context": common,
                "sni": "outbound_.80_._.server.default.svc.cluster.local",
            },
        }
    return {
        "admin": {"address": _sa(HOST, admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "outbound",
                    "address": _sa(HOST, port),
                    "filter_chains": [{"filters": [_hcm("outbound", "b")]}],
                }
            ],
            "clusters": [_cluster("b", b, socket)],
        },
    }


def sidecar_b(
    port: int, admin: int, server: tuple[str, int], pki: dict[str, Path]
) -> dict[str, Any]:
    mtls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TLS + "DownstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [_files(pki["server"], pki["server-key"])],
                "validation_context": {"trusted_ca": {"filename": str(pki["root"])}},
                "alpn_protocols": ["h2", "http/1.1"],
            },
            "require_client_certificate": True,
        },
    }
    return {
        "admin": {"address": _sa(HOST, admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "inbound",
                    "address": _sa(HOST, port),
                    "listener_filters": [
                        {
                            "name": "envoy.filters.listener.tls_inspector",
                            "typed_config": {
                                "@type": _T + "envoy.extensions.filters.listener."
                                "tls_inspector.v3.TlsInspector"
                            },
                        }
                    ],
                    "filter_chains": [
                        {
                            "filter_chain_match": {"transport_protocol": "tls"},
                            "filters": [_hcm("inbound", "server")],
                            "transport_socket": mtls,
                        },
                        {
                            "filter_chain_match": {"transport_protocol": "raw_buffer"},
                            "filters": [_hcm("inbound", "server")],
                        },
                    ],
                }
            ],
            "clusters": [_cluster("server", server, None)],
        },
    }


def _pki(work: Path) -> dict[str, Path]:
    pki = MeshPki()
    paths = {"root": pki.write_root(work)}
    for name, sa in (("client", "client"), ("server", "server")):
        cert, key = pki.workload("default", sa, ttl=24 * 3600).write(work, name)
        paths[name], paths[f"{name}-key"] = cert, key
    return paths


def _stat(proxy: ProxyProcess, suffix: str) -> int:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        f"{proxy.admin_url}/stats", timeout=5
    ) as resp:
        text = resp.read().decode()
    return sum(
        int(value)
        for name, _, value in (line.partition(": ") for line in text.splitlines())
        if name.endswith(suffix) and value.strip().isdigit()
    )


def measure(
    kind: str, mtls: bool, server: tuple[str, int], pki: dict[str, Path], work: Path, args: Any
) -> dict[str, float]:
    b_port, a_port = free_port(HOST), free_port(HOST)
    tag = f"{kind}-{'mtls' if mtls else 'plain'}"
    b = make_proxy(kind, sidecar_b(b_port, free_port(HOST), server, pki), workdir=work / f"{tag}-b",
                   log_level="warning", cpus=args.proxy_cpus)  # fmt: skip
    a_boot = sidecar_a(a_port, free_port(HOST), (HOST, b_port), pki, mtls)
    a = make_proxy(kind, a_boot, workdir=work / f"{tag}-a", log_level="warning",
                   cpus=args.proxy_cpus)  # fmt: skip
    b.start(timeout=30.0)
    try:
        a.start(timeout=30.0)
        try:
            url = f"http://{HOST}:{a_port}/1k"
            loadgen.run_open_loop(url, rate=args.rate, connections=16, seconds=args.warmup,
                                  cpus=args.load_cpus)  # fmt: skip
            cpu_a0, cpu_b0 = procstat.cpu_seconds(a.pid), procstat.cpu_seconds(b.pid)
            started = time.monotonic()
            lat = loadgen.run_open_loop(url, rate=args.rate, connections=16,
                                        seconds=args.duration, cpus=args.load_cpus)  # fmt: skip
            elapsed = time.monotonic() - started
            cpu_a = procstat.cpu_seconds(a.pid) - cpu_a0
            cpu_b = procstat.cpu_seconds(b.pid) - cpu_b0
            sat = loadgen.run_wrk(url, connections=16, seconds=args.duration, workdir=work,
                                  cpus=args.load_cpus)  # fmt: skip
            handshakes = _stat(b, ".ssl.handshake")
            rss = procstat.peak_rss_bytes(a.pid) + procstat.peak_rss_bytes(b.pid)
        finally:
            a.stop()
    finally:
        b.stop()
    if lat.error_ratio > 0.01 or sat.error_ratio > 0.01:
        raise RuntimeError(f"{tag}: {lat.errors} / {sat.errors} requests failed")
    per_1000 = 1000.0 / max(lat.rps, 1.0)
    return {
        "p50_ms": lat.p50_ms,
        "p90_ms": lat.p90_ms,
        "p99_ms": lat.p99_ms,
        "rps": lat.rps,
        # CPU seconds per second of load, per 1000 req/s, as a share of one core.
        "cpu_a_pct": 100 * cpu_a / elapsed * per_1000,
        "cpu_b_pct": 100 * cpu_b / elapsed * per_1000,
        "rss_mb": rss / 1e6,
        "saturation_rps": sat.rps,
        "handshakes": handshakes,
    }


def direct(server_url: str, args: Any) -> dict[str, float]:
    lat = loadgen.run_open_loop(server_url, rate=args.rate, connections=16,
                                seconds=args.duration, cpus=args.load_cpus)  # fmt: skip
    return {"p50_ms": lat.p50_ms, "p90_ms": lat.p90_ms, "p99_ms": lat.p99_ms}


def _med(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def table(runs: dict[str, list[dict[str, float]]], base: list[dict[str, float]]) -> str:
    head = (
        "| pair | TLS | added p50 ms | added p90 ms | added p99 ms | CPU A %/1k rps "
        "| CPU B %/1k rps | RSS MB (pair) | saturation req/s | handshakes on B |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    lines = [head]
    for key, values in runs.items():
        kind, tls = key.split("-")

        def added(q: str, values: list[dict[str, float]] = values) -> list[float]:
            return [v[q] - b[q] for v, b in zip(values, base, strict=False)]

        lines.append(
            f"| {kind} | {tls} | {_med(added('p50_ms'), '.2f')} | {_med(added('p90_ms'), '.2f')}"
            f" | {_med(added('p99_ms'), '.2f')} | {_med([v['cpu_a_pct'] for v in values], '.1f')}"
            f" | {_med([v['cpu_b_pct'] for v in values], '.1f')}"
            f" | {_med([v['rss_mb'] for v in values], '.0f')}"
            f" | {_med([v['saturation_rps'] for v in values], ',.0f')}"
            f" | {_med([v['handshakes'] for v in values], '.0f')} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mesh_tls", description=__doc__)
    p.add_argument("--quick", action="store_true", help="1 repetition, 4 s runs")
    p.add_argument("--only", default=",".join(PROXY_KINDS), help="envoy,pymesh")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--results", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.duration = 1, 4.0
    args.load_cpus, args.proxy_cpus = (None, None) if args.no_pin else ("0", "1")
    kinds = [k for k in args.only.split(",") if k]
    missing = loadgen.missing_tools()
    if missing:
        print(f"missing tools: {', '.join(missing)}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="pymesh-bench-mesh-tls-"))
    pki = _pki(work)
    nginx = Nginx(work / "nginx", cpus=args.load_cpus).start()
    runs: dict[str, list[dict[str, float]]] = {
        f"{k}-{t}": [] for k in kinds for t in ("plain", "mtls")
    }
    base: list[dict[str, float]] = []
    try:
        for rep in range(args.reps):
            base.append(direct(nginx.url("/1k"), args))
            for key in runs:
                kind, tls = key.split("-")
                result = measure(kind, tls == "mtls", (nginx.host, nginx.port), pki, work, args)
                runs[key].append(result)
                shown = json.dumps({k: round(v, 3) for k, v in result.items()})
                print(f"rep {rep + 1} {key}: {shown}", file=sys.stderr)
    finally:
        nginx.stop()
    print(table(runs, base))
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"mesh_tls-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"direct": base, "runs": runs}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
