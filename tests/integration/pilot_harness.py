"""Pieces the pilot integration tests share: a ``pymesh pilot`` process, the ``pymesh`` CLI
against it, Istio-style sidecar bootstraps, and "pods" registered by their ADS connection.

Every pod of a test gets its own loopback address (process mode: apps keep their real ports,
the sidecar listens on ``<pod ip>:15001`` for HTTP_PROXY traffic).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.pilot.xds.ads_client import AdsClient, istio_node
from tests.support.envoy import ProxyProcess, find_pymesh, make_proxy, sds_cluster, xds_cluster
from tests.support.httpclient import Response, request
from tests.support.procs import ManagedProcess, async_wait_for_http, free_port
from tests.support.upstream import Upstream

__all__ = [
    "BOOKINFO",
    "NETWORKING",
    "SAMPLES",
    "PilotProcess",
    "bookinfo_reviews",
    "register_pod",
    "reviews_route",
    "reviews_seen",
    "sidecar_bootstrap",
    "start_proxy",
    "via_sidecar",
]

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO.parent / "shared" / "istio-samples"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
NETWORKING = SAMPLES / "bookinfo" / "networking"
BOOKINFO = SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo.yaml"
_REVIEWS_PODS = {"v1": "reviews-v1-5c6f4d9c7-a1", "v2": "reviews-v2-7b5d8f6c4-b2"}


def pymesh_argv() -> list[str]:
    return [find_pymesh() or shutil.which("pymesh") or "pymesh"]


@dataclass
class CliResult:
    rc: int
    out: str
    err: str


class PilotProcess:
    """``pymesh pilot`` on ``host`` with free ports, its config dir and its token."""

    def __init__(
        self,
        host: str,
        config_dir: Path,
        log_dir: Path,
        *,
        mesh_config: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.config_dir = config_dir
        self.xds_port = free_port(host)
        self.api_port = free_port(host)
        self.proc = ManagedProcess(
            [
                *pymesh_argv(), "pilot", "--config-dir", str(config_dir),
                "--xds-address", f"{host}:{self.xds_port}",
                "--api-address", f"{host}:{self.api_port}",
                *(["--mesh-config", mesh_config] if mesh_config else []),
                *extra_args,
            ],
            log_path=log_dir / f"pilot-{host}.log",
            name="pilot",
            env={**os.environ, "PYMESH_TOKEN": ""},
            die_with_parent=False,  # see start_proxy
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def xds(self) -> tuple[str, int]:
        return self.host, self.xds_port

    async def start(self, timeout: float = 15.0) -> PilotProcess:
        self.proc.start()
        await async_wait_for_http(self.host, self.api_port, "/ready", timeout, proc=self.proc)
        return self

    def stop(self) -> None:
        self.proc.stop()

    @property
    def token(self) -> str:
        return (self.config_dir / ".pymesh-token").read_text().strip()

    def api(self, path: str) -> Any:
        req = urllib.request.Request(self.url + path)
        req.add_header("Authorization", f"Bearer {self.token}")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    async def aapi(self, path: str) -> Any:
        return await asyncio.to_thread(self.api, path)

    def cli_sync(self, *args: str, stdin: str | None = None) -> CliResult:
        env = {
            **os.environ,
            "PYMESH_PILOT": self.url,
            "PYMESH_CONFIG_DIR": str(self.config_dir),
        }
        env.pop("PYMESH_TOKEN", None)
        done = subprocess.run(
            [*pymesh_argv(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    async def cli(self, *args: str, stdin: str | None = None) -> CliResult:
        return await asyncio.to_thread(self.cli_sync, *args, stdin=stdin)

    async def wait_synced(self, proxy_ids: Sequence[str], timeout: float = 10.0) -> dict[str, Any]:
        """Until every listed proxy reports every type it watches SYNCED."""
        deadline = time.monotonic() + timeout
        while True:
            data = await self.aapi("/proxies")
            states = {p["id"]: p for p in data["proxies"]}
            if all(
                pid in states
                and all(
                    t["status"] in ("SYNCED", "NOT SENT") for t in states[pid]["types"].values()
                )
                and states[pid]["types"]["LDS"]["status"] == "SYNCED"
                for pid in proxy_ids
            ):
                return data
            if time.monotonic() > deadline:
                raise TimeoutError(f"proxies not synced: {json.dumps(data)[:2000]}")
            await asyncio.sleep(0.05)


def sidecar_bootstrap(
    pod: str,
    ip: str,
    pilot: tuple[str, int],
    *,
    namespace: str = "default",
    labels: Mapping[str, str] | None = None,
    service_account: str = "default",
    sds_socket: Path | None = None,
    admin_port: int | None = None,
) -> dict[str, Any]:
    """What Istio's injector gives a sidecar (node id and metadata, ADS to pilot over a
    static HTTP/2 cluster), in pymesh's process mode; with ``sds_socket``, the ``sds-grpc``
    cluster on its agent's socket, where mesh mTLS certificates come from."""
    ads_source = {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}
    admin = admin_port or free_port(ip)
    return {
        "node": {
            "id": f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local",
            "cluster": f"{(labels or {}).get('app', pod)}.{namespace}",
            "metadata": {
                "NAMESPACE": namespace,
                "SERVICE_ACCOUNT": service_account,
                "WORKLOAD_NAME": pod.rsplit("-", 2)[0],
                "INSTANCE_IPS": ip,
                "LABELS": dict(labels or {}),
                "PYMESH_MODE": "process",
            },
        },
        "admin": {"address": {"socket_address": {"address": ip, "port_value": admin}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ads_source,
            "lds_config": ads_source,
        },
        "static_resources": {
            "clusters": [
                xds_cluster(pilot[0], pilot[1]),
                *([sds_cluster(sds_socket)] if sds_socket is not None else []),
            ]
        },
    }


async def start_proxy(
    kind: str, bootstrap: Mapping[str, Any], workdir: Path, name: str, timeout: float = 30.0
) -> ProxyProcess:
    """Envoy or ``pymesh proxy``, started like :meth:`ProxyProcess.astart` but without a
    ``preexec_fn``: these tests run gRPC in the test process, and a fork that runs Python code
    in the child while gRPC's threads are live sometimes crashes the child (SIGSEGV) before
    it execs. Without ``preexec_fn`` the child is spawned without running fork handlers."""
    proxy = make_proxy(kind, bootstrap, workdir=workdir, name=name)
    proxy.proc = ManagedProcess(
        proxy.argv(), log_path=proxy.log_path, name=proxy.name, die_with_parent=False
    ).start()
    try:
        await async_wait_for_http(*proxy.admin, "/ready", timeout, proc=proxy.proc)
    except BaseException:
        proxy.proc.stop()
        raise
    return proxy


def node_id(pod: str, ip: str, namespace: str = "default") -> str:
    return f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"


async def register_pod(
    pilot: tuple[str, int], pod: str, ip: str, labels: Mapping[str, str]
) -> AdsClient:
    """A workload without a process-mode sidecar, known to pilot through its ADS stream
    (Istio's auto-registration): its endpoints are ``<ip>:<targetPort>``."""
    client = AdsClient(f"{pilot[0]}:{pilot[1]}", istio_node(pod, ip=ip, labels=labels))
    await client.start()
    await client.send(CLUSTER_TYPE)
    await client.recv(10.0)
    client.auto_ack()
    return client


async def via_sidecar(
    sidecar_ip: str,
    host: str,
    path: str = "/",
    headers: Sequence[tuple[str, str]] = (),
    timeout: float = 3.0,
) -> Response:
    """A request as an app sends it to its sidecar's HTTP_PROXY listener."""
    return await request(sidecar_ip, 15001, "GET", path, headers, host_header=host, timeout=timeout)


def upstream_of(resp: Response) -> str | None:
    """The name of the echo upstream that answered (None for a non-echo answer)."""
    try:
        return str(resp.json()["upstream"])
    except (ValueError, KeyError, TypeError):
        return None


def python() -> str:
    return sys.executable


@asynccontextmanager
async def bookinfo_reviews(
    tmp_path: Path,
    pilot_ip: str,
    upstreams: Mapping[str, str],
    registered: Sequence[str] = ("v1", "v2"),
) -> AsyncIterator[PilotProcess]:
    """A started pilot serving Bookinfo (``bookinfo.yaml`` and ``destination-rule-all.yaml``)
    with an echo upstream ``reviews-<version>`` on port 9080 of each of ``upstreams`` (version
    -> address), the ``registered`` ones known to pilot as reviews pods."""
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    shutil.copy(BOOKINFO, config_dir / "bookinfo.yaml")
    shutil.copy(NETWORKING / "destination-rule-all.yaml", config_dir)
    pilot = PilotProcess(pilot_ip, config_dir, tmp_path / "logs")
    async with AsyncExitStack() as stack:
        for version, ip in upstreams.items():
            await stack.enter_async_context(Upstream(ip, 9080, name=f"reviews-{version}"))
        stack.callback(pilot.stop)
        await pilot.start()
        for version in registered:
            labels = {"app": "reviews", "version": version}
            pod = await register_pod(pilot.xds, _REVIEWS_PODS[version], upstreams[version], labels)
            stack.push_async_callback(pod.close)
        yield pilot


async def reviews_route(sidecar_ip: str, user: str | None = None) -> str | None:
    """Which reviews upstream answers ``GET reviews:9080/reviews/0`` through a sidecar (as
    ``user``, in the ``end-user`` header), or ``HTTP <status>``."""
    headers = [("end-user", user)] if user else []
    resp = await via_sidecar(sidecar_ip, "reviews:9080", "/reviews/0", headers)
    return upstream_of(resp) if resp.status == 200 else f"HTTP {resp.status}"


async def reviews_seen(
    sidecar_ip: str, wanted: set[str], user: str | None = None, timeout: float = 5.0
) -> set[str | None]:
    """Requests until every wanted upstream answered (or ``timeout`` passed); what was seen."""
    seen: set[str | None] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not wanted <= seen:
        seen.add(await reviews_route(sidecar_ip, user))
    return seen
