"""Who is on each side of a reported request: the workload behind an address, read from the
node metadata Istio's sidecars carry (``NAMESPACE``, ``LABELS``, ``WORKLOAD_NAME``,
``SERVICE_ACCOUNT``, ``INSTANCE_IPS``), never guessed from a name.

Every proxy names itself (its Envoy ``node``) on its access-log stream; :class:`PeerRegistry`
indexes those nodes by their instance addresses, the way Istio's first Mixer resolved
``source.ip`` and ``destination.ip`` to pods. A reported request's peer is then the node at
its downstream address (for the destination's report: the caller's sidecar connects from its
pod's address) or at its upstream address (for the source's report: the chosen endpoint).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymesh.config.model.common import EMPTY_MAP, FrozenMap

__all__ = [
    "DOWNSTREAM_PEER",
    "UNKNOWN",
    "UNKNOWN_PEER",
    "UPSTREAM_PEER",
    "PeerInfo",
    "PeerRegistry",
    "node_addresses",
]

UNKNOWN = "unknown"
#: filter-state keys of the peers a proxy's metadata exchange learnt (Istio's names), which
#: its access logs may carry in ``filter_state_objects``
DOWNSTREAM_PEER = "wasm.downstream_peer"
UPSTREAM_PEER = "wasm.upstream_peer"


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One side of a call, with Istio's label values (``unknown`` when not known)."""

    workload: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = UNKNOWN
    service_account: str = ""
    cluster: str = UNKNOWN
    node_id: str = ""
    labels: FrozenMap[str, str] = EMPTY_MAP

    @property
    def known(self) -> bool:
        return self.workload != UNKNOWN

    def principal(self, trust_domain: str) -> str:
        """The SPIFFE id this workload's certificate carries."""
        if not self.service_account or self.namespace == UNKNOWN:
            return UNKNOWN
        return f"spiffe://{trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def to_metadata(self) -> dict[str, Any]:
        """The Istio node metadata :meth:`from_metadata` reads this peer back from (what a
        proxy logs of the peer it learned by metadata exchange)."""
        metadata: dict[str, Any] = {"LABELS": dict(self.labels)}
        for key, value in (
            ("NAMESPACE", self.namespace),
            ("WORKLOAD_NAME", self.workload),
            ("CLUSTER_ID", self.cluster),
        ):
            if value != UNKNOWN:
                metadata[key] = value
        if self.service_account:
            metadata["SERVICE_ACCOUNT"] = self.service_account
        return metadata

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], node_id: str = "") -> PeerInfo:
        """From Istio node metadata (``NAMESPACE``, ``LABELS``, ``WORKLOAD_NAME``, ...)."""
        labels = metadata.get("LABELS")
        labels = labels if isinstance(labels, Mapping) else {}
        namespace = _text(metadata.get("NAMESPACE")) or _namespace_from_id(node_id) or UNKNOWN
        workload = (
            _text(metadata.get("WORKLOAD_NAME"))
            or _owner_name(_text(metadata.get("OWNER")))
            or _text(metadata.get("NAME"))
            or UNKNOWN
        )
        app = _text(labels.get("app")) or UNKNOWN
        version = _text(labels.get("version")) or UNKNOWN
        # Istio's canonical service and revision fall back through these labels in this order.
        canonical_service = (
            _text(labels.get("service.istio.io/canonical-name"))
            or _text(labels.get("app.kubernetes.io/name"))
            or _text(labels.get("app"))
            or workload
        )
        canonical_revision = (
            _text(labels.get("service.istio.io/canonical-revision"))
            or _text(labels.get("app.kubernetes.io/version"))
            or _text(labels.get("version"))
            or "latest"
        )
        return cls(
            workload=workload,
            namespace=namespace,
            app=app,
            version=version,
            canonical_service=canonical_service,
            canonical_revision=canonical_revision,
            service_account=_text(metadata.get("SERVICE_ACCOUNT")),
            cluster=_text(metadata.get("CLUSTER_ID")) or UNKNOWN,
            node_id=node_id,
            labels=FrozenMap((str(k), str(v)) for k, v in labels.items()),
        )


UNKNOWN_PEER = PeerInfo()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _owner_name(owner: str) -> str:
    # kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1
    return owner.rpartition("/")[2] if owner.startswith("kubernetes://") else ""


def _namespace_from_id(node_id: str) -> str:
    # sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local
    parts = node_id.split("~")
    if len(parts) == 4 and "." in parts[2]:
        return parts[2].rpartition(".")[2]
    return ""


def node_addresses(node_id: str, metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """The node's instance addresses: ``INSTANCE_IPS`` (comma-separated), else the IP in its
    id (``sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local``)."""
    found: list[str] = []
    ips = _text(metadata.get("INSTANCE_IPS"))
    parts = node_id.split("~")
    candidates = [*ips.split(","), parts[1] if len(parts) == 4 else ""]
    for text in candidates:
        try:
            ip = str(ipaddress.ip_address(text.strip()))
        except ValueError:
            continue
        if ip not in found:
            found.append(ip)
    return tuple(found)


class PeerRegistry:
    """Nodes by address. A later node at the same address replaces the earlier one (a pod
    restarted, or its address reused); at most ``max_nodes`` are kept."""

    def __init__(self, max_nodes: int = 100_000) -> None:
        self.max_nodes = max_nodes
        self._by_ip: dict[str, PeerInfo] = {}

    def __len__(self) -> int:
        return len(self._by_ip)

    def add(self, peer: PeerInfo, addresses: tuple[str, ...]) -> bool:
        """Index ``peer``; True when that changed anything."""
        changed = False
        for ip in addresses:
            if self._by_ip.get(ip) != peer:
                if ip not in self._by_ip and len(self._by_ip) >= self.max_nodes:
                    del self._by_ip[next(iter(self._by_ip))]
                self._by_ip[ip] = peer
                changed = True
        return changed

    def get(self, address: str) -> PeerInfo | None:
        """The node at ``address`` (``ip`` or ``ip:port``)."""
        peer = self._by_ip.get(address)
        if peer is None and ":" in address:
            host = address.rpartition(":")[0].strip("[]")
            peer = self._by_ip.get(host)
        return peer
