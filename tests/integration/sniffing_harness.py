"""Two sidecars configured by pilot for ports that name no protocol, and the app behind them.

Pilot generates the client pod's and the server pod's resources for an iptables-mode mesh; the
listeners a redirected connection would meet are bound on the pods' addresses instead (the
client's ``0.0.0.0_<port>`` on ``<client ip>:<port>``, the server's ``virtualInbound`` on
``<server ip>:<target port>``, where its ``original_dst`` filter finds the port it needs), EDS
becomes STATIC with the very endpoints pilot computed, and SDS secrets are given inline. So a
connection takes exactly the chains pilot generated, through either proxy.

The app (:class:`SniffApp`) speaks whatever arrives: a request line gets an HTTP response
(JSON of what it saw), any other line is echoed back, and the banner port greets first as a
server-first protocol (MySQL, SMTP) does.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from pilot.generate import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.model import MeshConfig
from pymesh.config.loader import load_documents
from tests.pilot.generate._envoy import _inline_routes
from tests.pilot.generate._mesh import Mesh, workload_nodes
from tests.proxy.runtime.bootstrap import file_access_log
from tests.support.mesh_pki import MeshPki
from tests.support.procs import free_port

__all__ = [
    "ACCESS_LOG",
    "BANNER",
    "MANIFESTS",
    "Ports",
    "SniffApp",
    "build_sniffing_mesh",
    "sidecar_bootstrap",
]

BANNER = b"220 banner ready\r\n"
ACCESS_LOG = {"protocol": "%PROTOCOL%", "path": "%REQ(:PATH)%", "cluster": "%UPSTREAM_CLUSTER%"}
MANIFESTS = Template("""
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec:
  selector: {app: server}
  ports: [{name: echo, port: $echo, targetPort: $echo_app}]
---
apiVersion: v1
kind: Service
metadata: {name: banner, namespace: default}
spec:
  selector: {app: server}
  ports: [{name: banner, port: $banner, targetPort: $banner_app}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo]
  http:
  - match: [{headers: {x-teapot: {exact: "yes"}}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: echo}}]
  - route: [{destination: {host: echo}}]
    retries: {attempts: 2, retryOn: 5xx}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: server, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  template:
    metadata: {labels: {app: server}}
    spec:
      serviceAccountName: server
      containers:
      - {name: app, image: app, ports: [{containerPort: $echo_app}, {containerPort: $banner_app}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: default}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      serviceAccountName: client
      containers: [{name: client, image: curl}]
""")
_REQUEST_LINE = re.compile(rb"[A-Z]+ \S+ HTTP/1\.[01]\r?\n")


@dataclass(frozen=True)
class Ports:
    """The services' ports (``echo``, ``banner``) and their target ports, where the app
    listens on ``127.0.0.1`` (pilot's ``inbound|<port>||`` clusters) and the server sidecar
    on its pod's address; from this test worker's own block."""

    echo: int
    echo_app: int
    banner: int
    banner_app: int

    @classmethod
    def allocate(cls) -> Ports:
        return cls(*(free_port("127.0.0.1") for _ in range(4)))


class SniffApp:
    """The server pod's app: on ``echo_app`` HTTP or a line echo, on ``banner_app`` the same
    after a banner."""

    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        self.accepted = 0
        self.connected = asyncio.Event()
        self._failed_once: set[str] = set()
        self._servers: list[asyncio.Server] = []

    async def __aenter__(self) -> SniffApp:
        for port, banner in ((self.ports.echo_app, b""), (self.ports.banner_app, BANNER)):

            async def handle(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, banner: bytes = banner
            ) -> None:
                await self._serve(reader, writer, banner)

            self._servers.append(await asyncio.start_server(handle, "127.0.0.1", port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for server in self._servers:
            server.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, banner: bytes
    ) -> None:
        self.accepted += 1
        self.connected.set()
        try:
            if banner:
                writer.write(banner)
            while line := await reader.readline():
                if not _REQUEST_LINE.fullmatch(line):
                    writer.write(line)
                    await writer.drain()
                    continue
                headers: dict[str, str] = {}
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                writer.write(self._response(line.split()[1].decode(), headers))
                await writer.drain()
                break
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _response(self, path: str, headers: dict[str, str]) -> bytes:
        status = "200 OK"
        request_id = headers.get("x-request-id", "")
        # Fails the first attempt of each request: a retry (same x-request-id) succeeds.
        if path == "/flaky" and request_id not in self._failed_once:
            self._failed_once.add(request_id)
            status = "503 Service Unavailable"
        body = json.dumps({"path": path, "headers": headers}).encode()
        return (
            f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode() + body


def build_sniffing_mesh(subnet: str, ports: Ports, *, mtls: bool, detection: float) -> Mesh:
    """Pilot's view of the client and server pods (``<subnet>.2`` and ``.3``)."""
    text = MANIFESTS.substitute(vars(ports))
    resources = load_documents(text, "sniffing.yaml").resources
    nodes = workload_nodes(resources, subnet=subnet, mtls=mtls)
    return Mesh(resources, nodes, MeshConfig(protocol_detection_timeout=detection))


def _strip_sds(value: Any) -> None:
    """SDS secret references keep their names and lose their source: the bootstrap's static
    secrets answer them."""
    if isinstance(value, dict):
        value.pop("sds_config", None)
        for item in value.values():
            _strip_sds(item)
    elif isinstance(value, list):
        for item in value:
            _strip_sds(item)


def _bound(listener: dict[str, Any], ip: str, port: int) -> dict[str, Any]:
    copied = copy.deepcopy(listener)
    copied["name"] = f"{listener['name']}@{port}"
    copied["address"] = {"socket_address": {"address": ip, "port_value": port}}
    copied.pop("bind_to_port", None)
    return copied


def _listeners(mesh: Mesh, node: str, binds: dict[str, list[int]]) -> Iterator[dict[str, Any]]:
    ip = mesh.nodes[node].ip
    routes = {r["name"]: r for r in mesh.dicts(node, ROUTE_TYPE)}
    for listener in mesh.dicts(node, LISTENER_TYPE):
        for port in binds.get(listener["name"], []):
            bound, missing = _bound(listener, ip, port), []
            _inline_routes(bound, routes, missing)
            assert not missing, missing
            yield bound


def _log_http(listeners: list[dict[str, Any]], path: Path) -> None:
    """A file access log on every connection manager: what a user reads to see that a
    connection was served as HTTP (pymesh's TCP proxy logs to gRPC sinks only)."""
    for listener in listeners:
        for chain in listener["filter_chains"]:
            terminal = chain["filters"][-1]
            if terminal["name"] == "envoy.filters.network.http_connection_manager":
                terminal["typed_config"]["access_log"] = file_access_log(str(path), ACCESS_LOG)


def sidecar_bootstrap(
    mesh: Mesh,
    node: str,
    binds: dict[str, list[int]],
    pki: MeshPki | None,
    access_log: Path | None = None,
) -> dict[str, Any]:
    """A static bootstrap of pilot's resources for ``node``, with the listeners named in
    ``binds`` bound on the pod's address at the given ports (and their connection managers'
    access logs replaced by a file at ``access_log``)."""
    proxy = mesh.nodes[node]
    assignments = {c["cluster_name"]: c for c in mesh.dicts(node, ENDPOINT_TYPE)}
    clusters = []
    for cluster in mesh.dicts(node, CLUSTER_TYPE):
        if cluster.get("type") == "EDS":
            name = cluster["eds_cluster_config"].get("service_name", cluster["name"])
            del cluster["eds_cluster_config"]
            cluster["type"] = "STATIC"
            cluster["load_assignment"] = assignments.get(name, {"cluster_name": name})
        clusters.append(cluster)
    bootstrap: dict[str, Any] = {
        "node": {"id": proxy.id, "cluster": proxy.workload_name or "pymesh"},
        "static_resources": {
            "listeners": list(_listeners(mesh, node, binds)),
            "clusters": clusters,
        },
    }
    if pki is not None:
        cert = pki.workload(proxy.namespace, proxy.service_account)
        bootstrap["static_resources"]["secrets"] = [
            {
                "name": "default",
                "tls_certificate": {
                    "certificate_chain": {"inline_string": cert.chain},
                    "private_key": {"inline_string": cert.key.decode()},
                },
            },
            {
                "name": "ROOTCA",
                "validation_context": {"trusted_ca": {"inline_string": pki.root_pem}},
            },
        ]
    if access_log is not None:
        _log_http(bootstrap["static_resources"]["listeners"], access_log)
    _strip_sds(bootstrap)
    return bootstrap
