"""A small mesh with mesh mTLS for integration tests: ``pymesh pilot`` with its CA, and pods
whose sidecars get their identity from ``pymesh agent`` (Istio's pilot-agent role).

Pods live on the identity area's addresses (``127.0.6.0/24``): each has a sidecar (the real
Envoy, or pymesh) in process mode, an agent on a Unix socket of its own, and optionally an
app (an echo upstream on the pod's address).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auth.tokens import TokenIssuer, load_or_create_token_key
from tests.integration.pilot_harness import PilotProcess, sidecar_bootstrap, start_proxy
from tests.support.envoy import ProxyProcess
from tests.support.httpclient import Response, request
from tests.support.procs import ManagedProcess, async_wait_for_http, free_port

__all__ = ["TLS_MODE", "MeshPod", "MtlsMesh", "admin_stats"]

TLS_MODE = {"security.istio.io/tlsMode": "istio"}


def admin_stats(proxy: ProxyProcess, prefix: str) -> dict[str, int]:
    """Counters and gauges of the proxy's ``/stats`` whose names start with ``prefix``."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{proxy.admin_url}/stats?filter={prefix}", timeout=5) as resp:
        text = resp.read().decode()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if name.startswith(prefix) and value.strip().isdigit():
            found[name] = int(value)
    return found


@dataclass
class MeshPod:
    name: str
    namespace: str
    ip: str
    service_account: str
    proxy: ProxyProcess | None = None
    agent: ManagedProcess | None = None

    @property
    def node_id(self) -> str:
        return f"sidecar~{self.ip}~{self.name}.{self.namespace}~{self.namespace}.svc.cluster.local"

    async def call(
        self, host: str, path: str = "/", headers: tuple[tuple[str, str], ...] = ()
    ) -> Response:
        """A request as the pod's app sends it to its sidecar (``HTTP_PROXY``)."""
        return await request(
            self.ip, 15001, "GET", path, list(headers), host_header=host, timeout=5.0
        )


class MtlsMesh:
    """Pilot with its CA on ``pilot_ip``, and pods added with :meth:`add_pod`."""

    def __init__(
        self, pilot_ip: str, config_dir: Path, workdir: Path, *, mesh_config: str | None = None
    ) -> None:
        self.workdir = workdir
        # Unix socket paths are short (108 bytes): not under pytest's deep temporary dirs.
        self.sockets = Path(tempfile.mkdtemp(prefix="pm-"))
        self.ca_dir = workdir / "ca"
        self.ca_port = free_port(pilot_ip)
        self.pilot = PilotProcess(
            pilot_ip,
            config_dir,
            workdir / "logs",
            mesh_config=mesh_config,
            extra_args=["--ca-dir", str(self.ca_dir), "--ca-address", f"{pilot_ip}:{self.ca_port}"],
        )
        self.pods: list[MeshPod] = []

    @property
    def ca_address(self) -> str:
        return f"{self.pilot.host}:{self.ca_port}"

    async def start(self) -> None:
        await self.pilot.start()

    def token(self, namespace: str, service_account: str) -> str:
        """What ``pymesh ca --ca-dir DIR token -n NS SA`` prints (a projected token)."""
        issuer = TokenIssuer(load_or_create_token_key(self.ca_dir), time.time)
        return issuer.issue(namespace, service_account)

    async def start_agent(self, pod: MeshPod, *, cert_ttl: str = "24h") -> Path:
        """``pymesh agent`` for the pod; returns its SDS socket once it has a certificate."""
        home = self.workdir / pod.name
        home.mkdir(parents=True, exist_ok=True)
        (home / "token").write_text(self.token(pod.namespace, pod.service_account))
        socket_path = self.sockets / f"{pod.name}.sock"
        status = free_port(pod.ip)
        pod.agent = ManagedProcess(
            [
                sys.executable, "-m", "pymesh.cli.main", "agent",
                "--ca-address", self.ca_address, "--ca-root", str(self.ca_dir / "root-cert.pem"),
                "--token-file", str(home / "token"), "--namespace", pod.namespace,
                "--service-account", pod.service_account, "--sds-socket", str(socket_path),
                "--cert-ttl", cert_ttl, "--status-address", f"{pod.ip}:{status}",
            ],
            log_path=home / "agent.log", name=f"agent-{pod.name}", die_with_parent=False,
        ).start()  # fmt: skip
        await async_wait_for_http(pod.ip, status, "/ready", 20, proc=pod.agent)
        return socket_path

    async def add_pod(
        self,
        kind: str,
        name: str,
        namespace: str,
        ip: str,
        labels: dict[str, str],
        service_account: str,
        *,
        mtls: bool = True,
        cert_ttl: str = "24h",
    ) -> MeshPod:
        """A pod with a sidecar of ``kind`` (``envoy``, ``pymesh``); ``mtls`` gives it an
        agent and the injector's ``tlsMode: istio`` label."""
        pod = MeshPod(name, namespace, ip, service_account)
        socket_path = await self.start_agent(pod, cert_ttl=cert_ttl) if mtls else None
        bootstrap = sidecar_bootstrap(
            name, ip, self.pilot.xds, namespace=namespace,
            labels={**labels, **(TLS_MODE if mtls else {})},
            service_account=service_account, sds_socket=socket_path,
            admin_port=15000,  # Istio's, where `pymesh proxy-config` finds it
        )  # fmt: skip
        pod.proxy = await start_proxy(kind, bootstrap, self.workdir / name, f"{kind}-{name}")
        self.pods.append(pod)
        return pod

    async def wait_synced(self, timeout: float = 15.0) -> None:
        await self.pilot.wait_synced([p.node_id for p in self.pods if p.proxy], timeout)

    async def apply(self, *files: Path) -> None:
        for file in files:
            result = await self.pilot.cli("apply", "-f", str(file))
            assert result.rc == 0, result.err
        await asyncio.sleep(0)  # the push follows; callers wait for the effect they expect

    async def stop(self) -> None:
        for pod in reversed(self.pods):
            if pod.proxy is not None:
                await pod.proxy.astop()
            if pod.agent is not None:
                pod.agent.stop()
        self.pilot.stop()
        shutil.rmtree(self.sockets, ignore_errors=True)


def echo(resp: Response) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(resp.body)
    return data
