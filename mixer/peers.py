"""Who is on each side of a reported request: the workload behind a proxy, read from the node
metadata Istio's sidecars carry, never guessed from an address.

Two sources, both Istio's: the ``node`` a proxy sends on its access-log stream (the reporter),
and the peer's metadata exchanged in ``x-envoy-peer-metadata`` (base64 of a serialised
``google.protobuf.Struct``) with ``x-envoy-peer-metadata-id`` (the peer's node id) — the
headers Istio's metadata exchange uses. Pilot makes each sidecar add its own metadata to the
requests it sends and the responses it returns, and strip the peer's before the app sees it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError

__all__ = [
    "PEER_METADATA",
    "PEER_METADATA_ID",
    "UNKNOWN",
    "UNKNOWN_PEER",
    "PeerInfo",
    "decode_peer_header",
    "encode_peer_metadata",
    "exchanged_metadata",
]

PEER_METADATA = "x-envoy-peer-metadata"
PEER_METADATA_ID = "x-envoy-peer-metadata-id"
UNKNOWN = "unknown"

#: the node metadata keys a sidecar exchanges with its peers (Istio's metadata exchange set)
_EXCHANGED = (
    "NAME",
    "NAMESPACE",
    "LABELS",
    "WORKLOAD_NAME",
    "OWNER",
    "SERVICE_ACCOUNT",
    "CLUSTER_ID",
    "MESH_ID",
    "INSTANCE_IPS",
)
#: a peer header longer than this is not Istio's metadata; it is counted and ignored
MAX_PEER_HEADER = 8192


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

    @property
    def known(self) -> bool:
        return self.workload != UNKNOWN

    def principal(self, trust_domain: str) -> str:
        """The SPIFFE id this workload's certificate carries."""
        if not self.service_account or self.namespace == UNKNOWN:
            return UNKNOWN
        return f"spiffe://{trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

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


def exchanged_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a node's metadata its peers get."""
    return {k: metadata[k] for k in _EXCHANGED if k in metadata}


def encode_peer_metadata(metadata: Mapping[str, Any]) -> str:
    """``x-envoy-peer-metadata`` for a node: base64 of its exchanged metadata as a Struct."""
    struct = struct_pb2.Struct()
    struct.update(exchanged_metadata(metadata))
    return base64.b64encode(struct.SerializeToString(deterministic=True)).decode("ascii")


@lru_cache(maxsize=4096)
def decode_peer_header(value: str, node_id: str = "") -> PeerInfo | None:
    """The peer of an ``x-envoy-peer-metadata`` header; None when it is not valid metadata.

    Cached: a mesh has few distinct peers, and each sends the same header on every request.
    """
    if not value or len(value) > MAX_PEER_HEADER:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
        struct = struct_pb2.Struct()
        struct.ParseFromString(raw)
    except (binascii.Error, ValueError, DecodeError):
        return None
    metadata = json_format.MessageToDict(struct)
    if not metadata:
        return None
    return PeerInfo.from_metadata(metadata, node_id)
