"""Simulation tables in the style of Istio's ``sidecar_simulation_test``: the Istio samples as
they are plus a call (source proxy, URL, headers) → where the generated config sends it.

The expectation is read through ``explain``, which replays Envoy's matching on the resources
``generate`` produced for the source proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from pilot.generate import explain
from pilot.model import MeshConfig
from tests.pilot.generate._mesh import BOOKINFO, build_mesh

NET = "bookinfo/networking/"
TM = "docs-extracted/traffic-management/"
DR_ALL = NET + "destination-rule-all.yaml"
SVC = ".default.svc.cluster.local"


def reviews(subset: str = "") -> str:
    return f"outbound|9080|{subset}|reviews{SVC}"


def ratings(subset: str = "") -> str:
    return f"outbound|9080|{subset}|ratings{SVC}"


@dataclass(frozen=True)
class Call:
    name: str
    config: tuple[str, ...]
    source: str
    url: str
    expect: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    mode: str | None = None
    mesh: MeshConfig = field(default_factory=MeshConfig)


JASON = {"end-user": "jason"}
ROUTING = (BOOKINFO, DR_ALL)
CASES = [
    # -- request routing -----------------------------------------------------------------
    Call(
        "no virtual service: the service's own cluster",
        ROUTING,
        "productpage-v1",
        "http://reviews:9080/reviews/0",
        {"cluster": reviews(), "route": "default", "virtual_service": None, "timeout": 0.0},
    ),
    Call(
        "all-v1",
        (*ROUTING, NET + "virtual-service-all-v1.yaml"),
        "productpage-v1",
        "http://reviews:9080/reviews/0",
        {
            "cluster": reviews("v1"),
            "subset": "v1",
            "virtual_service": "default/reviews",
            "rule_index": 0,
            "timeout": 0.0,
        },
    ),
    Call(
        "all-v1, details by FQDN",
        (*ROUTING, NET + "virtual-service-all-v1.yaml"),
        "productpage-v1",
        f"http://details{SVC}:9080/details/0",
        {"cluster": f"outbound|9080|v1|details{SVC}"},
    ),
    Call(
        "jason-v2-v3: jason",
        (*ROUTING, NET + "virtual-service-reviews-jason-v2-v3.yaml"),
        "productpage-v1",
        "http://reviews:9080/reviews/0",
        {"cluster": reviews("v2"), "rule_index": 0},
        headers=JASON,
    ),
    Call(
        "jason-v2-v3: anonymous",
        (*ROUTING, NET + "virtual-service-reviews-jason-v2-v3.yaml"),
        "productpage-v1",
        "http://reviews:9080/reviews/0",
        {"cluster": reviews("v3"), "rule_index": 1},
    ),
    Call(
        "test-v2: jason",
        (*ROUTING, NET + "virtual-service-reviews-test-v2.yaml"),
        "productpage-v1",
        "http://reviews.default:9080/reviews/0",
        {"cluster": reviews("v2")},
        headers=JASON,
    ),
    Call(
        "test-v2: other user",
        (*ROUTING, NET + "virtual-service-reviews-test-v2.yaml"),
        "productpage-v1",
        "http://reviews:9080/reviews/0",
        {"cluster": reviews("v1")},
        headers={"end-user": "json"},
    ),
    Call(
        "v3",
        (*ROUTING, NET + "virtual-service-reviews-v3.yaml"),
        "productpage-v1",
        "http://reviews:9080/",
        {"cluster": reviews("v3")},
    ),
    # -- fault injection -------------------------------------------------------------------
    Call(
        "ratings delay for jason",
        (*ROUTING, NET + "virtual-service-ratings-test-delay.yaml"),
        "reviews-v2",
        "http://ratings:9080/ratings/0",
        {"cluster": ratings("v1"), "fault.delay": 7.0, "fault.delay_percent": 100.0},
        headers=JASON,
    ),
    Call(
        "ratings delay: others untouched",
        (*ROUTING, NET + "virtual-service-ratings-test-delay.yaml"),
        "reviews-v2",
        "http://ratings:9080/ratings/0",
        {"cluster": ratings("v1"), "fault": None},
    ),
    Call(
        "ratings abort for jason",
        (*ROUTING, NET + "virtual-service-ratings-test-abort.yaml"),
        "reviews-v3",
        "http://ratings:9080/ratings/0",
        {"cluster": ratings("v1"), "fault.abort_status": 500, "fault.abort_percent": 100.0},
        headers=JASON,
    ),
    Call(
        "details abort 555",
        (*ROUTING, NET + "fault-injection-details-v1.yaml"),
        "productpage-v1",
        "http://details:9080/details/0",
        {"fault.abort_status": 555, "rule_index": 0},
    ),
    # -- traffic shifting ------------------------------------------------------------------
    Call(
        "50/50 v1 v3",
        (*ROUTING, NET + "virtual-service-reviews-50-v3.yaml"),
        "productpage-v1",
        "http://reviews:9080/",
        {"weights": {reviews("v1"): 50, reviews("v3"): 50}},
    ),
    Call(
        "80/20",
        (*ROUTING, NET + "virtual-service-reviews-80-20.yaml"),
        "productpage-v1",
        "http://reviews:9080/",
        {"weights": {reviews("v1"): 80, reviews("v2"): 20}},
    ),
    Call(
        "90/10",
        (*ROUTING, NET + "virtual-service-reviews-90-10.yaml"),
        "productpage-v1",
        "http://reviews:9080/",
        {"weights": {reviews("v1"): 90, reviews("v2"): 10}},
    ),
    Call(
        "v2/v3",
        (*ROUTING, NET + "virtual-service-reviews-v2-v3.yaml"),
        "productpage-v1",
        "http://reviews:9080/",
        {"weights": {reviews("v2"): 50, reviews("v3"): 50}},
    ),
    # -- request timeouts ------------------------------------------------------------------
    Call(
        "reviews v2",
        (*ROUTING, TM + "request-timeouts/1-reviews-v2.yaml"),
        "productpage-v1",
        "http://reviews:9080/reviews/0",
        {"cluster": reviews("v2"), "timeout": 0.0},
    ),
    Call(
        "ratings 2s delay (deprecated percent)",
        (*ROUTING, TM + "request-timeouts/2-ratings-delay-2s.yaml"),
        "reviews-v2",
        "http://ratings:9080/ratings/0",
        {"cluster": ratings("v1"), "fault.delay": 2.0, "fault.delay_percent": 100.0},
    ),
    Call(
        "reviews timeout 0.5s",
        (*ROUTING, TM + "request-timeouts/3-reviews-v2-timeout-0.5s.yaml"),
        "productpage-v1",
        "http://reviews:9080/reviews/0",
        {"cluster": reviews("v2"), "timeout": 0.5, "retries.attempts": 2},
    ),
    # -- mirroring -------------------------------------------------------------------------
    Call(
        "httpbin v1, mirrored to v2",
        (
            "sleep/sleep.yaml",
            TM + "mirroring/0-httpbin-v1-v2-service.yaml",
            TM + "mirroring/1-httpbin-all-v1.yaml",
            TM + "mirroring/2-httpbin-mirror-v2.yaml",
        ),
        "sleep",
        "http://httpbin:8000/headers",
        {
            "cluster": f"outbound|8000|v1|httpbin{SVC}",
            "mirrors": ((f"outbound|8000|v2|httpbin{SVC}", 100.0),),
            "endpoints": ("127.0.31.2:80",),
        },
    ),
    Call(
        "httpbin v1, not mirrored yet",
        (
            "sleep/sleep.yaml",
            TM + "mirroring/0-httpbin-v1-v2-service.yaml",
            TM + "mirroring/1-httpbin-all-v1.yaml",
        ),
        "sleep",
        "http://httpbin:8000/headers",
        {"cluster": f"outbound|8000|v1|httpbin{SVC}", "mirrors": ()},
    ),
    # -- circuit breaking (the routing part; cluster settings in test_clusters) -----------
    Call(
        "httpbin with a circuit breaker",
        (
            "sleep/sleep.yaml",
            "httpbin/httpbin.yaml",
            TM + "circuit-breaking/destination-rule-httpbin-cb.yaml",
        ),
        "sleep",
        "http://httpbin:8000/get",
        {"cluster": f"outbound|8000||httpbin{SVC}", "endpoints": ("127.0.31.2:8080",)},
    ),
    # -- egress ----------------------------------------------------------------------------
    Call(
        "httpbin.org with 3s timeout",
        (
            "sleep/sleep.yaml",
            TM + "egress-control/1-serviceentry-httpbin-ext.yaml",
            TM + "egress-control/3-virtualservice-httpbin-ext-timeout-3s.yaml",
        ),
        "sleep",
        "http://httpbin.org/delay/5",
        {"cluster": "outbound|80||httpbin.org", "timeout": 3.0, "endpoints": ("httpbin.org:80",)},
    ),
    Call(
        "unknown host, ALLOW_ANY",
        ("sleep/sleep.yaml",),
        "sleep",
        "http://example.com/",
        {"cluster": "PassthroughCluster", "route": "allow_any"},
    ),
    Call(
        "unknown host, REGISTRY_ONLY",
        ("sleep/sleep.yaml",),
        "sleep",
        "http://example.com/",
        {"direct_response": 502, "route": "block_all"},
        mesh=MeshConfig(outbound_traffic_policy="REGISTRY_ONLY"),
    ),
    Call(
        "registered host, REGISTRY_ONLY",
        ("sleep/sleep.yaml", TM + "egress-control/1-serviceentry-httpbin-ext.yaml"),
        "sleep",
        "http://httpbin.org/",
        {"cluster": "outbound|80||httpbin.org"},
        mesh=MeshConfig(outbound_traffic_policy="REGISTRY_ONLY"),
    ),
    # -- ingress ---------------------------------------------------------------------------
    Call(
        "bookinfo gateway /productpage",
        (*ROUTING, NET + "bookinfo-gateway.yaml"),
        "gateway",
        "http://bookinfo.example.com:8080/productpage",
        {
            "cluster": f"outbound|9080||productpage{SVC}",
            "route_config": "http.8080",
            "listener": "0.0.0.0_8080",
            "virtual_host": "*:8080",
        },
    ),
    Call(
        "bookinfo gateway /api/v1/products/0",
        (*ROUTING, NET + "bookinfo-gateway.yaml"),
        "gateway",
        "http://localhost:8080/api/v1/products/0",
        {"cluster": f"outbound|9080||productpage{SVC}"},
    ),
    Call(
        "bookinfo gateway, unknown path",
        (*ROUTING, NET + "bookinfo-gateway.yaml"),
        "gateway",
        "http://localhost:8080/admin",
        {"error": "no route matched (404)"},
    ),
    Call(
        "httpbin ingress by host",
        ("httpbin/httpbin.yaml", TM + "ingress-control/httpbin-gateway-and-virtualservice.yaml"),
        "gateway",
        "http://httpbin.example.com/status/200",
        {"cluster": f"outbound|8000||httpbin{SVC}", "virtual_host": "httpbin.example.com:80"},
    ),
    Call(
        "httpbin ingress, Host with port",
        ("httpbin/httpbin.yaml", TM + "ingress-control/httpbin-gateway-and-virtualservice.yaml"),
        "gateway",
        "http://127.0.0.1/delay/1",
        {"cluster": f"outbound|8000||httpbin{SVC}"},
        headers={"Host": "httpbin.example.com:80"},
    ),
    Call(
        "httpbin ingress, other host",
        ("httpbin/httpbin.yaml", TM + "ingress-control/httpbin-gateway-and-virtualservice.yaml"),
        "gateway",
        "http://other.example.com/status/200",
        {"error": "no virtual host for 'other.example.com'"},
    ),
    # -- process mode: the HTTP_PROXY listener, Host header routing ------------------------
    Call(
        "process mode: jason",
        (*ROUTING, NET + "virtual-service-reviews-jason-v2-v3.yaml"),
        "productpage-v1",
        "http://reviews:9080/reviews/0",
        {
            "cluster": reviews("v2"),
            "route_config": "pymesh-outbound",
            "listener": "virtualOutbound",
            "endpoints": ("127.0.31.6:15006",),
        },
        headers=JASON,
        mode="process",
    ),
    Call(
        "process mode: short name without port means port 80",
        ("sleep/sleep.yaml",),
        "sleep",
        "http://sleep/",
        {"cluster": f"outbound|80||sleep{SVC}", "endpoints": ("127.0.31.2:15006",)},
        mode="process",
    ),
]


def _get(explanation: Any, path: str) -> Any:
    value = explanation
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("call", CASES, ids=[c.name for c in CASES])
def test_simulation(call: Call) -> None:
    mesh = build_mesh(*call.config, mode=call.mode, mesh=call.mesh)
    result = explain(mesh.ctx, mesh.nodes[call.source], call.url, call.headers)
    for key, expected in call.expect.items():
        if key == "weights":
            actual = {c.name: c.weight for c in result.clusters}
        else:
            actual = _get(result, key)
        assert actual == expected, f"{key}: {actual!r} != {expected!r}\n{result.render()}"
