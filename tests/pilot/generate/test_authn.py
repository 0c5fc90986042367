"""RequestAuthentication → jwt_authn in istiod's shape, ahead of the RBAC filters that read its
payload; the real Envoy accepts the output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pilot.generate import LISTENER_TYPE
from pymesh.config.loader import load_documents, load_path
from pymesh.config.snapshot import ConfigSnapshot
from tests.pilot.generate._envoy import envoy_validate, static_bootstrap
from tests.pilot.generate._mesh import Mesh, gateway_node, sample, workload_nodes

JWT_TASK = "docs-extracted/security/authz-jwt/"
JWT_RA = JWT_TASK + "1-requestauthentication-jwt-example.yaml"
TWO_ISSUERS = """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: two, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: second@example.com
    jwks: '%s'
    audiences: [api]
    fromHeaders: [{name: x-jwt, prefix: "Token "}]
    fromParams: [token]
    fromCookies: [session]
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
    timeout: 2s
  - issuer: first@example.com
    jwksUri: http://httpbin.foo.svc.cluster.local:8000/jwks
"""


def _mesh(*texts: str, files: tuple[str, ...] = ()) -> Mesh:
    resources: list[Any] = list(
        load_path(sample("httpbin/httpbin.yaml"), default_namespace="foo").resources
    )
    for f in files:
        resources.extend(load_path(sample(f)).resources)
    for text in texts:
        resources.extend(load_documents(text).resources)
    snapshot = ConfigSnapshot(tuple(resources)).resources
    nodes = workload_nodes(snapshot)
    nodes["gateway"] = gateway_node()
    return Mesh(snapshot, nodes)


def _filters(mesh: Mesh, node: str = "httpbin") -> list[dict[str, Any]]:
    listener = mesh.by_name(node, LISTENER_TYPE)["virtualInbound"]
    for chain in listener["filter_chains"]:
        config = chain["filters"][-1]["typed_config"]
        if "http_filters" in config:
            filters: list[dict[str, Any]] = config["http_filters"]
            return filters
    raise AssertionError("no HTTP chain")


def _jwks() -> str:
    return sample("jwt/jwks.json").read_text().replace("\n", "")


def test_task_policy_and_claims() -> None:
    mesh = _mesh(files=(JWT_RA, JWT_TASK + "3-authorizationpolicy-require-jwt-group1-claim.yaml"))
    filters = _filters(mesh)
    assert [f["name"] for f in filters[:2]] == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.rbac",
    ]
    config = filters[0]["typed_config"]
    provider = config["providers"]["origins-0"]
    assert provider["issuer"] == "testing@secure.istio.io"
    assert provider["payload_in_metadata"] == "payload"
    assert (
        provider["remote_jwks"]["http_uri"]["cluster"] == "outbound|443||raw.githubusercontent.com"
    )
    assert config["rules"] == [
        {
            "match": {"prefix": "/"},
            "requires": {
                "requires_any": {
                    "requirements": [{"provider_name": "origins-0"}, {"allow_missing": {}}]
                }
            },
        }
    ]
    assert config["bypass_cors_preflight"] is True
    ids = filters[1]["typed_config"]["rules"]["policies"]["ns[foo]-policy[require-jwt]-rule[0]"]
    claim = ids["principals"][0]["and_ids"]["ids"][1]["metadata"]
    assert claim["path"] == [{"key": "payload"}, {"key": "groups"}]


def test_two_issuers() -> None:
    mesh = _mesh(TWO_ISSUERS % _jwks())
    config = _filters(mesh)[0]["typed_config"]
    first, second = config["providers"]["origins-0"], config["providers"]["origins-1"]
    assert first["issuer"] == "first@example.com"  # sorted by issuer
    assert first["remote_jwks"]["http_uri"] == {
        "uri": "http://httpbin.foo.svc.cluster.local:8000/jwks",
        "cluster": "outbound|8000||httpbin.foo.svc.cluster.local",
        "timeout": "5s",
    }
    assert second["local_jwks"]["inline_string"].startswith("{")
    assert second["from_headers"] == [{"name": "x-jwt", "value_prefix": "Token "}]
    assert second["from_params"] == ["token"] and second["from_cookies"] == ["session"]
    assert second["forward"] is True and second["forward_payload_header"] == "x-jwt-payload"
    assert second["claim_to_headers"] == [{"header_name": "x-sub", "claim_name": "sub"}]
    assert second["audiences"] == ["api"]
    requires = config["rules"][0]["requires"]["requires_any"]["requirements"]
    assert requires[:2] == [{"provider_name": "origins-0"}, {"provider_name": "origins-1"}]
    assert len(requires[2]["requires_all"]["requirements"]) == 2


def test_gateway_reroutes_after_verification() -> None:
    ingress = "docs-extracted/security/jwt-route/1-requestauthentication-ingress-jwt.yaml"
    mesh = _mesh(files=(ingress, "httpbin/httpbin-gateway.yaml"))
    for listener in mesh.by_name("gateway", LISTENER_TYPE).values():
        hcm = listener["filter_chains"][0]["filters"][-1]["typed_config"]
        jwt = hcm["http_filters"][0]["typed_config"]
        assert jwt["providers"]["origins-0"]["clear_route_cache"] is True


@pytest.mark.envoy
@pytest.mark.parametrize("mode", [None, "process"])
def test_envoy_accepts_jwt_authn(envoy_binary: str, tmp_path: Path, mode: str | None) -> None:
    resources = [
        *load_path(sample("httpbin/httpbin.yaml"), default_namespace="foo").resources,
        *load_documents(TWO_ISSUERS % _jwks()).resources,
        *load_path(
            sample(JWT_TASK + "3-authorizationpolicy-require-jwt-group1-claim.yaml")
        ).resources,
    ]
    mesh = Mesh(tuple(resources), workload_nodes(resources, mode=mode))
    ok, output = envoy_validate(envoy_binary, static_bootstrap(mesh, "httpbin"), tmp_path)
    assert ok, output
