"""JWT at the ingress gateway, on Envoy and on pymesh, configured by pilot from Istio's task
files: routing on a claim (jwt-route: the route is chosen again once the token is verified)
and requiring a token (authn-policy's DENY ``notRequestPrincipals``). The tasks' ``jwksUri``
points to the internet; the same keys are given inline here."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pilot.generate import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pymesh.config.loader import load_documents, load_path
from pymesh.config.snapshot import ConfigSnapshot
from tests.pilot.generate._mesh import Mesh, gateway_node, sample, workload_nodes
from tests.support import POLICY_NET, address
from tests.support.envoy import PROXY_KINDS, ProxyProcess, make_proxy
from tests.support.httpclient import Response, request
from tests.support.upstream import Echo

pytestmark = pytest.mark.envoy

SECURITY = "docs-extracted/security/"
RA = """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ingress-jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '%s'
"""

Gateway = Callable[..., Awaitable[tuple[str, int]]]


def _static(mesh: Mesh, node: str) -> dict[str, Any]:
    """The gateway's listeners with their routes inline, and the clusters they route to with
    their endpoints as STATIC clusters (no control plane needed)."""
    routes = {r["name"]: r for r in mesh.dicts(node, ROUTE_TYPE)}
    listeners = mesh.dicts(node, LISTENER_TYPE)
    for listener in listeners:
        for chain in listener["filter_chains"]:
            config = chain["filters"][-1]["typed_config"]
            if "rds" in config:
                name = config.pop("rds")["route_config_name"]
                config["route_config"] = copy.deepcopy(routes[name])
    endpoints = {e["cluster_name"]: e for e in mesh.dicts(node, ENDPOINT_TYPE)}
    clusters = [
        {"name": c["name"], "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": endpoints[c["name"]]}
        for c in mesh.dicts(node, CLUSTER_TYPE)
        if c["name"] in endpoints and "httpbin" in c["name"]
    ]  # fmt: skip
    return {"static_resources": {"listeners": listeners, "clusters": clusters}}


@pytest.fixture(params=PROXY_KINDS)
async def gateway(
    request: pytest.FixtureRequest, tmp_path: Path, upstream_factory: Any
) -> AsyncIterator[Gateway]:
    kind: str = request.param
    if kind == "envoy":
        request.getfixturevalue("envoy_binary")
    tests = sorted(n for n in dir(request.module) if n.startswith("test_"))
    index = tests.index(request.node.originalname) * len(PROXY_KINDS) + PROXY_KINDS.index(kind)
    gateway_ip, pod_ip = address(POLICY_NET, 40 + 2 * index), address(POLICY_NET, 41 + 2 * index)
    started: list[ProxyProcess] = []

    async def make(*files: str) -> tuple[str, int]:
        jwks = json.dumps(json.loads(sample("jwt/jwks.json").read_text()))
        resources = [
            *load_path(sample("httpbin/httpbin.yaml"), default_namespace="foo").resources,
            *load_path(sample("httpbin/httpbin-gateway.yaml"), default_namespace="foo").resources,
            *load_documents(RA % jwks).resources,
        ]
        for f in files:
            resources.extend(load_path(sample(SECURITY + f), default_namespace="foo").resources)
        snapshot = ConfigSnapshot(tuple(resources)).resources
        httpbin = workload_nodes(snapshot, mode="process")["httpbin"]
        httpbin = replace(
            httpbin, ip=pod_ip, instance_ips=(pod_ip,), id=httpbin.id.replace(httpbin.ip, pod_ip)
        )
        nodes = {"httpbin": httpbin, "gateway": gateway_node(ip=gateway_ip, mode="process")}
        mesh = Mesh(snapshot, nodes)
        config = _static(mesh, "gateway")
        # The httpbin pod: its sidecar's inbound port, answered by an echo app here.
        for cluster in config["static_resources"]["clusters"]:
            for group in cluster["load_assignment"]["endpoints"]:
                for endpoint in group["lb_endpoints"]:
                    where = endpoint["endpoint"]["address"]["socket_address"]
                    await upstream_factory(where["address"], where["port_value"], default=Echo())
        proxy = make_proxy(kind, config, workdir=tmp_path / kind)
        started.append(proxy)
        await proxy.astart()
        return gateway_ip, 80

    yield make
    for proxy in started:
        await proxy.astop()


def _token(name: str) -> str:
    return sample(f"jwt/{name}").read_text().strip()


async def _get(where: tuple[str, int], path: str, token: str | None = None) -> Response:
    headers = [("authorization", f"Bearer {token}")] if token else []
    return await request(*where, "GET", path, headers, host_header="httpbin.example.com")


async def test_jwt_route(gateway: Gateway) -> None:
    """jwt-route: /headers reaches httpbin only for a token whose groups hold group1; without
    a token or with another token no route matches (404); a bad token is refused (401)."""
    where = await gateway("jwt-route/2-virtualservice-httpbin-route-on-jwt-claim.yaml")
    assert (await _get(where, "/headers")).status == 404
    assert (await _get(where, "/headers", _token("demo.jwt"))).status == 404
    assert (await _get(where, "/headers", "bad.token.x")).status == 401
    ok = await _get(where, "/headers", _token("groups-scope.jwt"))
    assert ok.status == 200, ok


async def test_ingress_requires_a_token(gateway: Gateway) -> None:
    """authn-policy: with the DENY notRequestPrincipals policy at the gateway, a request
    without a token is denied, one with a valid token goes through; the /headers-only
    variant denies tokenless requests to /headers only."""
    where = await gateway(
        "authn-policy/08-authorizationpolicy-frontend-ingress-deny-no-principal.yaml"
    )
    assert (await _get(where, "/ip")).status == 403
    assert (await _get(where, "/ip", _token("demo.jwt"))).status == 200
    assert (await _get(where, "/ip", "bad.token.x")).status == 401
