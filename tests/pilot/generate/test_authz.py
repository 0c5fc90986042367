"""AuthorizationPolicy → RBAC / ext_authz filters, in istiod's shape (names, order, matchers),
on sidecars' inbound HTTP and TCP chains and on the ingress gateway; and the real Envoy
accepts all of it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pilot.generate import LISTENER_TYPE
from pilot.model import MeshConfig
from pymesh.config.loader import load_path
from pymesh.config.model.common import FrozenMap
from pymesh.config.snapshot import ConfigSnapshot
from tests.pilot.generate._envoy import envoy_validate, static_bootstrap
from tests.pilot.generate._mesh import DATA, Mesh, gateway_node, sample, workload_nodes

SECURITY = "docs-extracted/security/"
_GATEWAY_APP = {"app": "istio-ingressgateway"}
PROVIDERS = MeshConfig.from_yaml(
    """
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    includeRequestHeadersInCheck: ["x-ext-authz"]
    headersToUpstreamOnAllow: ["x-ext-authz-*"]
- name: sample-ext-authz-grpc
  envoyExtAuthzGrpc:
    service: ext-authz.foo.svc.cluster.local
    port: 9000
    timeout: 0.5s
"""
)


def _mesh(*files: tuple[Path, str], mesh: MeshConfig | None = None) -> Mesh:
    """Files each loaded with a default namespace (Istio's tasks put their apps in foo)."""
    resources: list[Any] = []
    for path, namespace in files:
        resources.extend(load_path(path, default_namespace=namespace).resources)
    snapshot = ConfigSnapshot(tuple(resources)).resources
    nodes = workload_nodes(snapshot)
    gateway = gateway_node()
    # Istio's ingress gateway pods carry both labels; the tasks select either.
    nodes["gateway"] = replace(gateway, labels=FrozenMap({**gateway.labels, **_GATEWAY_APP}))
    return Mesh(snapshot, nodes, mesh or MeshConfig())


def _inbound_chains(mesh: Mesh, node: str) -> dict[str, dict[str, Any]]:
    listener = mesh.by_name(node, LISTENER_TYPE)["virtualInbound"]
    return {c["name"]: c for c in listener["filter_chains"]}


def _http_filters(chain: dict[str, Any]) -> list[dict[str, Any]]:
    hcm = chain["filters"][-1]["typed_config"]
    filters: list[dict[str, Any]] = hcm["http_filters"]
    return filters


def _names(filters: list[dict[str, Any]]) -> list[str]:
    return [f["name"] for f in filters]


def _bookinfo_with(*policies: str) -> Mesh:
    files = [(sample("bookinfo/platform/kube/bookinfo.yaml"), "default")]
    files += [(sample(SECURITY + p), "default") for p in policies]
    return _mesh(*files)


def test_no_policy_no_filter() -> None:
    mesh = _bookinfo_with()
    chain = _inbound_chains(mesh, "details-v1")["0.0.0.0_9080"]
    assert _names(_http_filters(chain)) == [
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "envoy.filters.http.router",
    ]


def test_deny_all_and_viewer_policies() -> None:
    mesh = _bookinfo_with("authz-http/1-deny-all.yaml", "authz-http/3-details-viewer.yaml")
    rbac = _http_filters(_inbound_chains(mesh, "details-v1")["0.0.0.0_9080"])[0]
    assert rbac["name"] == "envoy.filters.http.rbac"
    config = rbac["typed_config"]
    assert "action" not in config["rules"]  # ALLOW is Envoy's default
    policies = config["rules"]["policies"]
    assert sorted(policies) == [
        "ns[default]-policy[deny-all]-rule[0]",
        "ns[default]-policy[details-viewer]-rule[0]",
    ]
    # spec: {} never matches, so an ALLOW filter holding only it denies everything.
    assert policies["ns[default]-policy[deny-all]-rule[0]"] == {
        "permissions": [{"not_rule": {"any": True}}],
        "principals": [{"not_id": {"any": True}}],
    }
    viewer = policies["ns[default]-policy[details-viewer]-rule[0]"]
    assert viewer["principals"] == [
        {
            "and_ids": {
                "ids": [
                    {
                        "or_ids": {
                            "ids": [
                                {
                                    "authenticated": {
                                        "principal_name": {
                                            "exact": "spiffe://cluster.local/ns/default/sa/"
                                            "bookinfo-productpage"
                                        }
                                    }
                                }
                            ]
                        }
                    }
                ]
            }
        }
    ]
    assert viewer["permissions"] == [
        {
            "and_rules": {
                "rules": [
                    {
                        "or_rules": {
                            "rules": [
                                {"header": {"name": ":method", "string_match": {"exact": "GET"}}}
                            ]
                        }
                    }
                ]
            }
        }
    ]
    # ratings only sees the namespace-wide deny-all.
    ratings = _http_filters(_inbound_chains(mesh, "ratings-v1")["0.0.0.0_9080"])[0]
    assert list(ratings["typed_config"]["rules"]["policies"]) == [
        "ns[default]-policy[deny-all]-rule[0]"
    ]


def test_outbound_and_other_namespaces_get_no_rbac() -> None:
    mesh = _bookinfo_with("authz-http/1-deny-all.yaml")
    outbound = mesh.by_name("productpage-v1", LISTENER_TYPE)["0.0.0.0_9080"]
    assert "envoy.filters.http.rbac" not in _names(_http_filters(outbound["filter_chains"][0]))
    gateway = mesh.by_name("gateway", LISTENER_TYPE)
    for listener in gateway.values():
        for chain in listener["filter_chains"]:
            assert "envoy.filters.http.rbac" not in _names(_http_filters(chain))


def test_full_rule_matchers() -> None:
    mesh = _mesh((DATA / "authz-full.yaml", "foo"), mesh=PROVIDERS)
    filters = _http_filters(_inbound_chains(mesh, "httpbin")["0.0.0.0_80"])
    assert _names(filters) == [
        "envoy.filters.http.rbac",  # CUSTOM: shadow rules naming the policy
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.rbac",  # AUDIT
        "envoy.filters.http.rbac",  # DENY (dry-run only)
        "envoy.filters.http.rbac",  # ALLOW
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "envoy.filters.http.router",
    ]
    allow = filters[4]["typed_config"]["rules"]["policies"]
    sa_rule = allow["ns[foo]-policy[httpbin-1]-rule[0]"]["principals"][0]["and_ids"]["ids"]
    assert sa_rule[0]["or_ids"]["ids"][1] == {
        "authenticated": {
            "principal_name": {"safe_regex": {"regex": "spiffe://.+/ns/foo/(.+/|)sa/sa-only(/.+)?"}}
        }
    }
    full = allow["ns[foo]-policy[httpbin-1]-rule[1]"]
    rules = full["permissions"][0]["and_rules"]["rules"]
    hosts = rules[0]["or_rules"]["rules"]
    suffix = {"suffix": ".suffix.com", "ignore_case": True}
    assert hosts[1] == {"header": {"name": ":authority", "string_match": suffix}}
    assert hosts[3] == {"header": {"name": ":authority", "present_match": True}}
    paths = rules[4]["or_rules"]["rules"]
    assert paths[3] == {"url_path": {"path": {"safe_regex": {"regex": ".+"}}}}
    assert paths[4]["uri_template"]["typed_config"]["path_template"] == "/path/template/*"
    assert paths[5]["uri_template"]["typed_config"]["path_template"] == "/**/path/template"
    ids = full["principals"][0]["and_ids"]["ids"]
    principals = ids[0]["or_ids"]["ids"]
    assert principals[2] == {
        "authenticated": {
            "principal_name": {"safe_regex": {"regex": "spiffe://.*-suffix-principal"}}
        }
    }
    request_principal = ids[2]["or_ids"]["ids"][0]["and_ids"]["ids"]
    assert request_principal[0]["metadata"] == {
        "filter": "envoy.filters.http.jwt_authn",
        "path": [{"key": "payload"}, {"key": "iss"}],
        "value": {"string_match": {"exact": "requestPrincipals"}},
    }
    claims = [i["metadata"] for i in ids if "metadata" in i]
    nested = next(c for c in claims if c["path"][-1] == {"key": "nested2"})
    assert nested["value"]["or_match"]["value_matchers"][0] == {
        "list_match": {"one_of": {"string_match": {"exact": "nested"}}}
    }
    dry = filters[3]["typed_config"]
    assert "rules" not in dry
    assert dry["shadow_rules"]["action"] == "DENY"
    assert list(dry["shadow_rules"]["policies"]) == ["ns[foo]-policy[deny-path-dry-run]-rule[0]"]
    assert dry["shadow_rules_stat_prefix"] == "istio_dry_run_deny_"
    assert filters[2]["typed_config"]["rules"]["action"] == "LOG"


def test_custom_filters() -> None:
    mesh = _mesh((DATA / "authz-full.yaml", "foo"), mesh=PROVIDERS)
    filters = _http_filters(_inbound_chains(mesh, "httpbin")["0.0.0.0_80"])
    rbac, ext = filters[0]["typed_config"], filters[1]["typed_config"]
    assert "rules" not in rbac
    assert list(rbac["shadow_rules"]["policies"]) == [
        "istio-ext-authz-sample-ext-authz-http-ns[foo]-policy[ext-authz]-rule[0]"
    ]
    assert rbac["shadow_rules_stat_prefix"] == "istio_ext_authz_"
    assert ext["filter_enabled_metadata"] == {
        "filter": "envoy.filters.http.rbac",
        "path": [{"key": "istio_ext_authz_shadow_effective_policy_id"}],
        "value": {"string_match": {"prefix": "istio-ext-authz-sample-ext-authz-http"}},
    }
    assert ext["http_service"]["server_uri"] == {
        "uri": "http://ext-authz.foo.svc.cluster.local",
        "cluster": "outbound|8000||ext-authz.foo.svc.cluster.local",
        "timeout": "600s",
    }
    assert ext["allowed_headers"] == {"patterns": [{"exact": "x-ext-authz", "ignore_case": True}]}


def test_custom_without_provider_fails_closed() -> None:
    mesh = _mesh((DATA / "authz-full.yaml", "foo"))  # no extensionProviders
    filters = _http_filters(_inbound_chains(mesh, "httpbin")["0.0.0.0_80"])
    deny = filters[0]["typed_config"]["rules"]
    assert deny["action"] == "DENY"
    assert list(deny["policies"]) == [
        "istio-ext-authz-sample-ext-authz-http-ns[foo]-policy[ext-authz]-rule[0]"
        "-deny-due-to-bad-CUSTOM-action"
    ]
    assert "envoy.filters.http.ext_authz" not in _names(filters)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # ALLOW on ports: the ports stay.
        ("1-authorizationpolicy-tcp-allow-ports-9000-9001.yaml", ("ALLOW", True)),
        # ALLOW GET on a TCP chain cannot grant anything: no policy, so everything is denied.
        ("2-authorizationpolicy-tcp-allow-get-port-9000.yaml", ("ALLOW", False)),
        # DENY GET: the HTTP-only method is dropped, denying every connection.
        ("3-authorizationpolicy-tcp-deny-get.yaml", ("DENY", True)),
        ("4-authorizationpolicy-tcp-deny-get-port-9000.yaml", ("DENY", True)),
    ],
)
def test_tcp_chains(policy: str, expected: tuple[str, bool]) -> None:
    mesh = _mesh(
        (sample("tcp-echo/tcp-echo.yaml"), "foo"), (sample(SECURITY + "authz-tcp/" + policy), "foo")
    )
    chains = _inbound_chains(mesh, "tcp-echo")
    filters = chains["0.0.0.0_9000"]["filters"]
    assert [f["name"] for f in filters] == [
        "envoy.filters.network.rbac",
        "envoy.filters.network.tcp_proxy",
    ]
    # The passthrough chain (port 9002) is covered too.
    assert chains["virtualInbound-catchall-tcp"]["filters"][0]["name"] == (
        "envoy.filters.network.rbac"
    )
    config = filters[0]["typed_config"]
    action, has_policy = expected
    assert config["stat_prefix"] == "tcp."
    assert config["rules"].get("action", "ALLOW") == action
    policies = config["rules"].get("policies", {})
    assert bool(policies) == has_policy
    if policy.startswith("3-"):
        assert policies["ns[foo]-policy[tcp-policy]-rule[0]"]["permissions"] == [
            {"and_rules": {"rules": [{"any": True}]}}
        ]
    if policy.startswith("4-"):
        assert policies["ns[foo]-policy[tcp-policy]-rule[0]"]["permissions"] == [
            {"and_rules": {"rules": [{"or_rules": {"rules": [{"destination_port": 9000}]}}]}}
        ]


def test_gateway_policy() -> None:
    mesh = _mesh(
        (sample("httpbin/httpbin.yaml"), "foo"),
        (sample("httpbin/httpbin-gateway.yaml"), "foo"),
        (sample(SECURITY + "authz-ingress/1-authorizationpolicy-ingress-allow-ipblocks.yaml"), "x"),
    )
    for listener in mesh.by_name("gateway", LISTENER_TYPE).values():
        for chain in listener["filter_chains"]:
            rbac = _http_filters(chain)[0]["typed_config"]
            policy = rbac["rules"]["policies"]["ns[istio-system]-policy[ingress-policy]-rule[0]"]
            ids = policy["principals"][0]["and_ids"]["ids"][0]["or_ids"]["ids"]
            assert ids == [
                {"direct_remote_ip": {"address_prefix": "1.2.3.4", "prefix_len": 32}},
                {"direct_remote_ip": {"address_prefix": "5.6.7.0", "prefix_len": 24}},
            ]


@pytest.mark.envoy
@pytest.mark.parametrize("mode", [None, "process"])
def test_envoy_accepts_every_field(envoy_binary: str, tmp_path: Path, mode: str | None) -> None:
    resources = load_path(DATA / "authz-full.yaml").resources
    mesh = Mesh(resources, workload_nodes(resources, mode=mode), PROVIDERS)
    for node in ("httpbin", "tcp-echo"):
        ok, output = envoy_validate(envoy_binary, static_bootstrap(mesh, node), tmp_path / node)
        assert ok, output
