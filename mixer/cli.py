"""``pymesh mixer``: telemetry and policy — Envoy's Access Log Service and Rate Limit Service
(gRPC, one port), Istio's metrics, a Zipkin-compatible collector and query API, and the
service graph dashboard."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING

import structlog

from pymesh.errors import ConfigError, ControlPlaneError

if TYPE_CHECKING:
    from mixer.ratelimit.app import RateLimitOptions
    from mixer.server import MixerSettings

__all__ = ["add_arguments", "run"]

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grpc-address", default="127.0.0.1:9091", help="ALS/RLS gRPC address (host:port)"
    )
    parser.add_argument(
        "--metrics-address", default="127.0.0.1:15014", help="Prometheus /metrics (host:port)"
    )
    parser.add_argument(
        "--zipkin-address", default="127.0.0.1:9411", help="Zipkin API v2 (host:port)"
    )
    parser.add_argument(
        "--dashboard-address", default="127.0.0.1:20001", help="service graph page (host:port)"
    )
    parser.add_argument("--max-spans", type=int, default=200_000, help="spans kept at most")
    parser.add_argument(
        "--span-retention", type=float, default=3600.0, help="seconds a trace is kept"
    )
    parser.add_argument(
        "--max-log-entries", type=int, default=50_000, help="access-log entries kept at most"
    )
    parser.add_argument("--prometheus-url", default="", help="link the dashboard shows")
    parser.add_argument(
        "--config-dir", default="", help="the directory pilot serves (Telemetry resources)"
    )
    parser.add_argument("--mesh-config", help="Istio MeshConfig YAML (or the istio ConfigMap)")
    from mixer.ratelimit.app import add_arguments as add_ratelimit_arguments

    add_ratelimit_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from mixer.ratelimit.app import RateLimitOptions
    from mixer.server import MixerSettings
    from pilot.model import MeshConfig

    try:
        mesh = MeshConfig.load(args.mesh_config) if args.mesh_config else MeshConfig()
    except (ConfigError, OSError) as exc:
        print(f"error: mesh config: {exc}", file=sys.stderr)
        return 1
    ratelimit = RateLimitOptions.from_args(args)
    settings = MixerSettings(
        grpc_address=args.grpc_address,
        metrics_address=args.metrics_address,
        zipkin_address=args.zipkin_address,
        dashboard_address=args.dashboard_address,
        max_spans=args.max_spans,
        span_retention=args.span_retention,
        max_log_entries=args.max_log_entries,
        prometheus_url=args.prometheus_url,
        config_dir=args.config_dir,
        mesh=mesh,
    )
    import uvloop

    try:
        return int(uvloop.run(_serve(settings, ratelimit)))
    except (ConfigError, ControlPlaneError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _serve(settings: MixerSettings, ratelimit: RateLimitOptions) -> int:
    from mixer.ratelimit.app import RateLimitApp
    from mixer.ratelimit.stats import RateLimitCollector
    from mixer.server import build_mixer

    # Built inside the loop: its Redis pool and config watcher belong to this loop.
    rls = RateLimitApp(ratelimit)
    mixer = build_mixer(settings, extra_services=[rls])
    mixer.registry.register(RateLimitCollector(rls.stats))
    await mixer.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("mixer stopping")
    await mixer.stop()
    return 0
