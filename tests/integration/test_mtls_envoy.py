"""The control-plane half of mesh mTLS, proved with two unmodified Envoy 1.40 sidecars:
identities from ``pymesh agent`` (certificates from pilot's CA), configuration from pilot.

sleep (foo) calls httpbin (foo) through both sidecars. PERMISSIVE (no policy): sidecar to
sidecar is mTLS (httpbin's app sees the caller in ``X-Forwarded-Client-Cert``), a plaintext
client without a sidecar still gets through. Istio's own STRICT policy for foo: sidecar to
sidecar keeps working, the plaintext client and ``openssl s_client`` without a certificate are
refused at the connection. Connections between the sidecars are reused: a handful of TLS
handshakes for many requests.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.demo_harness import istio_file
from tests.integration.mtls_harness import MtlsMesh, admin_stats, echo
from tests.support import AUTH_NET, address
from tests.support.httpclient import request
from tests.support.upstream import Upstream

# Same pod addresses in both modules: one xdist worker runs them.
pytestmark = [pytest.mark.envoy, pytest.mark.xdist_group("auth-mesh"), pytest.mark.timeout(180)]

PILOT = address(AUTH_NET, 200)
HTTPBIN = address(AUTH_NET, 21)
SLEEP = address(AUTH_NET, 22)
LEGACY = address(AUTH_NET, 23)
MANIFESTS = """
apiVersion: v1
kind: Service
metadata: {name: httpbin, namespace: foo}
spec:
  selector: {app: httpbin}
  ports: [{name: http, port: 8000, targetPort: 8080}]
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
      containers: [{name: httpbin, image: httpbin, ports: [{containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleep, namespace: foo}
spec:
  selector: {matchLabels: {app: sleep}}
  template:
    metadata: {labels: {app: sleep}}
    spec:
      serviceAccountName: sleep
      containers: [{name: sleep, image: curl}]
"""
XFCC = re.compile(
    r'By=spiffe://cluster\.local/ns/foo/sa/httpbin;Hash=[0-9a-f]{64};Subject="";'
    r"URI=spiffe://cluster\.local/ns/foo/sa/sleep"
)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[MtlsMesh]:
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MANIFESTS)
    mesh = MtlsMesh(PILOT, config, tmp_path)
    async with Upstream(HTTPBIN, 8080, name="httpbin"):
        try:
            await mesh.start()
            await mesh.add_pod("envoy", "httpbin", "foo", HTTPBIN, {"app": "httpbin"}, "httpbin")
            await mesh.add_pod("envoy", "sleep", "foo", SLEEP, {"app": "sleep"}, "sleep")
            await mesh.wait_synced()
            yield mesh
        finally:
            await mesh.stop()


async def _until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


async def _plaintext_to_httpbin() -> int | None:
    """A client without a sidecar (legacy) at httpbin's sidecar: the status, None when the
    connection is refused or closed before any response."""
    try:
        resp = await request(
            HTTPBIN, 15006, "GET", "/headers", [("x-pymesh-service-port", "8000")],
            host_header="httpbin.foo:8000", timeout=3.0,
        )  # fmt: skip
    except (OSError, TimeoutError, Exception) as exc:
        if isinstance(exc, AssertionError):
            raise
        return None
    return resp.status


async def _s_client_without_certificate(tmp: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"{HTTPBIN}:15006", "-alpn", "istio",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    request_bytes = b"GET /headers HTTP/1.1\r\nhost: httpbin.foo:8000\r\n\r\n"
    out, _ = await asyncio.wait_for(proc.communicate(request_bytes), 20)
    return out.decode(errors="replace")


async def test_two_envoy_sidecars_permissive_then_strict(mesh: MtlsMesh, tmp_path: Path) -> None:
    sleep = mesh.pods[1]

    async def mtls_works() -> bool:
        resp = await sleep.call("httpbin.foo:8000", "/headers")
        if resp.status != 200:
            return False
        xfcc = echo(resp)["headers"].get("x-forwarded-client-cert", "")
        return bool(XFCC.fullmatch(xfcc))

    # PERMISSIVE (no policy): mTLS between the sidecars, plaintext from outside accepted.
    await _until(mtls_works)
    assert await _plaintext_to_httpbin() == 200

    # Connection reuse: 30 requests, a handful of handshakes on httpbin's side.
    before = admin_stats(mesh.pods[0].proxy, "listener.")
    for _ in range(30):
        assert (await sleep.call("httpbin.foo:8000", "/get")).status == 200
    after = admin_stats(mesh.pods[0].proxy, "listener.")
    handshakes = {k: after[k] - before.get(k, 0) for k in after if k.endswith("ssl.handshake")}
    assert sum(handshakes.values()) <= 3, handshakes

    # Istio's STRICT for namespace foo, unchanged.
    strict = "docs-extracted/security/authn-policy/02-peerauthentication-foo-strict.yaml"
    await mesh.apply(istio_file(strict))

    async def plaintext_refused() -> bool:
        return await _plaintext_to_httpbin() is None

    await _until(plaintext_refused)
    assert await mtls_works()
    out = await _s_client_without_certificate(tmp_path)
    assert "HTTP/1.1 200" not in out, out
    assert re.search(r"alert|certificate required|errno|error", out, re.I), out
