"""The Envoy v3 bootstrap of each pod's proxy: who it is, and where pilot is.

Everything else (listeners, routes, clusters, endpoints) comes from pilot over ADS. The node
identifies itself exactly as an Istio sidecar or gateway does, plus ``PYMESH_MODE: process``,
so pilot binds its listeners on the pod's own address and registers the pod as the endpoint
of the Services whose selectors match its labels.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import yaml

from pymesh.demo.images import Role
from pymesh.demo.layout import ADMIN_PORT
from pymesh.demo.pods import PodSpec

__all__ = ["XDS_CLUSTER", "bootstrap", "node_id", "write_bootstrap"]

XDS_CLUSTER = "xds-grpc"
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
    if pod.container_port is not None:
        # Istio sends the pod's ports as a JSON string under this name.
        metadata["POD_PORTS"] = f'[{{"containerPort":{pod.container_port},"protocol":"TCP"}}]'
    return metadata


def bootstrap(
    pod: PodSpec,
    ip: str,
    pilot_xds: str,
    *,
    process: bool = True,
    admin_address: str | None = None,
) -> dict[str, Any]:
    """The bootstrap for ``pod`` at ``ip``, talking to pilot's ADS at ``pilot_xds``;
    ``process=False`` for a pod whose traffic iptables captures (netns mode): pilot then
    sends Istio's own listener shapes. The admin interface listens on ``admin_address``
    (default ``ip``; Istio's sidecars keep it on ``127.0.0.1``)."""
    host, _, port = pilot_xds.rpartition(":")
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {
            "id": node_id(pod, ip),
            "cluster": f"{pod.app_name}.{pod.namespace}",
            "metadata": _metadata(pod, ip, process),
        },
        "admin": {
            "address": {
                "socket_address": {"address": admin_address or ip, "port_value": ADMIN_PORT}
            }
        },
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
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    # A container finds pilot by its service name (PILOT_ADDRESS=pilot:15010).
                    "type": "STATIC" if _is_ip(host) else "STRICT_DNS",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": host,
                                                    "port_value": int(port),
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
    }


def write_bootstrap(
    path: Path, pod: PodSpec, ip: str, pilot_xds: str, *, process: bool = True
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(bootstrap(pod, ip, pilot_xds, process=process), sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path
