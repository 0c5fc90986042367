from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from pilot.model import ProxyNode


def node(node_id: str, metadata: dict[str, Any] | None = None) -> Any:
    meta = struct_pb2.Struct()
    meta.update(metadata or {})
    proto = base_pb2.Node(id=node_id, cluster="reviews.default")
    if metadata is not None:
        proto.metadata.CopyFrom(meta)
    return proto


def test_istio_sidecar_node() -> None:
    proto = node(
        "sidecar~127.0.32.5~reviews-v2-abc.default~default.svc.cluster.local",
        {
            "NAMESPACE": "default",
            "SERVICE_ACCOUNT": "bookinfo-reviews",
            "WORKLOAD_NAME": "reviews-v2",
            "INSTANCE_IPS": "127.0.32.5,fd00::5",
            "LABELS": {"app": "reviews", "version": "v2"},
            "PYMESH_MODE": "process",
        },
    )
    proto.locality.region = "eu"
    proto.locality.zone = "eu-1"
    parsed = ProxyNode.from_node(proto)
    assert parsed.type == "sidecar" and not parsed.is_router
    assert (parsed.ip, parsed.pod_name, parsed.namespace) == (
        "127.0.32.5",
        "reviews-v2-abc",
        "default",
    )
    assert parsed.dns_domain == "default.svc.cluster.local"
    assert parsed.service_account == "bookinfo-reviews"
    assert parsed.workload_name == "reviews-v2"
    assert parsed.labels == {"app": "reviews", "version": "v2"}
    assert parsed.instance_ips == ("127.0.32.5", "fd00::5")
    assert parsed.process_mode
    assert parsed.locality == "eu/eu-1"
    hash(parsed)  # frozen all the way down


def test_router_without_metadata_takes_namespace_from_the_id() -> None:
    parsed = ProxyNode.from_node(
        node("router~127.0.32.9~istio-ingressgateway-1.istio-system~istio-system.svc.cluster.local")
    )
    assert parsed.is_router
    assert (parsed.pod_name, parsed.namespace) == ("istio-ingressgateway-1", "istio-system")
    assert parsed.service_account == "default"
    assert parsed.instance_ips == ("127.0.32.9",)
    assert not parsed.process_mode and parsed.labels == {}


@pytest.mark.parametrize(
    ("node_id", "metadata", "message"),
    [
        ("productpage", None, "is not of the form"),
        ("gateway~127.0.0.1~a.b~b.svc.cluster.local", None, "must be 'sidecar' or 'router'"),
        ("sidecar~not-an-ip~a.b~b.svc.cluster.local", None, "is not an IP address"),
        ("sidecar~127.0.0.1~a.b~b.svc.cluster.local", {"LABELS": "app=x"}, "LABELS"),
        ("sidecar~127.0.0.1~a.b~b.svc.cluster.local", {"INSTANCE_IPS": "x"}, "INSTANCE_IPS"),
        ("sidecar~127.0.0.1~a.b~b.svc.cluster.local", {"NAMESPACE": 3}, "NAMESPACE"),
    ],
)
def test_invalid_nodes_are_explained(
    node_id: str, metadata: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ProxyNode.from_node(node(node_id, metadata))


def test_build_round_trips_through_a_node() -> None:
    built = ProxyNode.build(
        "127.0.32.7",
        "details-v1-0",
        "shop",
        labels={"app": "details"},
        service_account="details",
        mode="process",
    )
    metadata = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in built.metadata.items()}
    proto = node(built.id, metadata)
    parsed = ProxyNode.from_node(proto)
    assert parsed == built
