"""The real Envoy (1.40) and the pymesh proxy enforcing what pilot generates for Istio's
security task files, unchanged: authz-deny, authz-jwt (the sample token and JWKS) and
authz-dry-run, on a process-mode httpbin sidecar (its inbound listener on
``<pod ip>:15006``). Each test runs on both proxies and asserts the task's documented outcome.

The JWKS of the tasks' ``jwksUri`` is served inline here (``jwks:`` in a RequestAuthentication
for the same issuer), since the URI points to the internet.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from pilot.generate import CLUSTER_TYPE, LISTENER_TYPE
from pymesh.config.loader import load_documents, load_path
from pymesh.config.snapshot import ConfigSnapshot
from tests.pilot.generate._mesh import Mesh, sample, workload_nodes
from tests.support import POLICY_NET, address
from tests.support.envoy import PROXY_KINDS, ProxyProcess, make_proxy
from tests.support.httpclient import Response, request
from tests.support.upstream import Echo

pytestmark = pytest.mark.envoy

SECURITY = "docs-extracted/security/"
HTTPBIN = """
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  template:
    metadata: {labels: {app: httpbin, version: v1}}
    spec:
      serviceAccountName: httpbin
      containers: [{name: httpbin, image: httpbin, ports: [{containerPort: 8000}]}]
"""
INLINE_JWKS = """
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example, namespace: foo}
spec:
  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '%s'
"""


@dataclass(frozen=True)
class Pod:
    where: tuple[str, int]  # the sidecar's inbound listener
    proxy: ProxyProcess


Sidecar = Callable[..., Awaitable[Pod]]


def _bootstrap(mesh: Mesh, node: str) -> dict[str, Any]:
    """The node's inbound listener (inline routes) and STATIC inbound clusters, as a static
    bootstrap: the outbound side needs ADS, which this test has no use for."""
    clusters = [c for c in mesh.dicts(node, CLUSTER_TYPE) if c.get("type") == "STATIC"]
    inbound = [mesh.by_name(node, LISTENER_TYPE)["virtualInbound"]]
    return {
        "node": {"id": mesh.nodes[node].id, "cluster": node},
        "static_resources": {"listeners": inbound, "clusters": clusters},
    }


@pytest.fixture(params=PROXY_KINDS)
async def sidecar(
    request: pytest.FixtureRequest, tmp_path: Path, upstream_factory: Any
) -> AsyncIterator[Sidecar]:
    """``await sidecar(*policies)`` (sample paths or YAML texts) → the httpbin pod, an echo
    app behind a sidecar (Envoy or pymesh, the fixture's parameter) configured by pilot. Each
    test has a pod address of its own, so the well-known ports never collide between parallel
    tests."""
    kind: str = request.param
    if kind == "envoy":
        request.getfixturevalue("envoy_binary")
    started: list[ProxyProcess] = []
    tests = sorted(n for n in dir(request.module) if n.startswith("test_"))
    index = tests.index(request.node.originalname) * len(PROXY_KINDS) + PROXY_KINDS.index(kind)
    pod_ip = address(POLICY_NET, 10 + index)

    async def make(*policies: str) -> Pod:
        resources = list(load_documents(HTTPBIN).resources)
        for policy in policies:
            if policy.endswith(".yaml"):
                resources.extend(load_path(sample(policy)).resources)
            else:
                resources.extend(load_documents(policy).resources)
        snapshot = ConfigSnapshot(tuple(resources)).resources
        node = workload_nodes(snapshot, mode="process")["httpbin"]
        node = replace(node, ip=pod_ip, instance_ips=(pod_ip,), id=node.id.replace(node.ip, pod_ip))
        mesh = Mesh(snapshot, {"httpbin": node})
        await upstream_factory(pod_ip, 8000, default=Echo())
        proxy = make_proxy(kind, _bootstrap(mesh, "httpbin"), workdir=tmp_path / kind)
        started.append(proxy)
        await proxy.astart()
        return Pod((pod_ip, 15006), proxy)

    yield make
    for proxy in started:
        await proxy.astop()


async def _get(
    where: tuple[str, int], path: str = "/headers", method: str = "GET", **headers: str
) -> Response:
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    return await request(*where, method, path, pairs, host_header="httpbin.foo:8000")


def _denied(resp: Response) -> bool:
    return resp.status == 403 and resp.body == b"RBAC: access denied"


async def test_authz_deny(sidecar: Sidecar) -> None:
    where = (await sidecar(SECURITY + "authz-deny/1-deny-method-get.yaml")).where
    assert _denied(await _get(where, "/get"))
    assert (await _get(where, "/post", "POST")).status == 200


async def test_authz_deny_unless_admin(sidecar: Sidecar) -> None:
    where = (await sidecar(SECURITY + "authz-deny/2-deny-method-get-unless-admin.yaml")).where
    assert _denied(await _get(where, "/get"))
    assert (await _get(where, "/get", x_token="admin")).status == 200


async def test_authz_deny_and_allow_path(sidecar: Sidecar) -> None:
    where = (
        await sidecar(
            SECURITY + "authz-deny/2-deny-method-get-unless-admin.yaml",
            SECURITY + "authz-deny/3-allow-path-ip.yaml",
        )
    ).where
    assert _denied(await _get(where, "/get"))  # the DENY policy wins
    assert (await _get(where, "/ip", x_token="admin")).status == 200
    assert _denied(await _get(where, "/get", x_token="admin"))  # not /ip: no ALLOW matches


def _jwt(name: str) -> str:
    return sample(f"jwt/{name}").read_text().strip()


def _inline_jwks() -> str:
    return INLINE_JWKS % json.dumps(json.loads(sample("jwt/jwks.json").read_text()))


async def test_authz_jwt(sidecar: Sidecar) -> None:
    where = (
        await sidecar(_inline_jwks(), SECURITY + "authz-jwt/2-authorizationpolicy-require-jwt.yaml")
    ).where
    token = _jwt("demo.jwt")
    ok = await _get(where, authorization=f"Bearer {token}")
    assert ok.status == 200
    assert _denied(await _get(where))  # no token: RequestAuthentication lets it by, RBAC does not
    bad = await _get(where, authorization="Bearer " + token[:-4] + "AAAA")
    assert (bad.status, bad.body) == (401, b"Jwt verification fails")
    assert bad.header("www-authenticate") == (
        'Bearer realm="http://httpbin.foo:8000/headers", error="invalid_token"'
    )
    garbage = await _get(where, authorization="Bearer invalidToken")
    assert (garbage.status, garbage.body) == (
        401,
        b"Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
    )


async def test_authz_jwt_claim(sidecar: Sidecar) -> None:
    where = (
        await sidecar(
            _inline_jwks(),
            SECURITY + "authz-jwt/3-authorizationpolicy-require-jwt-group1-claim.yaml",
        )
    ).where
    assert _denied(await _get(where, authorization=f"Bearer {_jwt('demo.jwt')}"))
    ok = await _get(where, authorization=f"Bearer {_jwt('groups-scope.jwt')}")
    assert ok.status == 200


async def _stat(pod: Pod, name: str) -> int:
    host, port = pod.proxy.admin
    resp = await request(host, port, "GET", f"/stats?filter=^{re.escape(name)}$")
    for line in resp.text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    every = await request(host, port, "GET", "/stats?filter=rbac")
    raise AssertionError(f"no stat {name}: {every.text}")


async def test_authz_dry_run(sidecar: Sidecar) -> None:
    # The task's policy has no namespace: applied in foo, as the task does with -n foo.
    dry_run = sample(
        SECURITY + "authz-dry-run/1-authorizationpolicy-deny-path-headers-dry-run.yaml"
    )
    pod = await sidecar(dry_run.read_text().replace("metadata:\n", "metadata:\n  namespace: foo\n"))
    assert (await _get(pod.where, "/headers")).status == 200  # would be denied: only counted
    assert (await _get(pod.where, "/ip")).status == 200
    prefix = f"http.inbound_{pod.where[0]}_15006.rbac."
    assert await _stat(pod, prefix + "istio_dry_run_deny_.shadow_denied") == 1
    assert await _stat(pod, prefix + "istio_dry_run_deny_.shadow_allowed") == 1
