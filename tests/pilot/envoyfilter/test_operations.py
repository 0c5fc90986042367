"""Every applyTo, operation, match field and ordering rule of EnvoyFilter, as tables over
Bookinfo: the EnvoyFilter in, what the named proxy is sent out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pilot.envoyfilter import compile_envoy_filters
from pilot.generate import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pymesh.config.loader import load_documents
from pymesh.config.model.networking import EnvoyFilter
from pymesh.errors import UnsupportedError, ValidationError
from tests.pilot.generate._mesh import BOOKINFO, Mesh, build_mesh

HCM = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"
BUFFER = {
    "name": "envoy.filters.http.buffer",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
        "max_request_bytes": 1024,
    },
}
HTTP_CHAIN = {"filterChain": {"filter": {"name": HCM}}}
SOURCE = {"source_cluster": {}}
TYPE = "type.googleapis.com/"


def envoy_filter(*patches: dict[str, Any], namespace: str = "default", **spec: Any) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": spec.pop("name", "ef"), "namespace": namespace},
        "spec": {"configPatches": list(patches), **spec},
    }


def mesh_with(tmp_path: Path, *filters: dict, mode: str | None = None) -> Mesh:
    path = tmp_path / "filters.yaml"
    path.write_text(yaml.safe_dump_all(filters))
    return build_mesh(BOOKINFO, "bookinfo/networking/bookinfo-gateway.yaml", path, mode=mode)


def http_filters(mesh: Mesh, node: str, listener: str) -> list[str]:
    [found] = [d for d in mesh.dicts(node, LISTENER_TYPE) if d["name"] == listener]
    names = []
    for chain in found["filter_chains"]:
        for item in chain["filters"]:
            if item["name"] == HCM:
                names.append([f["name"] for f in item["typed_config"]["http_filters"]])
    return names[0]


def http_patch(operation: str, sub: str | None = None, value: Any = BUFFER, **match: Any) -> dict:
    chain: dict[str, Any] = {"filter": {"name": HCM}}
    if sub is not None:
        chain["filter"]["subFilter"] = {"name": sub}
    return {
        "applyTo": "HTTP_FILTER",
        "match": {"context": "SIDECAR_OUTBOUND", "listener": {"filterChain": chain}, **match},
        "patch": {"operation": operation, "value": value},
    }


BASE = [FAULT, CORS, ROUTER]
B = "envoy.filters.http.buffer"


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (http_patch("INSERT_BEFORE", ROUTER), [FAULT, CORS, B, ROUTER]),
        (http_patch("INSERT_BEFORE"), [B, FAULT, CORS, ROUTER]),
        (http_patch("INSERT_AFTER", FAULT), [FAULT, B, CORS, ROUTER]),
        (http_patch("INSERT_AFTER"), [FAULT, CORS, ROUTER, B]),
        (http_patch("INSERT_FIRST", ROUTER), [B, FAULT, CORS, ROUTER]),
        (http_patch("ADD"), [FAULT, CORS, ROUTER, B]),
        (http_patch("REPLACE", CORS), [FAULT, B, ROUTER]),
        (http_patch("REMOVE", CORS, value=None), [FAULT, ROUTER]),
        # a sub-filter that is not there: nothing inserted
        (http_patch("INSERT_BEFORE", "envoy.filters.http.missing"), BASE),
        # another context: nothing
        ({**http_patch("ADD"), "match": {"context": "SIDECAR_INBOUND"}}, BASE),
        # the listener's port must match
        (http_patch("ADD", listener={"portNumber": 9080, **HTTP_CHAIN}), [*BASE, B]),
        (http_patch("ADD", listener={"portNumber": 9999, **HTTP_CHAIN}), BASE),
    ],
)
def test_http_filter_operations(tmp_path: Path, patch: dict, expected: list[str]) -> None:
    if patch["patch"]["value"] is None:
        del patch["patch"]["value"]
    if "listener" in patch["match"] and "filterChain" not in patch["match"]["listener"]:
        patch["match"]["listener"]["filterChain"] = {"filter": {"name": HCM}}
    mesh = mesh_with(tmp_path, envoy_filter(patch))
    assert http_filters(mesh, "productpage-v1", "0.0.0.0_9080") == expected


def test_http_filter_merge_changes_the_typed_config_field_by_field(tmp_path: Path) -> None:
    patch = http_patch(
        "MERGE",
        ROUTER,
        value={
            "name": ROUTER,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                "suppress_envoy_headers": True,
            },
        },
    )
    mesh = mesh_with(tmp_path, envoy_filter(patch))
    listener = mesh.by_name("productpage-v1", LISTENER_TYPE)["0.0.0.0_9080"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    router = next(f for f in hcm["http_filters"] if f["name"] == ROUTER)
    assert router["typed_config"]["suppress_envoy_headers"] is True


def route_patch(apply_to: str, operation: str, value: Any = None, **match: Any) -> dict:
    patch: dict[str, Any] = {"operation": operation}
    if value is not None:
        patch["value"] = value
    return {
        "applyTo": apply_to,
        "match": {"context": "SIDECAR_OUTBOUND", "routeConfiguration": match},
        "patch": patch,
    }


REVIEWS = "reviews.default.svc.cluster.local:9080"
EXTRA_ROUTE = {"name": "extra", "match": {"prefix": "/extra"}, "direct_response": {"status": 418}}


def route_table(mesh: Mesh, name: str = "9080") -> dict[str, dict[str, Any]]:
    [rc] = [r for r in mesh.dicts("productpage-v1", ROUTE_TYPE) if r["name"] == name]
    return {v["name"]: v for v in rc["virtual_hosts"]}


@pytest.mark.parametrize(
    ("patch", "check"),
    [
        (route_patch("VIRTUAL_HOST", "MERGE", {"rate_limits": [{"actions": [SOURCE]}]},
                     vhost={"name": REVIEWS}),
         lambda v: "rate_limits" in v[REVIEWS] and "rate_limits" not in v["allow_any"]),
        (route_patch("VIRTUAL_HOST", "REMOVE", vhost={"name": REVIEWS}),
         lambda v: REVIEWS not in v),
        (route_patch("VIRTUAL_HOST", "ADD", {"name": "new", "domains": ["new.example"],
                                            "routes": [EXTRA_ROUTE]}, portNumber=9080),
         lambda v: v["new"]["domains"] == ["new.example"]),
        (route_patch("VIRTUAL_HOST", "REPLACE", {"name": REVIEWS, "domains": ["only"],
                                                "routes": [EXTRA_ROUTE]}, vhost={"name": REVIEWS}),
         lambda v: v[REVIEWS]["domains"] == ["only"]),
        (route_patch("HTTP_ROUTE", "INSERT_BEFORE", EXTRA_ROUTE,
                     vhost={"name": REVIEWS, "route": {"name": "default"}}),
         lambda v: [r["name"] for r in v[REVIEWS]["routes"]] == ["extra", "default"]),
        (route_patch("HTTP_ROUTE", "INSERT_AFTER", EXTRA_ROUTE,
                     vhost={"name": REVIEWS, "route": {"name": "default"}}),
         lambda v: [r["name"] for r in v[REVIEWS]["routes"]] == ["default", "extra"]),
        (route_patch("HTTP_ROUTE", "ADD", EXTRA_ROUTE, vhost={"name": REVIEWS}),
         lambda v: [r["name"] for r in v[REVIEWS]["routes"]] == ["default", "extra"]),
        (route_patch("HTTP_ROUTE", "REMOVE", vhost={"name": REVIEWS, "route": {"action": "ROUTE"}}),
         lambda v: "routes" not in v[REVIEWS] and v["allow_any"]["routes"]),
        (route_patch("HTTP_ROUTE", "MERGE", {"route": {"timeout": "3s"}},
                     vhost={"name": REVIEWS, "route": {"name": "default"}}),
         lambda v: v[REVIEWS]["routes"][0]["route"]["timeout"] == "3s"),
        # REDIRECT does not match a forwarding route
        (route_patch("HTTP_ROUTE", "REMOVE", vhost={"route": {"action": "REDIRECT"}}),
         lambda v: len(v[REVIEWS]["routes"]) == 1),
        # another port: nothing
        (route_patch("VIRTUAL_HOST", "REMOVE", portNumber=8080, vhost={"name": REVIEWS}),
         lambda v: REVIEWS in v),
    ],
)  # fmt: skip
def test_route_operations(tmp_path: Path, patch: dict, check: Any) -> None:
    mesh = mesh_with(tmp_path, envoy_filter(patch))
    assert check(route_table(mesh))


def test_route_configuration_merge(tmp_path: Path) -> None:
    patch = route_patch(
        "ROUTE_CONFIGURATION",
        "MERGE",
        {"request_headers_to_add": [{"header": {"key": "x-rc", "value": "1"}}]},
        portNumber=9080,
    )  # fmt: skip
    mesh = mesh_with(tmp_path, envoy_filter(patch))
    [rc] = [r for r in mesh.dicts("productpage-v1", ROUTE_TYPE) if r["name"] == "9080"]
    assert rc["request_headers_to_add"][0]["header"]["key"] == "x-rc"


def test_process_mode_merged_table_matches_per_virtual_host(tmp_path: Path) -> None:
    patch = route_patch("VIRTUAL_HOST", "REMOVE", portNumber=9080, vhost={"name": REVIEWS})
    mesh = mesh_with(tmp_path, envoy_filter(patch), mode="process")
    assert REVIEWS not in route_table(mesh, "pymesh-outbound")
    assert "ratings.default.svc.cluster.local:9080" in route_table(mesh, "pymesh-outbound")


def cluster_patch(operation: str, value: Any = None, **match: Any) -> dict:
    patch: dict[str, Any] = {"operation": operation}
    if value is not None:
        patch["value"] = value
    return {"applyTo": "CLUSTER", "match": {"cluster": match} if match else {}, "patch": patch}


RATINGS = "outbound|9080||ratings.default.svc.cluster.local"


@pytest.mark.parametrize(
    ("patch", "check"),
    [
        (cluster_patch("MERGE", {"connect_timeout": "3s"},
                       service="ratings.default.svc.cluster.local"),
         lambda c: c[RATINGS]["connect_timeout"] == "3s"
         and c["outbound|9080||reviews.default.svc.cluster.local"]["connect_timeout"] == "10s"),
        (cluster_patch("REMOVE", name=RATINGS), lambda c: RATINGS not in c),
        (cluster_patch("REMOVE", portNumber=9999), lambda c: RATINGS in c),
        (cluster_patch("ADD", {"name": "extra", "type": "STATIC", "connect_timeout": "1s"}),
         lambda c: c["extra"]["type"] == "STATIC"),
        (cluster_patch("REPLACE", {"name": RATINGS, "type": "STATIC", "connect_timeout": "2s"},
                       name=RATINGS),
         lambda c: c[RATINGS]["type"] == "STATIC" and "eds_cluster_config" not in c[RATINGS]),
    ],
)  # fmt: skip
def test_cluster_operations(tmp_path: Path, patch: dict, check: Any) -> None:
    mesh = mesh_with(tmp_path, envoy_filter(patch))
    assert check(mesh.by_name("productpage-v1", CLUSTER_TYPE))


def test_listener_and_filter_chain_and_network_filter_operations(tmp_path: Path) -> None:
    filters = envoy_filter(
        {"applyTo": "LISTENER", "match": {"listener": {"portNumber": 9080}},
         "patch": {"operation": "MERGE", "value": {"per_connection_buffer_limit_bytes": 4096}}},
        {"applyTo": "LISTENER", "match": {"context": "SIDECAR_OUTBOUND"},
         "patch": {"operation": "ADD", "value": {
             "name": "extra",
             "address": {"socket_address": {"address": "0.0.0.0", "port_value": 7777}}}}},
        {"applyTo": "FILTER_CHAIN", "match": {"listener": {"name": "0.0.0.0_9080"}},
         "patch": {"operation": "MERGE", "value": {"name": "patched-chain"}}},
        {"applyTo": "NETWORK_FILTER", "match": {"listener": {"name": "0.0.0.0_9080", **HTTP_CHAIN}},
         "patch": {"operation": "INSERT_BEFORE", "value": {
             "name": "envoy.filters.network.connection_limit",
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network."
                                       "connection_limit.v3.ConnectionLimit",
                              "stat_prefix": "cl", "max_connections": 10}}}},
        {"applyTo": "LISTENER", "match": {"listener": {"name": "virtualOutbound"}},
         "patch": {"operation": "REMOVE"}},
    )  # fmt: skip
    mesh = mesh_with(tmp_path, filters)
    listeners = mesh.by_name("productpage-v1", LISTENER_TYPE)
    assert "virtualOutbound" not in listeners
    assert listeners["extra"]["address"]["socket_address"]["port_value"] == 7777
    patched = listeners["0.0.0.0_9080"]
    assert patched["per_connection_buffer_limit_bytes"] == 4096
    [chain] = patched["filter_chains"]
    assert chain["name"] == "patched-chain"
    assert [f["name"] for f in chain["filters"]] == ["envoy.filters.network.connection_limit", HCM]
    # the gateway is another context: not patched
    assert "extra" not in mesh.by_name("gateway", LISTENER_TYPE)


def test_priority_root_namespace_and_selectors(tmp_path: Path) -> None:
    def adder(name: str) -> dict:
        return http_patch("INSERT_BEFORE", ROUTER, value={**BUFFER, "name": name})

    mesh = mesh_with(
        tmp_path,
        # root namespace, no selector: every proxy of the mesh; priority orders the inserts
        envoy_filter(adder("late"), namespace="istio-system", name="a", priority=10),
        envoy_filter(adder("early"), namespace="istio-system", name="b", priority=-5),
        # the workload's namespace, selected by label
        envoy_filter(adder("reviews-only"), name="c",
                     workloadSelector={"labels": {"app": "reviews"}}),
        # another namespace: never applies to default's workloads
        envoy_filter(adder("elsewhere"), namespace="other", name="d"),
    )  # fmt: skip
    chain = http_filters(mesh, "productpage-v1", "0.0.0.0_9080")
    assert chain == [FAULT, CORS, "early", "late", ROUTER]
    chain = http_filters(mesh, "reviews-v1", "0.0.0.0_9080")
    # one order across namespaces: by priority
    assert chain == [FAULT, CORS, "early", "reviews-only", "late", ROUTER]


@pytest.mark.parametrize(
    ("patch", "path", "message", "error"),
    [
        (http_patch("ADD", value={"name": "x", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "d", "timeoutx": "1s"}}),
         "patch.value.typed_config.timeoutx", "has no field named 'timeoutx'", ValidationError),
        (http_patch("ADD", value={"name": "x", "typed_config": {"@type": TYPE + "no.such.Type"}}),
         "patch.value.typed_config.@type", "unknown type", ValidationError),
        (route_patch("VIRTUAL_HOST", "MERGE", {"rate_limits": [{"actions": [{"request_h": {}}]}]}),
         "patch.value.rate_limits[0].actions[0].request_h", "no field named", ValidationError),
        (route_patch("VIRTUAL_HOST", "MERGE", {"rate_limits": [{"stage": "x"}]}),
         "patch.value.rate_limits[0].stage", "", ValidationError),
        (http_patch("ADD", value={"name": "x", "typed_config": {
            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": TYPE + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "value": {"stat_prefix": "p", "token_bucket": {"max_tokens": "many"}}}}),
         "patch.value.typed_config.value.token_bucket.max_tokens", "", ValidationError),
        (route_patch("ROUTE_CONFIGURATION", "ADD", {"name": "x"}), "patch.operation",
         "ADD has no effect on ROUTE_CONFIGURATION", ValidationError),
        ({"applyTo": "BOOTSTRAP", "patch": {"operation": "MERGE", "value": {"node": {}}}},
         "applyTo", "not supported by pymesh", UnsupportedError),
    ],
)  # fmt: skip
def test_values_envoy_rejects_are_errors_with_paths(
    patch: dict, path: str, message: str, error: type
) -> None:
    [res] = load_documents(json.dumps(envoy_filter(patch)), "ef.yaml").resources
    assert isinstance(res.spec, EnvoyFilter)
    [compiled] = compile_envoy_filters([res])
    assert compiled.patches == ()
    [found] = compiled.errors
    assert type(found) is error
    assert found.path == f"spec.configPatches[0].{path}"
    assert message in found.message
    assert found.source == "ef.yaml"


def test_a_patch_for_one_workload_leaves_alike_workloads_alone(tmp_path: Path) -> None:
    """Proxies alike share the clusters pilot parses once per push; a patch selected by one
    of them changes its own copy only, whichever is generated first."""
    patch = cluster_patch("MERGE", {"connect_timeout": "3s"}, name=RATINGS)
    mesh = mesh_with(tmp_path, envoy_filter(patch, workloadSelector={"labels": {"version": "v1"}}))
    for _ in range(2):
        assert mesh.by_name("reviews-v1", CLUSTER_TYPE)[RATINGS]["connect_timeout"] == "3s"
        assert mesh.by_name("reviews-v2", CLUSTER_TYPE)[RATINGS]["connect_timeout"] == "10s"
