"""Bookinfo as the benchmark runs it: pods from the project's manifests, laid out as
``pymesh demo`` lays them out in process mode, and the direct path without any proxy.

The pods are whatever the demo would start from ``bookinfo.yaml`` and
``istio-ingressgateway.yaml`` (:func:`pymesh.demo.pods.desired_pods`): productpage, details,
reviews v1-v3, ratings and the ingress gateway, each on its own loopback address. An app
behind a sidecar listens on its container port + 20000 and its sidecar holds the container
port (the demo's ``PYMESH_APP_PORTS``), so every hop crosses the caller's sidecar and the
callee's, as iptables makes it in Kubernetes. Each proxy gets the demo's own bootstrap
(:func:`pymesh.demo.bootstrap.bootstrap`): the node id and metadata Istio's injector gives,
ADS to pilot. The apps run once for the whole benchmark; the proxies of one data plane are
started for one repetition and stopped after it.

The direct path is a second set of the same apps without sidecars, each told its upstreams'
addresses (``DETAILS_HOSTNAME`` ...). Without a proxy there is no load balancing, so it runs
one reviews version, v3 (it calls ratings, as v2 does; v1 does not).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
import yaml

from benchmarks import procstat
from pymesh.demo.bootstrap import bootstrap, node_id
from pymesh.demo.images import Role
from pymesh.demo.manifests import manifests_dir
from pymesh.demo.pods import PodSpec, desired_pods, pod_env
from pymesh.samples.bookinfo.constants import PAGE_TITLE, SERVICE_PORT
from tests.integration.pilot_harness import PilotProcess
from tests.support.envoy import ProxyProcess, make_proxy
from tests.support.procs import ManagedProcess, async_wait_for_port

__all__ = [
    "GATEWAY_PORT",
    "MANIFESTS",
    "NET",
    "DirectApps",
    "MeshApps",
    "Plane",
    "bookinfo_pods",
    "pilot_config",
    "pod_addresses",
]

log = structlog.get_logger(__name__)

#: this benchmark's loopback addresses: 127.0.61.1-254
NET = "127.0.61"
PILOT_IP = f"{NET}.100"
#: the mesh's pods from .10, the direct apps from .40
MESH_FIRST, DIRECT_FIRST = 10, 40
#: the port of bookinfo-gateway.yaml's Gateway server
GATEWAY_PORT = 8080
#: what pilot is configured from, in this order (the demo's seed files without httpbin/sleep)
MANIFESTS = (
    "istio-ingressgateway.yaml",
    "bookinfo.yaml",
    "destination-rule-all.yaml",
    "bookinfo-gateway.yaml",
)
APP_LOG_LEVEL = "warning"  # the apps' per-request log lines would cost CPU on the measured path
DIRECT_REVIEWS = "v3"


def pilot_config(config_dir: Path) -> list[Path]:
    """Copies of the project's Bookinfo manifests in pilot's config directory."""
    config_dir.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(manifests_dir() / name, config_dir / name)) for name in MANIFESTS]


def bookinfo_pods() -> list[PodSpec]:
    """The pods the demo would run for :data:`MANIFESTS`: apps and the ingress gateway."""
    items: list[Mapping[str, Any]] = []
    for name in MANIFESTS:
        text = (manifests_dir() / name).read_text(encoding="utf-8")
        items.extend(d for d in yaml.safe_load_all(text) if isinstance(d, Mapping))
    pods = [p for p in desired_pods(items) if p.runs_app or p.role is Role.GATEWAY]
    # The gateway first: it is the entry point, and it has the first address.
    return sorted(pods, key=lambda p: (p.role is not Role.GATEWAY, p.name))


def pod_addresses(pods: Sequence[PodSpec], first: int = MESH_FIRST) -> dict[str, str]:
    return {p.name: f"{NET}.{first + i}" for i, p in enumerate(pods)}


def _app_process(argv: list[str], env: Mapping[str, str], log_dir: Path, name: str,
                 cpus: str | None) -> ManagedProcess:  # fmt: skip
    return ManagedProcess(
        [*argv, "--log-level", APP_LOG_LEVEL], log_path=log_dir / f"{name}.log", name=name,
        env={**env, "PYTHONUNBUFFERED": "1"}, cpus=cpus,
    ).start()  # fmt: skip


async def _wait_ports(procs: Sequence[tuple[ManagedProcess, str, int]]) -> None:
    await asyncio.gather(*(async_wait_for_port(h, p, 60.0, proc=m) for m, h, p in procs))


class MeshApps:
    """The app of every app pod, with ``HTTP_PROXY`` to its pod's sidecar (the demo's
    environment), listening where ``PYMESH_APP_PORTS`` tells pilot it does."""

    def __init__(self, pods: Sequence[PodSpec], ips: Mapping[str, str], log_dir: Path,
                 cpus: str | None) -> None:  # fmt: skip
        self.procs: list[ManagedProcess] = []
        waits = []
        for pod in pods:
            if not pod.runs_app or pod.container_port is None:
                continue
            ip = ips[pod.name]
            port = pod.app_ports(captured=False)[pod.container_port]
            env = pod_env(pod.name, pod.namespace, pod.service_account, ip, os.environ)
            proc = _app_process(pod.stand_in.argv(ip, port), env, log_dir, pod.name, cpus)
            self.procs.append(proc)
            waits.append((proc, ip, port))
        asyncio.run(_wait_ports(waits))

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


class DirectApps:
    """productpage → details, reviews v3 → ratings, no proxy anywhere."""

    def __init__(self, log_dir: Path, cpus: str | None, first: int = DIRECT_FIRST) -> None:
        names = ("productpage", "details", "reviews", "ratings")
        self.ips = {name: f"{NET}.{first + i}" for i, name in enumerate(names)}
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "no_proxy")}
        env.update({f"{n.upper()}_HOSTNAME": ip for n, ip in self.ips.items()})
        self.procs = []
        for name, ip in self.ips.items():
            argv = ["-m", f"pymesh.samples.bookinfo.{name}", "--host", ip]
            argv += ["--port", str(SERVICE_PORT)]
            if name == "reviews":
                argv += ["--version", DIRECT_REVIEWS]
            proc = _app_process([sys.executable, *argv], env, log_dir, f"direct-{name}", cpus)
            self.procs.append(proc)
        ports = zip(self.procs, self.ips.values(), strict=True)
        asyncio.run(_wait_ports([(proc, ip, SERVICE_PORT) for proc, ip in ports]))

    @property
    def url(self) -> str:
        return f"http://{self.ips['productpage']}:{SERVICE_PORT}/productpage"

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


class Plane:
    """One data plane's proxies (every pod's sidecar and the gateway), all configured by
    pilot; ``kind`` is ``envoy`` or ``pymesh``."""

    def __init__(self, kind: str, pods: Sequence[PodSpec], ips: Mapping[str, str],
                 pilot: PilotProcess, work: Path, cpus: str | None) -> None:  # fmt: skip
        self.kind = kind
        self.pilot = pilot
        self.nodes = [node_id(p, ips[p.name]) for p in pods]
        xds = f"{pilot.host}:{pilot.xds_port}"
        # One worker each, as Envoy runs here; pymesh's default is the same, said explicitly.
        extra = ["--concurrency", "1"] if kind == "pymesh" else []
        self.proxies: list[ProxyProcess] = []
        for p in pods:
            boot = bootstrap(p, ips[p.name], xds)
            proxy = make_proxy(kind, boot, workdir=work / p.name, name=p.name,
                               log_level="warning", cpus=cpus, extra_args=extra)  # fmt: skip
            self.proxies.append(proxy)
        gateway = next(p for p in pods if p.role is Role.GATEWAY)
        self.url = f"http://{ips[gateway.name]}:{GATEWAY_PORT}/productpage"

    def start(self, timeout: float = 90.0) -> Plane:
        async def up() -> None:
            await asyncio.gather(*(p.astart(timeout) for p in self.proxies))
            await self.pilot.wait_synced(self.nodes, timeout)

        try:
            asyncio.run(up())
            wait_for_page(self.url, timeout)
        except BaseException:
            self.stop()
            raise
        log.info("plane ready", plane=self.kind, proxies=len(self.proxies))
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.proxies]

    def cpu_seconds(self) -> float:
        return sum(procstat.cpu_seconds(pid) for pid in self.pids)

    def idle_cpu_share(self, seconds: float) -> float:
        """The proxies' CPU time over ``seconds`` without traffic, as a share of one core:
        what the mesh costs before any page (timers, stats, xDS), which CPU per page at a low
        rate mostly is."""
        before, t0 = self.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        return (self.cpu_seconds() - before) / (time.monotonic() - t0)

    def peak_rss_bytes(self) -> int:
        return sum(procstat.peak_rss_bytes(pid) for pid in self.pids)

    def stop(self) -> None:
        for proxy in reversed(self.proxies):
            proxy.stop()


def page_ok(body: bytes) -> bool:
    """The whole page: the title, and details and reviews both answered."""
    return PAGE_TITLE.encode() in body and b"unavailable" not in body


def wait_for_page(url: str, timeout: float) -> None:
    """Until ``url`` answers the full page a few times in a row (every reviews version has
    been reached through a route pilot has pushed)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    good, last = 0, "no answer"
    while good < 6:
        try:
            with opener.open(url, timeout=10) as resp:
                ok = resp.status == 200 and page_ok(resp.read())
                good, last = (good + 1, "") if ok else (0, f"{resp.status}, not the full page")
        except OSError as exc:
            good, last = 0, str(exc)
        if good == 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} never served the page: {last}")
            time.sleep(0.3)
