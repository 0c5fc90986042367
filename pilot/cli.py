"""``pymesh pilot``: serve a config directory to proxies over ADS, with the admin API."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import structlog

from auth.cli import add_ca_options, ca_options
from pymesh.errors import ConfigError, ControlPlaneError

__all__ = ["add_arguments", "run"]

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-dir", required=True, help="directory of Istio/Kubernetes YAML (any layout)"
    )
    parser.add_argument(
        "--xds-address", default="127.0.0.1:15010", help="ADS gRPC address (host:port)"
    )
    parser.add_argument(
        "--api-address", default="127.0.0.1:15080", help="admin API and /metrics (host:port)"
    )
    parser.add_argument("--mesh-config", help="Istio MeshConfig YAML (or the istio ConfigMap)")
    parser.add_argument(
        "--poll-interval", type=float, default=0.2, help="seconds between config dir scans"
    )
    parser.add_argument("--domain", default="cluster.local", help="the cluster DNS domain")
    parser.add_argument(
        "--registration-grace",
        type=float,
        default=30.0,
        help="seconds a proxy of the last run stays registered while it reconnects "
        "(0: forget them on restart)",
    )
    add_ca_options(parser, required=False)
    parser.add_argument(
        "--ca-address",
        help="serve the CA here (host:port; default: the xDS host, port 15012) when --ca-dir",
    )
    parser.add_argument(
        "--kubernetes",
        action="store_true",
        help="also mirror a Kubernetes cluster (in-cluster credentials, or --kubeconfig)",
    )
    parser.add_argument("--kubeconfig", help="with --kubernetes: a kubeconfig file")


def run(args: argparse.Namespace) -> int:
    from pilot.model import MeshConfig
    from pilot.server import PilotSettings

    try:
        mesh = MeshConfig.load(args.mesh_config) if args.mesh_config else MeshConfig()
    except (ConfigError, OSError) as exc:
        print(f"error: mesh config: {exc}", file=sys.stderr)
        return 1
    ca = ca_options(args, mesh.trust_domain) if args.ca_dir else None
    host = args.xds_address.rpartition(":")[0]
    settings = PilotSettings(
        config_dir=Path(args.config_dir),
        xds_address=args.xds_address,
        api_address=args.api_address,
        mesh=mesh,
        poll_interval=args.poll_interval,
        domain=args.domain,
        registration_grace=args.registration_grace,
        ca=ca,
        ca_address=args.ca_address or f"{host}:15012",
    )
    import uvloop

    try:
        kube = (args.kubeconfig or "") if args.kubernetes else None
        return int(uvloop.run(_serve(settings, kube)))
    except (ConfigError, ControlPlaneError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _serve(settings: object, kubeconfig: str | None) -> int:
    from pilot.server import Pilot, PilotSettings

    assert isinstance(settings, PilotSettings)
    pilot = Pilot(settings)
    try:
        await pilot.start()
    except BaseException:
        await pilot.stop()
        raise
    watches: list[asyncio.Task[None]] = []
    if kubeconfig is not None:
        from pilot.sources.kube import WATCHED, KubeMirror, watch

        mirror = KubeMirror(pilot)
        watches = [
            asyncio.create_task(watch(kind, mirror.handle, kubeconfig=kubeconfig or None))
            for kind in WATCHED
        ]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for task in watches:
        task.cancel()
    log.info("pilot stopping")
    await pilot.stop()
    return 0
