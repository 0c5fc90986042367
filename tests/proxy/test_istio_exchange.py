"""Istio's peer metadata headers: what one sidecar sends, the other reads back as the same
workload; anything that is not a sidecar's metadata leaves the peer unknown."""

from __future__ import annotations

import base64

import pytest

from proxy.istio.exchange import MAX_METADATA_BYTES, decode_peer, encode_node

NODE = "sidecar~127.0.53.12~reviews-v1-545db77b95-x1.default~default.svc.cluster.local"
METADATA = {
    "NAMESPACE": "default",
    "SERVICE_ACCOUNT": "bookinfo-reviews",
    "WORKLOAD_NAME": "reviews-v1",
    "LABELS": {"app": "reviews", "version": "v1"},
    "CLUSTER_ID": "Kubernetes",
    "PYMESH_MODE": "process",  # not part of the exchange
}


def test_a_peer_reads_back_the_workload_that_sent_its_metadata() -> None:
    node_id, value = encode_node(NODE, METADATA)
    peer = decode_peer(value, node_id)
    assert peer is not None
    assert (peer.workload, peer.namespace, peer.app, peer.version) == (
        "reviews-v1", "default", "reviews", "v1",
    )  # fmt: skip
    assert (peer.canonical_service, peer.canonical_revision) == ("reviews", "v1")
    assert peer.cluster == "Kubernetes" and peer.service_account == "bookinfo-reviews"
    assert peer.node_id == NODE
    assert "PYMESH_MODE" not in base64.b64decode(value).decode("latin-1")


@pytest.mark.parametrize(
    "value",
    [
        b"not base64!",
        base64.b64encode(b"\xff\xff\xff"),  # not a protobuf Struct
        base64.b64encode(b""),  # a Struct with no workload
        b"A" * (MAX_METADATA_BYTES + 4),
    ],
)
def test_what_is_not_a_sidecars_metadata_is_no_peer(value: bytes) -> None:
    assert decode_peer(value, b"sidecar~x") is None
