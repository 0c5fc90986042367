"""Istio's HTTP peer metadata exchange: each side of a call tells the other who it is in two
headers, ``x-envoy-peer-metadata-id`` (the node id) and ``x-envoy-peer-metadata`` (the
node's metadata as a serialized ``google.protobuf.Struct``, base64-encoded). The client's
sidecar adds them to the request and the server's to the response; each side removes the
other's before the application sees them. Sans-I/O.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import DecodeError

from mixer.peers import PeerInfo

__all__ = ["MAX_METADATA_BYTES", "PEER_ID", "PEER_METADATA", "decode_peer", "encode_node"]

PEER_METADATA = b"x-envoy-peer-metadata"
PEER_ID = b"x-envoy-peer-metadata-id"
#: A larger header is not a sidecar's metadata: it is dropped, and the peer stays unknown.
MAX_METADATA_BYTES = 16384

# The node metadata Istio's exchange carries (its ``NodeMetadata`` exchange keys).
_KEYS = (
    "NAME",
    "NAMESPACE",
    "LABELS",
    "WORKLOAD_NAME",
    "OWNER",
    "SERVICE_ACCOUNT",
    "CLUSTER_ID",
    "MESH_ID",
    "INSTANCE_IPS",
    "PLATFORM_METADATA",
    "APP_CONTAINERS",
)


def encode_node(node_id: str, metadata: Mapping[str, object]) -> tuple[bytes, bytes]:
    """(id header value, metadata header value) for this proxy's node."""
    struct = struct_pb2.Struct()
    struct.update({k: metadata[k] for k in _KEYS if k in metadata})
    return node_id.encode(), base64.b64encode(struct.SerializeToString(deterministic=True))


def decode_peer(value: bytes, node_id: bytes | None) -> PeerInfo | None:
    """The peer a metadata header names; None when it is not a valid one."""
    if len(value) > MAX_METADATA_BYTES:
        return None
    try:
        struct = struct_pb2.Struct.FromString(base64.b64decode(value, validate=True))
        node = node_id.decode() if node_id is not None else ""
    except (binascii.Error, DecodeError, UnicodeDecodeError, ValueError):
        return None
    metadata = json_format.MessageToDict(struct)
    peer = PeerInfo.from_metadata(metadata, node)
    return peer if peer.known else None
