"""The Envoy v3 bootstrap of each pod's proxy: who it is, and where pilot is.

Everything else (listeners, routes, clusters, endpoints) comes from pilot over ADS. The node
identifies itself exactly as an Istio sidecar or gateway does, plus ``PYMESH_MODE: process``,
so pilot binds its listeners on the pod's own address and registers the pod as the endpoint
of the Services whose selectors match its labels.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import yaml

from pymesh.demo.images import Role
from pymesh.demo.layout import ADMIN_PORT
from pymesh.demo.pods import PodSpec

__all__ = [
    "AGENT_PORT",
    "HEALTH_PORT",
    "XDS_CLUSTER",
    "agent_listeners",
    "bootstrap",
    "node_id",
    "write_bootstrap",
]

XDS_CLUSTER = "xds-grpc"
SDS_CLUSTER = "sds-grpc"
TLS_MODE_LABEL = "security.istio.io/tlsMode"
HEALTH_CLUSTER = "agent"
HEALTH_PORT = 15021
AGENT_PORT = 15020
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
_DOMAIN = "cluster.local"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def node_id(pod: PodSpec, ip: str) -> str:
    kind = "router" if pod.role is Role.GATEWAY else "sidecar"
    return f"{kind}~{ip}~{pod.name}.{pod.namespace}~{pod.namespace}.svc.{_DOMAIN}"


def _metadata(pod: PodSpec, ip: str, process: bool) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "NAMESPACE": pod.namespace,
        "SERVICE_ACCOUNT": pod.service_account,
        "WORKLOAD_NAME": pod.owner.partition("/")[2] or pod.name,
        "INSTANCE_IPS": ip,
        "LABELS": dict(pod.labels),
        "CLUSTER_ID": "Kubernetes",
    }
    if process:
        metadata["PYMESH_MODE"] = "process"
        if app_ports := pod.app_ports(captured=False):
            # The sidecar binds the container port; the app listens where only it knows.
            metadata["PYMESH_APP_PORTS"] = json.dumps({str(k): v for k, v in app_ports.items()})
    if pod.container_port is not None:
        # Istio sends the pod's ports as a JSON string under this name.
        metadata["POD_PORTS"] = f'[{{"containerPort":{pod.container_port},"protocol":"TCP"}}]'
    return metadata


def _static_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    endpoint = {"address": {"socket_address": {"address": host, "port_value": port}}}
    return {
        "name": name,
        # A container finds pilot by its service name (PILOT_ADDRESS=pilot:15010).
        "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}],
        },
    }


def _route(path: str, target: str, *, post_only: bool = False) -> dict[str, Any]:
    match: dict[str, Any] = {"path": path}
    if post_only:
        match["headers"] = [{"name": ":method", "string_match": {"exact": "POST"}}]
    return {
        "match": match,
        "route": {"cluster": HEALTH_CLUSTER, "prefix_rewrite": target, "timeout": "2s"},
    }


def _agent_listener(
    name: str, address: tuple[str, int], routes: list[dict[str, Any]]
) -> dict[str, Any]:
    """A listener answering from the proxy's own admin interface, as Istio's agent ports do,
    written as plain Envoy configuration (a route to a cluster of the admin address)."""
    hcm = {
        "stat_prefix": name,
        "route_config": {
            "name": name,
            "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    host, port = address
    return {
        "name": name,
        "address": {"socket_address": {"address": host, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {"@type": _HCM, **hcm},
                    }
                ]
            }
        ],
    }


def agent_listeners(
    ip: str, health_port: int, agent: tuple[str, int] = ("127.0.0.1", AGENT_PORT)
) -> list[dict[str, Any]]:
    """Istio's two agent ports. ``<pod ip>:15021/healthz/ready`` is the kubelet's readiness
    probe: the admin's ``/ready``, 200 only once the proxy has its first configuration from
    pilot (and its listeners their certificates: they warm until SDS delivers). On
    ``127.0.0.1:15020`` the app finds ``POST /quitquitquit`` (a Job's last step stops its
    sidecar), ``/healthz/ready`` and the proxy's ``/stats/prometheus``."""
    ready = _route("/healthz/ready", "/ready")
    return [
        _agent_listener("health", (ip, health_port), [ready]),
        _agent_listener(
            "agent",
            agent,
            [
                _route("/quitquitquit", "/quitquitquit", post_only=True),
                ready,
                _route("/stats/prometheus", "/stats/prometheus"),
            ],
        ),
    ]


def bootstrap(
    pod: PodSpec,
    ip: str,
    pilot_xds: str,
    *,
    process: bool = True,
    admin_address: str | None = None,
    health_port: int | None = None,
    sds_socket: Path | None = None,
    stats_address: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """The bootstrap for ``pod`` at ``ip``, talking to pilot's ADS at ``pilot_xds``;
    ``process=False`` for a pod whose traffic iptables captures (netns mode): pilot then
    sends Istio's own listener shapes. The admin interface listens on ``admin_address``
    (default ``ip``; Istio's sidecars keep it on ``127.0.0.1``). ``health_port`` (15021) adds
    Istio's agent listeners (:func:`agent_listeners`); they are for pods with a network
    namespace of their own. ``stats_address`` (a pod without an agent) serves the proxy's
    ``/stats/prometheus`` there, where Istio's agent serves its merged metrics (15020)."""
    host, _, port = pilot_xds.rpartition(":")
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    xds = _static_cluster(XDS_CLUSTER, host, int(port))
    xds["typed_extension_protocol_options"] = {
        _HTTP_OPTIONS: {
            "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    clusters = [xds]
    listeners = []
    metadata = _metadata(pod, ip, process)
    if sds_socket is not None:
        # As Istio's injector: the sidecar speaks mesh mTLS (pilot's auto mTLS and inbound
        # chains read this label), with certificates from its agent's SDS socket.
        metadata["LABELS"] = {**metadata["LABELS"], TLS_MODE_LABEL: "istio"}
        clusters.append(_sds_cluster(sds_socket))
    admin = admin_address or ip
    if health_port is not None:
        local_admin = "127.0.0.1" if admin == "0.0.0.0" else admin
        clusters.append(_static_cluster(HEALTH_CLUSTER, local_admin, ADMIN_PORT))
        listeners.extend(agent_listeners(ip, health_port))
    elif stats_address is not None:
        local_admin = "127.0.0.1" if admin == "0.0.0.0" else admin
        clusters.append(_static_cluster(HEALTH_CLUSTER, local_admin, ADMIN_PORT))
        routes = [
            _route("/stats/prometheus", "/stats/prometheus"),
            _route("/healthz/ready", "/ready"),
        ]
        listeners.append(_agent_listener("agent", stats_address, routes))
    return {
        "node": {
            "id": node_id(pod, ip),
            "cluster": f"{pod.app_name}.{pod.namespace}",
            "metadata": metadata,
        },
        "admin": {"address": {"socket_address": {"address": admin, "port_value": ADMIN_PORT}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "lds_config": ads_source,
            "cds_config": ads_source,
        },
        "static_resources": {"clusters": clusters, "listeners": listeners},
    }


def _sds_cluster(socket: Path) -> dict[str, Any]:
    """Istio's ``sds-grpc``: the agent's Unix socket, spoken to in gRPC (HTTP/2)."""
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": str(socket)}}}}]}
            ],
        },
    }


def write_bootstrap(
    path: Path,
    pod: PodSpec,
    ip: str,
    pilot_xds: str,
    *,
    process: bool = True,
    sds_socket: Path | None = None,
    stats_address: tuple[str, int] | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    boot = bootstrap(
        pod, ip, pilot_xds, process=process, sds_socket=sds_socket, stats_address=stats_address
    )
    text = yaml.safe_dump(boot, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path
