from __future__ import annotations

from typing import Any

from pilot.generate import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.generate.policy import MAX_U32
from pilot.model import MeshConfig
from pymesh.config.loader import load_documents
from pymesh.config.snapshot import ConfigSnapshot
from tests.pilot.generate._mesh import (
    BOOKINFO,
    Mesh,
    build_mesh,
    gateway_node,
    load,
    workload_nodes,
)

SVC = ".default.svc.cluster.local"
API = ".shop.svc.cluster.local"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def thresholds(cluster: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = cluster["circuit_breakers"]["thresholds"][0]
    return found


def test_istio_names_and_eds_for_bookinfo() -> None:
    mesh = build_mesh(BOOKINFO, "bookinfo/networking/destination-rule-all.yaml")
    clusters = mesh.by_name("productpage-v1", CLUSTER_TYPE)
    assert [n for n in clusters if "reviews" in n] == [
        f"outbound|9080||reviews{SVC}",
        f"outbound|9080|v1|reviews{SVC}",
        f"outbound|9080|v2|reviews{SVC}",
        f"outbound|9080|v3|reviews{SVC}",
    ]
    assert {
        "inbound|9080||",
        "BlackHoleCluster",
        "PassthroughCluster",
        "InboundPassthroughCluster",
    } <= set(clusters)
    v2 = clusters[f"outbound|9080|v2|reviews{SVC}"]
    assert v2["type"] == "EDS"
    assert v2["eds_cluster_config"] == {
        "eds_config": {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"},
        "service_name": f"outbound|9080|v2|reviews{SVC}",
    }
    assert v2["lb_policy"] == "LEAST_REQUEST" and v2["connect_timeout"] == "10s"
    assert thresholds(v2) == {
        "max_connections": MAX_U32,
        "max_pending_requests": MAX_U32,
        "max_requests": MAX_U32,
        "max_retries": MAX_U32,
        "track_remaining": True,
    }
    istio = v2["metadata"]["filter_metadata"]["istio"]
    assert istio["subset"] == "v2" and istio["default_original_port"] == 9080
    assert istio["config"] == (
        "/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews"
    )
    inbound = clusters["inbound|9080||"]
    assert inbound["type"] == "STATIC"
    address = inbound["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9080}


def test_process_mode_inbound_cluster_targets_the_pods_own_address() -> None:
    mesh = build_mesh("features.yaml", mode="process")
    clusters = mesh.by_name("api-v2", CLUSTER_TYPE)
    assert "InboundPassthroughCluster" not in clusters
    endpoint = clusters["inbound|8082||"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": mesh.nodes["api-v2"].ip,
        "port_value": 8082,
    }
    passthrough = clusters["PassthroughCluster"]
    assert passthrough["original_dst_lb_config"] == {
        "use_http_header": True,
        "http_header_name": "host",
    }


def test_circuit_breaking_sample() -> None:
    mesh = build_mesh(
        "sleep/sleep.yaml",
        "httpbin/httpbin.yaml",
        "docs-extracted/traffic-management/circuit-breaking/destination-rule-httpbin-cb.yaml",
    )
    cluster = mesh.by_name("sleep", CLUSTER_TYPE)[f"outbound|8000||httpbin{SVC}"]
    assert thresholds(cluster) == {
        "max_connections": 1,
        "max_pending_requests": 1,
        "max_requests": MAX_U32,
        "max_retries": MAX_U32,
        "track_remaining": True,
    }
    options = cluster["typed_extension_protocol_options"][HTTP_OPTIONS]
    assert options["common_http_protocol_options"] == {"max_requests_per_connection": 1}
    assert options["explicit_http_config"] == {"http_protocol_options": {}}
    assert cluster["outlier_detection"] == {
        "consecutive_5xx": 1,
        "enforcing_consecutive_5xx": 100,
        "interval": "1s",
        "base_ejection_time": "180s",
        "max_ejection_percent": 100,
        "enforcing_success_rate": 0,
    }
    assert cluster["common_lb_config"] == {"healthy_panic_threshold": {}}


def test_destination_rule_policies_merge_into_subsets() -> None:
    clusters = build_mesh("features.yaml").by_name("web-v1", CLUSTER_TYPE)
    top = clusters[f"outbound|8080||api{API}"]
    assert top["lb_policy"] == "RING_HASH"
    assert top["ring_hash_lb_config"] == {"minimum_ring_size": "1024"}
    assert top["connect_timeout"] == "0.250s"
    assert thresholds(top) == {
        "max_connections": 10,
        "max_pending_requests": 5,
        "max_requests": 50,
        "max_retries": 3,
        "track_remaining": True,
    }
    common = top["typed_extension_protocol_options"][HTTP_OPTIONS]["common_http_protocol_options"]
    assert common == {"max_requests_per_connection": 20, "idle_timeout": "30s"}
    assert top["outlier_detection"]["consecutive_gateway_failure"] == 2
    assert top["common_lb_config"] == {"healthy_panic_threshold": {"value": 25.0}}
    # Subset v1 replaces the load balancer only.
    v1 = clusters[f"outbound|8080|v1|api{API}"]
    assert v1["lb_policy"] == "RANDOM" and thresholds(v1)["max_connections"] == 10
    # Subset v2 replaces the whole connection pool and the load balancer.
    v2 = clusters[f"outbound|8080|v2|api{API}"]
    assert v2["lb_policy"] == "MAGLEV" and v2["maglev_lb_config"] == {"table_size": "65537"}
    assert thresholds(v2)["max_pending_requests"] == 1
    assert thresholds(v2)["max_connections"] == MAX_U32
    assert "outlier_detection" in v2
    # Port-level settings apply to their port only; subsets on top of them.
    # ROUND_ROBIN is the proto default: JSON leaves it out.
    assert clusters[f"outbound|9090||api{API}"].get("lb_policy", "ROUND_ROBIN") == "ROUND_ROBIN"
    assert clusters[f"outbound|9090|v1|api{API}"]["lb_policy"] == "RANDOM"
    grpc = clusters[f"outbound|9090||api{API}"]["typed_extension_protocol_options"]
    assert grpc[HTTP_OPTIONS]["explicit_http_config"] == {"http2_protocol_options": {}}
    # TCP services get no HTTP options.
    assert "typed_extension_protocol_options" not in clusters[f"outbound|3306||db{API}"]


def test_service_entry_clusters_by_resolution() -> None:
    clusters = build_mesh("egress.yaml", "features.yaml").by_name("web-v1", CLUSTER_TYPE)
    dns = clusters["outbound|80||httpbin.org"]
    assert dns["type"] == "STRICT_DNS" and dns["respect_dns_ttl"] is True
    assert dns["dns_lookup_family"] == "V4_ONLY" and dns["dns_refresh_rate"] == "60s"
    lb = dns["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert lb["address"]["socket_address"] == {"address": "httpbin.org", "port_value": 80}
    assert clusters["outbound|443||www.googleapis.com"]["type"] == "LOGICAL_DNS"
    assert clusters["outbound|8080||legacy.internal"]["type"] == "EDS"
    wildcard = clusters["outbound|80||*.example.org"]
    assert (wildcard["type"], wildcard["lb_policy"]) == ("ORIGINAL_DST", "CLUSTER_PROVIDED")
    # exportTo ".": another namespace's private entry is not visible.
    assert "outbound|80||private.other.internal" not in clusters
    tls = clusters["outbound|443||www.googleapis.com"]["transport_socket"]
    assert tls["name"] == "envoy.transport_sockets.tls"
    assert tls["typed_config"]["sni"] == "www.googleapis.com"
    assert "transport_socket" not in clusters["outbound|80||www.googleapis.com"]
    assert "lb_policy" not in clusters["outbound|80||www.googleapis.com"]  # ROUND_ROBIN


def test_istio_mutual_uses_the_workload_identity_over_sds() -> None:
    mesh = build_mesh(BOOKINFO, "bookinfo/networking/destination-rule-all-mtls.yaml")
    cluster = mesh.by_name("productpage-v1", CLUSTER_TYPE)[f"outbound|9080|v2|reviews{SVC}"]
    context = cluster["transport_socket"]["typed_config"]
    assert context["sni"] == f"outbound_.9080_.v2_.reviews{SVC}"
    common = context["common_tls_context"]
    certificate = common["tls_certificate_sds_secret_configs"][0]
    assert certificate["name"] == "default"
    # From the agent over the bootstrap's sds-grpc cluster, as Istio's sidecars get it.
    source = certificate["sds_config"]["api_config_source"]
    assert source["grpc_services"] == [{"envoy_grpc": {"cluster_name": "sds-grpc"}}]
    combined = common["combined_validation_context"]
    assert combined["validation_context_sds_secret_config"]["name"] == "ROOTCA"
    assert combined["default_validation_context"]["match_typed_subject_alt_names"] == [
        {
            "san_type": "URI",
            "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"},
        }
    ]
    assert common["alpn_protocols"] == ["istio-peer-exchange", "istio"]


def test_router_has_outbound_clusters_only() -> None:
    mesh = build_mesh(BOOKINFO, "bookinfo/networking/bookinfo-gateway.yaml")
    names = set(mesh.by_name("gateway", CLUSTER_TYPE))
    assert "BlackHoleCluster" in names and f"outbound|9080||productpage{SVC}" in names
    assert not any(n.startswith("inbound|") or "Passthrough" in n for n in names)


def test_tracing_and_access_log_clusters() -> None:
    mesh = build_mesh(
        BOOKINFO,
        mesh=MeshConfig(zipkin_address="zipkin.istio-system:9411", mixer_address="127.0.0.1:9091"),
    )
    clusters = mesh.by_name("productpage-v1", CLUSTER_TYPE)
    assert clusters["zipkin"]["type"] == "STRICT_DNS"
    mixer = clusters["mixer"]["typed_extension_protocol_options"][HTTP_OPTIONS]
    assert mixer["explicit_http_config"] == {"http2_protocol_options": {}}


def test_sidecar_egress_hosts_scope_clusters_routes_and_listeners() -> None:
    sidecar = load_documents(
        """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: web, namespace: shop}
spec:
  workloadSelector: {labels: {app: web}}
  egress: [{hosts: ["./api.shop.svc.cluster.local", "istio-system/*"]}]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"""
    ).resources
    resources = load("features.yaml") + sidecar
    mesh = Mesh(resources, workload_nodes(resources))
    clusters = set(mesh.by_name("web-v1", CLUSTER_TYPE))
    assert f"outbound|8080||api{API}" in clusters
    assert not any("db.shop" in c or "web.shop" in c for c in clusters)
    assert set(mesh.by_name("web-v1", ROUTE_TYPE)) == {"8080", "9090"}
    assert mesh.by_name("web-v1", ROUTE_TYPE)["8080"]["virtual_hosts"][-1]["name"] == "block_all"
    assert "10.96.0.30_3306" not in mesh.by_name("web-v1", LISTENER_TYPE)
    # Other workloads are not scoped by it.
    assert f"outbound|3306||db{API}" in set(mesh.by_name("api-v1", CLUSTER_TYPE))


def test_grpc_ports_speak_http2_in_process_mode_and_to_the_app() -> None:
    """Sidecars no longer downgrade gRPC/HTTP/2 ports in process mode: the client sidecar's
    cluster speaks HTTP/2, and so does the server sidecar's inbound cluster to its app."""
    mesh = build_mesh("features.yaml", mode="process")
    web = mesh.by_name("web-v1", CLUSTER_TYPE)
    options = web[f"outbound|9090||api{API}"]["typed_extension_protocol_options"]
    assert options[HTTP_OPTIONS]["explicit_http_config"] == {"http2_protocol_options": {}}
    api = mesh.by_name("api-v2", CLUSTER_TYPE)
    inbound = api["inbound|9090||"]["typed_extension_protocol_options"]
    assert inbound[HTTP_OPTIONS]["explicit_http_config"] == {"http2_protocol_options": {}}
    # A plain HTTP port keeps HTTP/1.1 to the app.
    assert "typed_extension_protocol_options" not in api["inbound|8082||"]


def test_process_mode_reports_bind_the_pod_address_only_towards_loopback_pods() -> None:
    """With access logs to mixer, a process-mode sidecar connects from its pod's own address
    so that the callee's report names it; pods on a bridge (netns mode, which the demo's
    process-mode ingress gateway calls) are not reachable from a loopback source: no
    binding there, or every connection would fail."""
    reporting = MeshConfig(mixer_address="127.0.0.1:9091")
    process = build_mesh(BOOKINFO, mode="process", mesh=reporting)
    details = process.by_name("productpage-v1", CLUSTER_TYPE)[f"outbound|9080||details{SVC}"]
    assert details["upstream_bind_config"] == {
        "source_address": {"address": process.nodes["productpage-v1"].ip, "port_value": 0}
    }
    loaded = ConfigSnapshot(load(BOOKINFO)).resources
    nodes = workload_nodes(loaded, subnet="10.211.0")  # captured pods on a bridge
    nodes["gateway"] = gateway_node(mode="process")
    bridged = Mesh(loaded, nodes, reporting)
    productpage = bridged.by_name("gateway", CLUSTER_TYPE)[f"outbound|9080||productpage{SVC}"]
    assert "upstream_bind_config" not in productpage
