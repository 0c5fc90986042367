"""Mesh mTLS with pymesh sidecars, alone and mixed with unmodified Envoy 1.40 sidecars: each
sidecar's identity from its own ``pymesh agent`` (SDS on a Unix socket, certificates from
pilot's CA), configuration from pilot (auto mTLS, Istio's inbound chains).

sleep (foo) calls httpbin (foo) sidecar to sidecar, in every pairing of the two proxies.
PERMISSIVE: mTLS (httpbin's app reads its caller in ``X-Forwarded-Client-Cert``) and a
plaintext client without a sidecar accepted. Istio's own STRICT policy for foo: sidecar to
sidecar keeps working, the plaintext client and ``openssl s_client`` without a certificate
are refused at the connection.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.demo_harness import istio_file
from tests.integration.mtls_harness import MeshPod, MtlsMesh, admin_stats, echo
from tests.integration.test_mtls_envoy import (
    HTTPBIN,
    MANIFESTS,
    PILOT,
    SLEEP,
    XFCC,
    _plaintext_to_httpbin,
    _s_client_without_certificate,
    _until,
)
from tests.support.httpclient import AsyncConnection
from tests.support.upstream import Upstream

# Same pod addresses in both modules: one xdist worker runs them.
pytestmark = [pytest.mark.envoy, pytest.mark.xdist_group("auth-mesh"), pytest.mark.timeout(240)]

PAIRS = [("pymesh", "pymesh"), ("envoy", "pymesh"), ("pymesh", "envoy")]


@pytest.fixture(params=PAIRS, ids=[f"{client}-to-{server}" for server, client in PAIRS])
async def mesh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MtlsMesh]:
    server, client = request.param
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MANIFESTS)
    mesh = MtlsMesh(PILOT, config, tmp_path)
    async with Upstream(HTTPBIN, 8080, name="httpbin"):
        try:
            await mesh.start()
            await mesh.add_pod(server, "httpbin", "foo", HTTPBIN, {"app": "httpbin"}, "httpbin")
            await mesh.add_pod(client, "sleep", "foo", SLEEP, {"app": "sleep"}, "sleep")
            await mesh.wait_synced()
            yield mesh
        finally:
            await mesh.stop()


async def test_sidecars_permissive_then_strict(mesh: MtlsMesh, tmp_path: Path) -> None:
    httpbin, sleep = mesh.pods

    async def mtls_works() -> bool:
        resp = await sleep.call("httpbin.foo:8000", "/headers")
        if resp.status != 200:
            return False
        xfcc = echo(resp)["headers"].get("x-forwarded-client-cert", "")
        return bool(XFCC.fullmatch(xfcc))

    await _until(mtls_works, timeout=20)
    assert await _plaintext_to_httpbin() == 200

    # istioctl's view of the certificates each sidecar holds, from its admin interface.
    for pod in mesh.pods:
        shown = await mesh.pilot.cli("proxy-config", "secret", pod.name, "-n", "foo")
        assert shown.rc == 0, shown.err
        rows = [line.split() for line in shown.out.splitlines()[1:]]
        leaf = next(r for r in rows if r[0] == "default")
        assert leaf[1:4] == ["Cert", "Chain", "ACTIVE"] and leaf[4] == "true", shown.out
        assert leaf[-1] == f"spiffe://cluster.local/ns/foo/sa/{pod.service_account}"
        assert any(r[0] == "ROOTCA" and r[1] == "CA" for r in rows), shown.out
        assert pod.proxy is not None
        dump = await asyncio.to_thread(
            urllib.request.urlopen, f"{pod.proxy.admin_url}/config_dump", None, 5
        )
        assert b"PRIVATE KEY" not in dump.read()

    # Connections between the sidecars are reused: a handful of handshakes for 30 requests.
    assert httpbin.proxy is not None
    before = admin_stats(httpbin.proxy, "listener.")
    for _ in range(30):
        assert (await sleep.call("httpbin.foo:8000", "/get")).status == 200
    after = admin_stats(httpbin.proxy, "listener.")
    handshakes = {k: after[k] - before.get(k, 0) for k in after if k.endswith("ssl.handshake")}
    assert sum(handshakes.values()) <= 3, handshakes
    assert sum(after[k] for k in handshakes) > 0, after

    strict = "docs-extracted/security/authn-policy/02-peerauthentication-foo-strict.yaml"
    await mesh.apply(istio_file(strict))

    async def plaintext_refused() -> bool:
        return await _plaintext_to_httpbin() is None

    await _until(plaintext_refused, timeout=20)
    assert await mtls_works()
    out = await _s_client_without_certificate(tmp_path)
    assert "HTTP/1.1 200" not in out, out
    assert re.search(r"alert|certificate required|errno|error", out, re.I), out


@pytest.fixture
async def rotating(tmp_path: Path) -> AsyncIterator[MtlsMesh]:
    """Two pymesh sidecars whose agents ask for 8-second certificates (renewed every ~4 s)."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(MANIFESTS)
    mesh = MtlsMesh(PILOT, config, tmp_path)
    async with Upstream(HTTPBIN, 8080, name="httpbin"):
        try:
            await mesh.start()
            for name, ip in (("httpbin", HTTPBIN), ("sleep", SLEEP)):
                await mesh.add_pod("pymesh", name, "foo", ip, {"app": name}, name, cert_ttl="8s")
            await mesh.wait_synced()
            yield mesh
        finally:
            await mesh.stop()


async def test_rotation_drops_no_request_and_no_connection(rotating: MtlsMesh) -> None:
    """Requests on one keep-alive connection across two certificate rotations on both sides:
    every one answered, the app's connection and the sidecars' connection kept."""
    httpbin, sleep = rotating.pods
    assert httpbin.proxy is not None and sleep.proxy is not None

    async def ready() -> bool:
        return (await sleep.call("httpbin.foo:8000", "/ready")).status == 200

    await _until(ready, timeout=20)

    def updates(pod: MeshPod) -> int:
        assert pod.proxy is not None
        return admin_stats(pod.proxy, "sds.default.update_success").get(
            "sds.default.update_success", 0
        )

    start = {pod.name: updates(pod) for pod in rotating.pods}
    statuses: list[int] = []
    async with await AsyncConnection.open(SLEEP, 15001, timeout=5) as conn:
        deadline = time.monotonic() + 30
        while min(updates(p) - start[p.name] for p in rotating.pods) < 2:
            assert time.monotonic() < deadline, "certificates were not rotated"
            resp = await conn.request("GET", "/get", host="httpbin.foo:8000", timeout=5)
            statuses.append(resp.status)
            assert not resp.will_close
            await asyncio.sleep(0.1)
    assert statuses and set(statuses) == {200}
    # One connection between the sidecars served them all.
    stats = admin_stats(httpbin.proxy, "listener.")
    assert sum(v for k, v in stats.items() if k.endswith("ssl.handshake")) == 1, stats
