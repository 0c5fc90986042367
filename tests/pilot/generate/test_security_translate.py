"""The pymesh proxy takes every security filter pilot writes: the listeners of sidecars (both
modes) and of the ingress gateway under each of Istio's security task files, CUSTOM providers
and dry-run policies included, go through the proxy's own translator (what its xDS client runs
on a push) and come out with the same filters pilot wrote."""

from __future__ import annotations

from typing import Any

import pytest

from pilot.generate import LISTENER_TYPE
from pilot.model import MeshConfig
from proxy.config.model import HttpConnectionManager
from proxy.config.translate import default_registry, translate_listener
from pymesh.config.loader import load_path
from tests.pilot.generate._mesh import build_mesh, sample

SECURITY = "docs-extracted/security/"
TASKS = {
    "authz-http": ["1-deny-all.yaml", "2-productpage-viewer.yaml", "3-details-viewer.yaml"],
    "authz-deny": ["2-deny-method-get-unless-admin.yaml", "3-allow-path-ip.yaml"],
    "authz-tcp": ["1-authorizationpolicy-tcp-allow-ports-9000-9001.yaml"],
    "authz-jwt": ["3-authorizationpolicy-require-jwt-group1-claim.yaml"],
    "authz-ingress": ["2-authorizationpolicy-ingress-allow-remoteipblocks.yaml"],
    "authz-dry-run": ["1-authorizationpolicy-deny-path-headers-dry-run.yaml"],
    "authn-policy": [
        "06-requestauthentication-jwt-example-ingressgateway.yaml",
        "10-authorizationpolicy-frontend-ingress-deny-headers-path.yaml",
    ],
}
CUSTOM = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz-%s, namespace: %s}
spec:
  selector: {matchLabels: {app: %s}}
  action: CUSTOM
  provider: {name: %s}
  rules: [{to: [{operation: {paths: ["/headers"]}}]}]
"""
PROVIDERS = """
extensionProviders:
- name: http-authz
  envoyExtAuthzHttp:
    service: details.default.svc.cluster.local
    port: 9080
    includeRequestHeadersInCheck: ["x-ext-authz"]
    headersToUpstreamOnAllow: ["x-ext-authz-*"]
- name: grpc-authz
  envoyExtAuthzGrpc:
    service: ratings.default.svc.cluster.local
    port: 9080
"""


def _security_files(task: str) -> list[str]:
    files = [SECURITY + f"{task}/{name}" for name in TASKS[task]]
    if task in ("authz-jwt", "authn-policy"):
        files.insert(0, SECURITY + "authz-jwt/1-requestauthentication-jwt-example.yaml")
    return files


@pytest.mark.parametrize("mode", [None, "process"])
@pytest.mark.parametrize("task", sorted(TASKS))
def test_the_proxy_takes_every_task_s_filters(task: str, mode: str | None, tmp_path: Any) -> None:
    files = ["bookinfo/platform/kube/bookinfo.yaml", "bookinfo/networking/bookinfo-gateway.yaml"]
    # The tasks run httpbin and tcp-echo in foo.
    foo = [
        r
        for name in ("httpbin/httpbin.yaml", "tcp-echo/tcp-echo.yaml")
        for r in load_path(sample(name), default_namespace="foo").resources
    ]
    policies = tmp_path / "policies.yaml"
    policies.write_text(
        "\n---\n".join(sample(f).read_text() for f in _security_files(task))
        + "\n---\n"
        + CUSTOM % ("reviews", "default", "reviews", "http-authz")
        + "\n---\n"
        + CUSTOM % ("tcp-echo", "foo", "tcp-echo", "grpc-authz")
    )
    mesh = build_mesh(
        *files, policies, mode=mode, mesh=MeshConfig.from_yaml(PROVIDERS), resources=foo
    )
    registry = default_registry()
    seen: set[str] = set()
    for node in mesh.nodes:
        for message in mesh.generate(node, LISTENER_TYPE):
            listener = translate_listener(message, registry, message.name)
            for chain in (*listener.filter_chains, listener.default_filter_chain):
                if chain is None:
                    continue
                for nf in chain.filters:
                    seen.add(nf.name)
                    if isinstance(nf.config, HttpConnectionManager):
                        seen.update(f.name for f in nf.config.http_filters)
    assert "envoy.filters.http.rbac" in seen
    assert "envoy.filters.http.ext_authz" in seen
    if task in ("authz-jwt", "authn-policy"):
        assert "envoy.filters.http.jwt_authn" in seen
    if mode is None:  # TCP chains exist with iptables capture only
        assert {"envoy.filters.network.rbac", "envoy.filters.network.ext_authz"} <= seen
