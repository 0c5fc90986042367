"""``pymesh agent``: Istio's pilot-agent role for an unmodified Envoy.

It proves the workload's identity to the CA (the service-account token, then its current
certificate), keeps the certificate fresh (half life, jitter, back-off when the CA is down)
and serves it to Envoy over SDS on a Unix socket, under Istio's names (``default``,
``ROOTCA``) and at Istio's path, so pilot's ``sds-grpc`` cluster finds it. The key is made in
memory and only ever leaves through that socket (mode 0600).

Options default to the environment Istio's injector gives pilot-agent (``CA_ADDR``,
``POD_NAMESPACE``, ``SERVICE_ACCOUNT``, ``TRUST_DOMAIN``). ``--status-address`` serves
``/ready`` (200 once there is a valid certificate), ``/stats`` and Istio's merged
``/stats/prometheus`` (the proxy's exposition and the app's, see :mod:`auth.metrics_merge`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from pymesh.config.durations import parse_duration
from pymesh.errors import ConfigError

__all__ = ["DEFAULT_SOCKET", "add_arguments", "run", "stats_text"]

log = structlog.get_logger(__name__)

DEFAULT_SOCKET = "./var/run/secrets/workload-spiffe-uds/socket"
_TOKEN = "./var/run/secrets/tokens/istio-token"
_ROOT = "./var/run/secrets/istio/root-cert.pem"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--ca-address", default=env("CA_ADDR", "127.0.0.1:15012"))
    parser.add_argument(
        "--ca-name", default="istiod.istio-system.svc", help="name in the CA's certificate"
    )
    parser.add_argument("--ca-root", default=_ROOT, help="the mesh root certificate (PEM)")
    parser.add_argument("--token-file", default=_TOKEN, help="service-account token (JWT)")
    parser.add_argument("--namespace", default=env("POD_NAMESPACE", "default"))
    parser.add_argument("--service-account", default=env("SERVICE_ACCOUNT", "default"))
    parser.add_argument("--trust-domain", default=env("TRUST_DOMAIN", "cluster.local"))
    parser.add_argument("--sds-socket", default=DEFAULT_SOCKET, help="Unix socket for Envoy")
    parser.add_argument("--cert-ttl", default="24h", help="requested certificate lifetime")
    parser.add_argument("--key-type", choices=["ec", "rsa"], default="ec", help="P-256 or RSA 2048")
    parser.add_argument(
        "--status-address", help="host:port for /ready, /stats and /stats/prometheus"
    )
    parser.add_argument(
        "--proxy-stats-url",
        default=env("PROXY_STATS_URL", "http://127.0.0.1:15000/stats/prometheus"),
        help="the proxy's Prometheus exposition, merged into /stats/prometheus",
    )
    parser.add_argument(
        "--prometheus-annotations",
        default=env("ISTIO_PROMETHEUS_ANNOTATIONS"),
        help="the app's prometheus.io/* annotations as JSON (Istio's injector sets the env)",
    )
    parser.add_argument(
        "--app-host",
        default=env("INSTANCE_IP", "127.0.0.1"),
        help="where the app's metrics port listens",
    )


def stats_text(identity: Any) -> str:
    """``/stats`` lines, Envoy-style names under ``pymesh_agent.``."""
    state = identity.state()
    return "".join(
        f"pymesh_agent.{name}: {value}\n"
        for name, value in (
            ("certificate_ready", int(state.ready)),
            ("certificate_rotations", state.rotations),
            ("certificate_renewal_failures", state.failures),
            ("certificate_expiry_seconds", max(0, round(state.expires_at - time.time()))),
        )
    )


def run(args: argparse.Namespace) -> int:
    from auth.rotation import WorkloadIdentity
    from auth.workload import CaClient, KeyType
    from pymesh.identity import SpiffeId

    try:
        identity_id = SpiffeId(args.trust_domain, args.namespace, args.service_account)
        root = Path(args.ca_root).read_text(encoding="ascii")
        ttl = parse_duration(args.cert_ttl)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    token_path = Path(args.token_file)

    def token() -> str | None:
        try:
            return token_path.read_text(encoding="ascii").strip() or None
        except OSError as exc:
            log.warning("token unreadable", path=str(token_path), error=exc.strerror)
            return None

    client = CaClient(args.ca_address, root, server_name=args.ca_name)
    key_type = KeyType(args.key_type)

    async def main() -> int:
        identity = WorkloadIdentity(
            client, identity_id, token, clock=time.time, rng=random.Random(), key_type=key_type,
            ttl=ttl,
        )  # fmt: skip
        if not args.status_address:
            return await _serve(identity, Path(args.sds_socket), None)
        merger, close = _merger(args)
        try:
            return await _serve(identity, Path(args.sds_socket), args.status_address, merger)
        finally:
            await close()

    import uvloop

    try:
        return int(uvloop.run(main()))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _merger(args: argparse.Namespace) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """The metrics merger and how to close it. One client session for every scrape: a
    connection per scrape would leave a TIME-WAIT socket per pod every scrape interval."""
    import aiohttp

    from auth.metrics_merge import MetricsMerger, app_metrics_url

    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0), trust_env=False)

    async def fetch(url: str) -> str:
        try:
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise ValueError(f"{url}: HTTP {resp.status}")
                return await resp.text()
        except aiohttp.ClientError as exc:
            raise OSError(str(exc)) from exc

    app_url = app_metrics_url(args.prometheus_annotations, args.app_host)
    return MetricsMerger(args.proxy_stats_url, app_url, fetch), session.close


async def _serve(
    identity: Any, socket_path: Path, status_address: str | None, merger: Any = None
) -> int:
    from aiohttp import web

    from auth.sds import SdsServer

    sds = SdsServer(identity)
    await sds.start(socket_path)  # ConfigError (a clear one-line error) when it cannot bind
    runner: web.AppRunner | None = None
    if status_address:

        async def ready(_: web.Request) -> web.Response:
            state = identity.state()
            if state.ready:
                return web.Response(text="LIVE\n")
            return web.Response(status=503, text=f"no certificate: {state.last_error}\n")

        async def stats(_: web.Request) -> web.Response:
            return web.Response(text=stats_text(identity))

        async def prometheus(_: web.Request) -> web.Response:
            text = await merger.exposition()
            return web.Response(text=text, content_type="text/plain", charset="utf-8")

        app = web.Application()
        if merger is not None:
            app.router.add_get("/stats/prometheus", prometheus)
        app.router.add_get("/ready", ready)
        app.router.add_get("/healthz/ready", ready)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, _, port = status_address.rpartition(":")
        await web.TCPSite(runner, host, int(port)).start()
    identity.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("agent stopping")
    await identity.stop()
    await sds.stop()
    if runner is not None:
        await runner.cleanup()
    return 0
