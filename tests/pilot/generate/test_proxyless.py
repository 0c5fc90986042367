"""Resources for gRPC's proxyless xDS client (``GENERATOR: grpc``); the end-to-end check with
grpcio's own client is ``tests/integration/test_pilot_grpc.py``."""

from __future__ import annotations

from typing import Any

from pilot.generate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    proxyless,
)
from pilot.model import ProxyNode
from pilot.model.proxy import freeze
from tests.pilot.generate._mesh import as_dict, build_mesh

API = "api.shop.svc.cluster.local"


def client(namespace: str = "shop") -> ProxyNode:
    node = ProxyNode.build("127.0.31.150", "grpc-client-0", namespace)
    metadata = {**node.metadata, "GENERATOR": "grpc"}
    return ProxyNode(
        node.id,
        node.type,
        node.ip,
        node.pod_name,
        node.namespace,
        node.dns_domain,
        metadata=freeze(metadata),
    )


def resources(type_url: str) -> list[dict[str, Any]]:
    mesh = build_mesh("features.yaml")
    return [as_dict(m) for m in proxyless.generate(mesh.ctx, client(), type_url)]


def test_marked_by_the_generator_metadata() -> None:
    assert proxyless.is_proxyless(client())
    assert not proxyless.is_proxyless(ProxyNode.build("127.0.31.151", "x-0"))


def test_api_listeners_for_every_name_a_client_can_dial() -> None:
    listeners = {item["name"]: item for item in resources(LISTENER_TYPE)}
    for name in (f"{API}:9090", "api:9090", "api.shop:9090", "10.96.0.20:9090", "web:80"):
        assert name in listeners
    assert not any(n.startswith("db") for n in listeners)  # TCP: not for gRPC
    hcm = listeners["api:9090"]["api_listener"]["api_listener"]
    assert hcm["rds"]["route_config_name"] == "api:9090"
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]


def test_routes_use_max_stream_duration_and_only_fault_configs() -> None:
    routes = {item["name"]: item for item in resources(ROUTE_TYPE)}
    vhost = routes["api:8080"]["virtual_hosts"][0]
    canary = vhost["routes"][0]["route"]
    assert "timeout" not in canary
    assert canary["max_stream_duration"] == {"max_stream_duration": "10s"}
    for route in vhost["routes"]:
        assert set(route.get("typed_per_filter_config", {})) <= {"envoy.filters.http.fault"}


def test_clusters_and_endpoints_at_the_apps_own_ports() -> None:
    clusters = {c["name"] for c in resources(CLUSTER_TYPE)}
    assert f"outbound|9090|v2|{API}" in clusters
    assignments = {a["cluster_name"]: a for a in resources(ENDPOINT_TYPE)}
    assert set(assignments) == clusters
    group = assignments[f"outbound|8080||{API}"]["endpoints"][0]
    assert group["load_balancing_weight"] == 2
    ports = sorted(
        e["endpoint"]["address"]["socket_address"]["port_value"] for e in group["lb_endpoints"]
    )
    assert ports == [8081, 8082]
    assert resources(SECRET_TYPE) == []
