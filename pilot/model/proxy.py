"""The proxy a push is for, read from the Envoy ``Node`` it sends on its xDS stream.

Istio's conventions: the node id is ``<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>``
(type ``sidecar`` or ``router``); the metadata struct carries ``NAMESPACE``,
``SERVICE_ACCOUNT``, ``WORKLOAD_NAME``, ``INSTANCE_IPS`` (comma-separated), ``LABELS`` (a
map) and, for pymesh, ``PYMESH_MODE`` (``process`` when the apps reach the sidecar through
``HTTP_PROXY`` rather than iptables) and ``PYMESH_APP_PORTS`` (process mode: a JSON object
from each container port to the port the app really listens on, so that the pod's address on
the container port is the sidecar's, as iptables makes it in a pod).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from google.protobuf import json_format

from pymesh.config.model.common import EMPTY_MAP, FrozenMap

__all__ = ["PROCESS_MODE", "NodeType", "ProxyNode", "freeze"]

NodeType = Literal["sidecar", "router"]
PROCESS_MODE = "process"


def freeze(value: Any) -> Any:
    """Deep-freeze plain JSON data: dicts become FrozenMaps, lists tuples."""
    if isinstance(value, Mapping):
        return FrozenMap((str(k), freeze(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def _check_ip(text: str, what: str, node_id: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ValueError(f"node {node_id!r}: {what} {text!r} is not an IP address") from None


@dataclass(frozen=True, slots=True)
class ProxyNode:
    """One connected proxy. ``labels`` are its workload's pod labels."""

    id: str
    type: NodeType
    ip: str
    pod_name: str
    namespace: str
    dns_domain: str = ""
    service_account: str = "default"
    workload_name: str = ""
    labels: Mapping[str, str] = EMPTY_MAP
    instance_ips: tuple[str, ...] = ()
    metadata: Mapping[str, object] = field(default=EMPTY_MAP)
    locality: str = ""
    #: ``Node.user_agent_name``: ``pymesh`` for pymesh proxies, ``envoy`` for Envoy.
    user_agent: str = ""
    #: process mode: container port -> the port its app listens on (``PYMESH_APP_PORTS``)
    app_ports: Mapping[int, int] = EMPTY_MAP

    def app_port(self, port: int) -> int:
        """Where the sidecar reaches the app serving container port ``port``."""
        return self.app_ports.get(port, port)

    @property
    def is_router(self) -> bool:
        return self.type == "router"

    @property
    def process_mode(self) -> bool:
        """True when the apps of this pod reach the sidecar through ``HTTP_PROXY``."""
        return self.metadata.get("PYMESH_MODE") == PROCESS_MODE

    @property
    def addresses(self) -> tuple[str, ...]:
        return self.instance_ips or (self.ip,)

    @classmethod
    def build(
        cls,
        ip: str,
        pod_name: str,
        namespace: str = "default",
        *,
        type: NodeType = "sidecar",
        labels: Mapping[str, str] | None = None,
        service_account: str = "default",
        mode: str | None = None,
        domain: str = "cluster.local",
        app_ports: Mapping[int, int] | None = None,
    ) -> ProxyNode:
        """A node with Istio's id and metadata, as a sidecar would announce itself."""
        metadata: dict[str, object] = {
            "NAMESPACE": namespace,
            "SERVICE_ACCOUNT": service_account,
            "LABELS": dict(labels or {}),
            "INSTANCE_IPS": ip,
        }
        if mode is not None:
            metadata["PYMESH_MODE"] = mode
        if app_ports:
            metadata["PYMESH_APP_PORTS"] = json.dumps({str(k): v for k, v in app_ports.items()})
        return cls(
            id=f"{type}~{ip}~{pod_name}.{namespace}~{namespace}.svc.{domain}",
            type=type,
            ip=ip,
            pod_name=pod_name,
            namespace=namespace,
            dns_domain=f"{namespace}.svc.{domain}",
            service_account=service_account,
            workload_name=pod_name,
            labels=FrozenMap(labels or {}),
            instance_ips=(ip,),
            metadata=freeze(metadata),
            app_ports=FrozenMap(app_ports or {}),
        )

    @classmethod
    def from_node(cls, node: Any) -> ProxyNode:
        """Parse an ``envoy.config.core.v3.Node``; ValueError names what is wrong."""
        node_id: str = node.id
        parts = node_id.split("~")
        if len(parts) != 4:
            raise ValueError(
                f"node id {node_id!r} is not of the form "
                "'<sidecar|router>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>'"
            )
        kind, ip_text, pod_id, dns_domain = parts
        if kind not in ("sidecar", "router"):
            raise ValueError(f"node {node_id!r}: type {kind!r} must be 'sidecar' or 'router'")
        ip = _check_ip(ip_text, "IP", node_id)
        metadata: Mapping[str, Any] = (
            freeze(json_format.MessageToDict(node.metadata)) if node.HasField("metadata") else {}
        )
        namespace = _string(metadata, "NAMESPACE", node_id)
        pod_name, dot, id_namespace = pod_id.rpartition(".")
        if not dot:
            pod_name, id_namespace = pod_id, ""
        namespace = namespace or id_namespace or dns_domain.split(".")[0]
        if not pod_name or not namespace:
            raise ValueError(
                f"node {node_id!r}: cannot tell the pod name and namespace from {pod_id!r} "
                "(expected '<pod>.<namespace>' or NAMESPACE in the metadata)"
            )
        if id_namespace and id_namespace != namespace:
            pod_name = pod_id
        labels = metadata.get("LABELS", EMPTY_MAP)
        if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
            raise ValueError(f"node {node_id!r}: metadata LABELS must be a map of strings")
        raw_ips = _string(metadata, "INSTANCE_IPS", node_id)
        instance_ips = tuple(
            _check_ip(p, "INSTANCE_IPS entry", node_id) for p in raw_ips.split(",") if p.strip()
        )
        loc = node.locality
        locality = "/".join(p for p in (loc.region, loc.zone, loc.sub_zone) if p)
        return cls(
            id=node_id,
            type=cast(NodeType, kind),
            ip=ip,
            pod_name=pod_name,
            namespace=namespace,
            dns_domain=dns_domain,
            service_account=_string(metadata, "SERVICE_ACCOUNT", node_id) or "default",
            workload_name=_string(metadata, "WORKLOAD_NAME", node_id) or pod_name,
            labels=FrozenMap(labels),
            instance_ips=instance_ips or (ip,),
            metadata=metadata if isinstance(metadata, FrozenMap) else FrozenMap(metadata),
            user_agent=node.user_agent_name,
            locality=locality,
            app_ports=_app_ports(metadata, node_id),
        )


def _app_ports(metadata: Mapping[str, Any], node_id: str) -> FrozenMap[int, int]:
    text = _string(metadata, "PYMESH_APP_PORTS", node_id)
    if not text:
        return FrozenMap({})
    problem = f"node {node_id!r}: metadata PYMESH_APP_PORTS must be a JSON object of ports"
    try:
        raw = json.loads(text)
        ports = {int(k): int(v) for k, v in raw.items()} if isinstance(raw, dict) else None
    except (ValueError, TypeError):
        raise ValueError(f"{problem}, got {text!r}") from None
    if ports is None or not all(0 < p < 65536 for pair in ports.items() for p in pair):
        raise ValueError(f"{problem}, got {text!r}")
    return FrozenMap(ports)


def _string(metadata: Mapping[str, Any], key: str, node_id: str) -> str:
    value = metadata.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"node {node_id!r}: metadata {key} must be a string, got {value!r}")
    return value
