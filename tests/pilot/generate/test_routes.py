from __future__ import annotations

from typing import Any

import pytest

from pilot.generate import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.generate.common import SERVICE_PORT_HEADER
from pilot.model import MeshConfig, ProxyNode
from tests.pilot.generate._mesh import BOOKINFO, Mesh, build_mesh

SVC = ".default.svc.cluster.local"
API = "api.shop.svc.cluster.local"
FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"


def vhost(mesh: Mesh, node: str, config: str, name: str) -> dict[str, Any]:
    route_config = mesh.by_name(node, ROUTE_TYPE)[config]
    found: dict[str, Any] = next(v for v in route_config["virtual_hosts"] if v["name"] == name)
    return found


@pytest.fixture(scope="module")
def features() -> Mesh:
    return build_mesh("features.yaml")


def test_route_configurations_are_named_by_port_with_istio_domains() -> None:
    mesh = build_mesh(BOOKINFO)
    configs = mesh.by_name("productpage-v1", ROUTE_TYPE)
    assert list(configs) == ["9080"]
    reviews = vhost(mesh, "productpage-v1", "9080", f"reviews{SVC}:9080")
    assert reviews["domains"] == [
        f"reviews{SVC}",
        f"reviews{SVC}:9080",
        "reviews",
        "reviews:9080",
        "reviews.default",
        "reviews.default:9080",
        "reviews.default.svc",
        "reviews.default.svc:9080",
    ]
    (route,) = reviews["routes"]
    assert route["name"] == "default"
    assert route["match"] == {"prefix": "/"}
    assert route["route"]["cluster"] == f"outbound|9080||reviews{SVC}"
    assert route["route"]["timeout"] == "0s"
    assert route["route"]["retry_policy"] == {
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retry_host_predicate": [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.host."
                    "previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ],
        "host_selection_retry_max_attempts": "5",
        "retriable_status_codes": [503],
    }
    assert route["decorator"] == {"operation": f"reviews{SVC}:9080/*"}
    assert configs["9080"]["virtual_hosts"][-1]["name"] == "allow_any"


def test_short_names_only_in_the_services_namespace_and_cluster_ip() -> None:
    stranger = ProxyNode.build("127.0.31.99", "stranger-0", "elsewhere")
    mesh = build_mesh("features.yaml", extra={"stranger": stranger})
    api = vhost(mesh, "web-v1", "8080", f"{API}:8080")
    assert "api" in api["domains"] and "10.96.0.20:8080" in api["domains"]
    seen_from_elsewhere = vhost(mesh, "stranger", "8080", f"{API}:8080")["domains"]
    assert "api" not in seen_from_elsewhere and "api.shop:8080" in seen_from_elsewhere


def test_match_translation(features: Mesh) -> None:
    routes = vhost(features, "web-v1", "8080", f"{API}:8080")["routes"]
    by_user, by_regex = routes[0], routes[1]
    assert by_user["name"] == "canary.by-user"
    assert by_user["match"] == {
        "prefix": "/",
        "headers": [{"name": "x-user", "string_match": {"exact": "tester"}}],
        "query_parameters": [{"name": "debug", "string_match": {"exact": "1"}}],
    }
    assert by_regex["name"] == "canary"
    assert by_regex["match"] == {
        "safe_regex": {"regex": "/v2/.*"},
        "case_sensitive": False,
        "headers": [{"name": ":method", "string_match": {"exact": "POST"}}],
    }
    slow = routes[2]["match"]
    assert slow["headers"] == [
        {"name": "x-skip-fault", "present_match": True, "invert_match": True}
    ]
    assert routes[3]["match"] == {"path": "/old"}


def test_retries_timeout_fault_and_metadata(features: Mesh) -> None:
    routes = vhost(features, "web-v1", "8080", f"{API}:8080")["routes"]
    canary = routes[0]["route"]
    assert canary["cluster"] == f"outbound|8080|v2|{API}" and canary["timeout"] == "10s"
    assert canary["retry_policy"]["num_retries"] == 4
    assert canary["retry_policy"]["retry_on"] == "5xx,gateway-error,retriable-status-codes"
    assert canary["retry_policy"]["retriable_status_codes"] == [429]
    assert canary["retry_policy"]["per_try_timeout"] == "2s"
    assert routes[0]["metadata"]["filter_metadata"] == {
        "istio": {"config": "/apis/networking.istio.io/v1/namespaces/shop/virtual-service/api"},
        "pymesh": {"rule": 0.0},
    }
    fault = routes[2]["typed_per_filter_config"][FAULT]
    assert fault == {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
        "delay": {
            "fixed_delay": "1.500s",
            "percentage": {"numerator": 125000, "denominator": "MILLION"},
        },
        "abort": {"http_status": 503, "percentage": {"numerator": 1000, "denominator": "MILLION"}},
    }


def test_redirect_direct_response_rewrite_headers_cors(features: Mesh) -> None:
    routes = vhost(features, "web-v1", "8080", f"{API}:8080")["routes"]
    assert routes[3]["redirect"] == {
        "path_redirect": "/new",
        "host_redirect": API,
        "response_code": "PERMANENT_REDIRECT",
    }
    assert routes[4]["direct_response"] == {
        "status": 410,
        "body": {"inline_string": "gone for good"},
    }
    legacy = routes[5]
    assert legacy["route"]["prefix_rewrite"] == "/"
    assert legacy["route"]["host_rewrite_literal"] == "legacy-api"
    assert legacy["request_headers_to_add"] == [
        {
            "header": {"key": "x-api-version", "value": "legacy"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]
    assert legacy["request_headers_to_remove"] == ["x-debug"]
    # APPEND_IF_EXISTS_OR_ADD is the enum's zero: JSON leaves it out.
    assert legacy["response_headers_to_add"] == [
        {"header": {"key": "x-served-by", "value": "pymesh"}}
    ]
    cors = legacy["typed_per_filter_config"][CORS]
    assert cors["allow_origin_string_match"] == [
        {"exact": "https://shop.example.com"},
        {"safe_regex": {"regex": "https://.*\\.shop\\.example\\.com"}},
    ]
    assert (cors["allow_methods"], cors["max_age"], cors["allow_credentials"]) == (
        "GET,POST",
        "86400",
        True,
    )


def test_weights_mirrors_and_hash_policy(features: Mesh) -> None:
    routes = vhost(features, "web-v1", "8080", f"{API}:8080")["routes"]
    split = routes[6]["route"]
    assert split["weighted_clusters"]["clusters"] == [
        {
            "name": f"outbound|8080|v1|{API}",
            "weight": 3,
            "request_headers_to_add": [
                {
                    "header": {"key": "x-backend", "value": "v1"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
        },
        {"name": f"outbound|8080|v2|{API}", "weight": 1},
    ]
    assert split["request_mirror_policies"] == [
        {
            "cluster": f"outbound|8080|v2|{API}",
            "runtime_fraction": {"default_value": {"numerator": 255000, "denominator": "MILLION"}},
        }
    ]
    # v1 (RANDOM) and v2 (maglev on source IP) disagree: no hash policy on the split.
    assert "hash_policy" not in split
    last = routes[-1]["route"]
    assert [m["cluster"] for m in last["request_mirror_policies"]] == [
        "outbound|80||web.shop.svc.cluster.local",
        f"outbound|8080|v2|{API}",
    ]
    assert (
        last["request_mirror_policies"][0]["runtime_fraction"]["default_value"]["numerator"]
        == 1_000_000
    )
    v2_route = routes[0]["route"]
    assert v2_route["hash_policy"] == [{"connection_properties": {"source_ip": True}}]


def test_port_matches_pick_route_configurations(features: Mesh) -> None:
    grpc = vhost(features, "web-v1", "9090", f"{API}:9090")["routes"]
    port_rule = next(r for r in grpc if r["metadata"]["filter_metadata"]["pymesh"]["rule"] == 6)
    assert port_rule["route"]["cluster"] == f"outbound|9090||{API}"
    assert "retry_policy" not in port_rule["route"]  # attempts: 0
    http = vhost(features, "web-v1", "8080", f"{API}:8080")["routes"]
    assert all(r["metadata"]["filter_metadata"]["pymesh"]["rule"] != 6 for r in http)
    # No VirtualService for web: Istio's default route.
    web = vhost(features, "api-v1", "80", "web.shop.svc.cluster.local:80")["routes"]
    assert [r["name"] for r in web] == ["default"]


def test_registry_only_blocks_unknown_hosts() -> None:
    mesh = build_mesh(BOOKINFO, mesh=MeshConfig(outbound_traffic_policy="REGISTRY_ONLY"))
    last = mesh.by_name("productpage-v1", ROUTE_TYPE)["9080"]["virtual_hosts"][-1]
    assert last == {
        "name": "block_all",
        "domains": ["*"],
        "include_request_attempt_count": True,
        "routes": [
            {"name": "block_all", "match": {"prefix": "/"}, "direct_response": {"status": 502}}
        ],
    }


def test_process_mode_merges_every_port_into_one_route_configuration() -> None:
    mesh = build_mesh("features.yaml", "egress.yaml", mode="process")
    configs = mesh.by_name("web-v1", ROUTE_TYPE)
    merged = configs["pymesh-outbound"]
    names = [v["name"] for v in merged["virtual_hosts"]]
    assert f"{API}:8080" in names and f"{API}:9090" in names
    assert names[-1] == "allow_any"
    domains = [d for v in merged["virtual_hosts"] for d in v["domains"]]
    assert len(domains) == len(set(domains)), "a domain in two virtual hosts is rejected"
    by_name = {v["name"]: v for v in merged["virtual_hosts"]}
    # Bare names go to the service's port 80, else to its lowest HTTP port.
    assert "api" in by_name[f"{API}:8080"]["domains"]
    assert "api" not in by_name[f"{API}:9090"]["domains"]
    assert "api:9090" in by_name[f"{API}:9090"]["domains"]
    assert "www.googleapis.com" in by_name["www.googleapis.com:80"]["domains"]
    # Every route tells the server's sidecar which service port it was routed to.
    route = by_name[f"{API}:8080"]["routes"][0]
    assert {
        "header": {"key": SERVICE_PORT_HEADER, "value": "8080"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
    } in route["request_headers_to_add"]
    split = by_name[f"{API}:8080"]["routes"][6]["route"]["weighted_clusters"]["clusters"]
    assert all(
        c["request_headers_to_add"][-1]["header"]["key"] == SERVICE_PORT_HEADER for c in split
    )
    # Same routes as the per-port configuration, which is still generated.
    per_port = {v["name"]: v for v in configs["8080"]["virtual_hosts"]}
    assert per_port[f"{API}:8080"]["routes"] == by_name[f"{API}:8080"]["routes"]


def test_egress_port_match_sends_http_to_the_tls_port() -> None:
    mesh = build_mesh("egress.yaml", "features.yaml")
    routes = vhost(mesh, "web-v1", "80", "www.googleapis.com:80")["routes"]
    assert routes[0]["route"]["cluster"] == "outbound|443||www.googleapis.com"
    timeout = vhost(mesh, "web-v1", "80", "httpbin.org:80")["routes"][0]["route"]
    assert (timeout["cluster"], timeout["timeout"]) == ("outbound|80||httpbin.org", "3s")


def test_every_routed_cluster_exists() -> None:
    for mesh, node in (
        (build_mesh("features.yaml", "egress.yaml"), "web-v1"),
        (build_mesh("features.yaml", mode="process"), "api-v1"),
    ):
        clusters = set(mesh.by_name(node, CLUSTER_TYPE))
        for config in mesh.dicts(node, ROUTE_TYPE):
            for vh in config["virtual_hosts"]:
                for route in vh["routes"]:
                    action = route.get("route", {})
                    named = (
                        [action["cluster"]]
                        if "cluster" in action
                        else [
                            c["name"]
                            for c in action.get("weighted_clusters", {}).get("clusters", [])
                        ]
                    )
                    named += [m["cluster"] for m in action.get("request_mirror_policies", [])]
                    assert set(named) <= clusters, (config["name"], vh["name"], named)


def test_rds_covers_exactly_what_lds_names() -> None:
    for mode in (None, "process"):
        mesh = build_mesh("features.yaml", "egress.yaml", mode=mode)
        named = set()
        for listener in mesh.dicts("web-v1", LISTENER_TYPE):
            for chain in listener["filter_chains"]:
                for f in chain["filters"]:
                    rds = f["typed_config"].get("rds")
                    if rds:
                        named.add(rds["route_config_name"])
        configs = set(mesh.by_name("web-v1", ROUTE_TYPE))
        assert configs == named
