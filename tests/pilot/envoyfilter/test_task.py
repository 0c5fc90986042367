"""Istio's rate limiting task, unchanged, on Bookinfo: what pilot sends the gateway and the
productpage sidecar after the EnvoyFilter patches (iptables and process mode), and that the
real Envoy accepts it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pilot.generate import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from tests.pilot.generate._envoy import envoy_validate, static_bootstrap
from tests.pilot.generate._mesh import BOOKINFO, Mesh, build_mesh

TASK = "docs-extracted/policy/rate-limit/"
NET = "bookinfo/networking/"
RLS_CLUSTER = "outbound|8081||ratelimit.default.svc.cluster.local"
HCM = "envoy.filters.network.http_connection_manager"
GLOBAL = (
    BOOKINFO,
    NET + "bookinfo-gateway.yaml",
    "ratelimit/rate-limit-service.yaml",
    TASK + "1-configmap-ratelimit-config.yaml",
    TASK + "2-envoyfilter-filter-ratelimit.yaml",
    TASK + "3-envoyfilter-filter-ratelimit-svc.yaml",
)
PER_ROUTE = (*GLOBAL, TASK + "4-virtualservice-bookinfo-named-api-route.yaml",
             TASK + "5-envoyfilter-filter-ratelimit-svc-api.yaml")  # fmt: skip


def hcm_filters(listener: dict[str, Any]) -> list[list[str]]:
    """The HTTP filter names of each HTTP connection manager of a listener."""
    out = []
    for chain in listener.get("filter_chains", []):
        for item in chain.get("filters", []):
            if item["name"] == HCM:
                out.append([f["name"] for f in item["typed_config"].get("http_filters", [])])
    return out


def gateway_listener(mesh: Mesh) -> dict[str, Any]:
    [listener] = [d for d in mesh.dicts("gateway", LISTENER_TYPE) if d["name"].endswith("8080")]
    return listener


def test_global_rate_limit_filter_goes_before_the_router_on_the_gateway_only() -> None:
    mesh = build_mesh(*GLOBAL)
    [chain] = hcm_filters(gateway_listener(mesh))
    assert chain[-2:] == ["envoy.filters.http.ratelimit", "envoy.filters.http.router"]
    typed = next(
        item["typed_config"]
        for c in gateway_listener(mesh)["filter_chains"]
        for item in c["filters"]
    )
    rl = next(f for f in typed["http_filters"] if f["name"] == "envoy.filters.http.ratelimit")
    config = rl["typed_config"]
    assert config["domain"] == "ratelimit" and config["failure_mode_deny"] is True
    assert config["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"] == RLS_CLUSTER
    # the cluster it names exists (from the task's ratelimit Service)
    assert RLS_CLUSTER in mesh.by_name("gateway", CLUSTER_TYPE)
    # sidecars are untouched
    for listener in mesh.dicts("productpage-v1", LISTENER_TYPE):
        for names in hcm_filters(listener):
            assert "envoy.filters.http.ratelimit" not in names


def test_virtual_host_and_api_route_rate_limits() -> None:
    mesh = build_mesh(*PER_ROUTE)
    [rc] = [r for r in mesh.dicts("gateway", ROUTE_TYPE) if r["name"] == "http.8080"]
    vhosts = {v["name"]: v for v in rc["virtual_hosts"]}
    star = vhosts["*:8080"]
    assert star["rate_limits"] == [
        {"actions": [{"request_headers": {"header_name": ":path", "descriptor_key": "PATH"}}]}
    ]
    by_name = {r.get("name"): r for r in star["routes"]}
    api = by_name["api"]["route"]["rate_limits"]
    assert api[0]["actions"][0]["header_value_match"]["descriptor_value"] == "api"
    # the other routes keep none of their own: the virtual host's apply to them
    assert all("rate_limits" not in r["route"] for n, r in by_name.items() if n != "api")


@pytest.mark.parametrize("mode", [None, "process"])
@pytest.mark.parametrize(
    "task_file",
    [
        "6-envoyfilter-filter-local-ratelimit-svc.yaml",
        "7-envoyfilter-filter-local-ratelimit-svc-per-route.yaml",
    ],
)
def test_local_rate_limit_on_productpage_inbound(task_file: str, mode: str | None) -> None:
    mesh = build_mesh(BOOKINFO, TASK + task_file, mode=mode)
    [inbound] = [d for d in mesh.dicts("productpage-v1", LISTENER_TYPE)
                 if d["name"] == "virtualInbound"]  # fmt: skip
    for names in hcm_filters(inbound):
        # INSERT_BEFORE with no sub-filter to match: first in the chain
        assert names[0] == "envoy.filters.http.local_ratelimit"
        assert names[-1] == "envoy.filters.http.router"
    # outbound listeners and other workloads are untouched
    local = "envoy.filters.http.local_ratelimit"
    listeners = mesh.dicts("productpage-v1", LISTENER_TYPE)
    others = [d for d in listeners if d["name"] != "virtualInbound"]
    others += mesh.dicts("reviews-v1", LISTENER_TYPE)
    assert not any(local in names for d in others for names in hcm_filters(d))
    if task_file.startswith("7"):
        routes = [
            route
            for chain in inbound["filter_chains"]
            for item in chain["filters"]
            if item["name"] == HCM
            for vhost in item["typed_config"]["route_config"]["virtual_hosts"]
            if vhost["name"] == "inbound|http|9080"
            for route in vhost["routes"]
        ]
        assert routes, "the inbound virtual host is named as Istio names it"
        for route in routes:
            per_filter = route["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
            assert per_filter["value"]["token_bucket"]["max_tokens"] == 4


@pytest.mark.envoy
@pytest.mark.parametrize("node", ["gateway", "productpage-v1"])
@pytest.mark.parametrize("mode", [None, "process"])
def test_envoy_accepts_the_patched_config(
    envoy_binary: str, tmp_path: Path, node: str, mode: str | None
) -> None:
    mesh = build_mesh(*PER_ROUTE, TASK + "7-envoyfilter-filter-local-ratelimit-svc-per-route.yaml",
                      mode=mode)  # fmt: skip
    ok, output = envoy_validate(envoy_binary, static_bootstrap(mesh, node), tmp_path / node)
    assert ok, output
