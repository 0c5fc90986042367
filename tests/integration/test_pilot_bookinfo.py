"""The headline scenario with real processes: ``pymesh pilot`` serving Bookinfo's own YAML,
``pymesh apply -f virtual-service-reviews-test-v2.yaml``, and within a second requests with
``end-user: jason`` reach reviews v2 and all others v1, through Envoy 1.40 and through a
pymesh proxy, both configured by pilot over ADS (addresses 127.0.3.180-189)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pilot_harness import (
    SAMPLES,
    PilotProcess,
    node_id,
    register_pod,
    sidecar_bootstrap,
    start_proxy,
    upstream_of,
    via_sidecar,
)
from tests.support.envoy import pymesh_proxy_missing
from tests.support.upstream import Upstream

PILOT = "127.0.3.180"
REVIEWS_V1 = "127.0.3.181"
REVIEWS_V2 = "127.0.3.182"
ENVOY_POD = "127.0.3.183"
PYMESH_POD = "127.0.3.184"
NETWORKING = SAMPLES / "bookinfo" / "networking"
BOOKINFO = SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo.yaml"
_CONVERGED_WITHIN = 5.0
REVIEWS_TEST_V2 = NETWORKING / "virtual-service-reviews-test-v2.yaml"

pytestmark = pytest.mark.skipif(
    not BOOKINFO.is_file() or not REVIEWS_TEST_V2.is_file(),
    reason=f"Istio samples not found under {SAMPLES}",
)


class Mesh:
    def __init__(self, pilot: PilotProcess, proxies: dict[str, Any]) -> None:
        self.pilot = pilot
        self.proxies = proxies  # kind -> (pod ip, proxy process)

    async def route(self, ip: str, user: str | None) -> str | None:
        headers = [("end-user", user)] if user else []
        resp = await via_sidecar(ip, "reviews:9080", "/reviews/0", headers)
        return upstream_of(resp) if resp.status == 200 else f"HTTP {resp.status}"

    async def routes_per_test_v2(self, ip: str) -> bool:
        for _ in range(3):
            if await self.route(ip, "jason") != "reviews-v2":
                return False
            if await self.route(ip, None) != "reviews-v1":
                return False
            if await self.route(ip, "alice") != "reviews-v1":
                return False
        return True


async def _start_proxy(kind: str, pod: str, ip: str, pilot: PilotProcess, workdir: Path) -> Any:
    bootstrap = sidecar_bootstrap(
        pod, ip, pilot.xds, labels={"app": "productpage", "version": "v1"},
        service_account="bookinfo-productpage",
    )  # fmt: skip
    return await start_proxy(kind, bootstrap, workdir / kind, f"{kind}-{pod}")


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    if (why := pymesh_proxy_missing()) is not None:
        pytest.skip(why)
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    shutil.copy(BOOKINFO, config_dir / "bookinfo.yaml")
    shutil.copy(NETWORKING / "destination-rule-all.yaml", config_dir)
    pilot = PilotProcess(PILOT, config_dir, tmp_path / "logs")
    started: list[Any] = []
    clients = []
    async with (
        Upstream(REVIEWS_V1, 9080, name="reviews-v1") as _v1,
        Upstream(REVIEWS_V2, 9080, name="reviews-v2") as _v2,
    ):
        try:
            await pilot.start()
            clients.append(
                await register_pod(
                    pilot.xds, "reviews-v1-5c6f4d9c7-a1", REVIEWS_V1,
                    {"app": "reviews", "version": "v1"},
                )
            )  # fmt: skip
            clients.append(
                await register_pod(
                    pilot.xds, "reviews-v2-7b5d8f6c4-b2", REVIEWS_V2,
                    {"app": "reviews", "version": "v2"},
                )
            )  # fmt: skip
            proxies = {}
            for kind, pod, ip in (
                ("envoy", "productpage-v1-6b746f74dc-e1", ENVOY_POD),
                ("pymesh", "productpage-v1-6b746f74dc-p1", PYMESH_POD),
            ):
                proxy = await _start_proxy(kind, pod, ip, pilot, tmp_path)
                started.append(proxy)
                proxies[kind] = (ip, proxy, node_id(pod, ip))
            await pilot.wait_synced([p[2] for p in proxies.values()])
            yield Mesh(pilot, proxies)
        finally:
            for proxy in reversed(started):
                await proxy.astop()
            for c in clients:
                await c.close()
            pilot.stop()


@pytest.mark.envoy
@pytest.mark.timeout(120)
async def test_apply_reviews_test_v2_routes_jason_to_v2_promptly(mesh: Mesh) -> None:
    # Before: no VirtualService, both versions serve. Istio's load balancing picks between
    # two idle hosts at random: ask until both have answered (8 tries miss one 1 in 128).
    for kind, (ip, _, _) in mesh.proxies.items():
        seen: set[str | None] = set()
        for _ in range(64):
            seen.add(await mesh.route(ip, None))
            if len(seen) > 1:
                break
        assert seen == {"reviews-v1", "reviews-v2"}, (kind, seen)

    result = await mesh.pilot.cli("apply", "-f", str(REVIEWS_TEST_V2))
    applied = time.monotonic()
    assert result.rc == 0, result.err
    assert result.out.strip() == "virtualservice.networking.istio.io/reviews created"

    pending = dict(mesh.proxies)
    converged: dict[str, float] = {}
    # Convergence takes tens of milliseconds on a quiet machine (printed below; the push
    # latency itself is measured in benchmarks/). The bound only catches a missed push: a
    # loaded two-core runner has stretched it past one second.
    while pending and time.monotonic() - applied < _CONVERGED_WITHIN:
        for kind, (ip, _, _) in list(pending.items()):
            if await mesh.routes_per_test_v2(ip):
                converged[kind] = time.monotonic() - applied
                del pending[kind]
        await asyncio.sleep(0.01)
    assert not pending, (
        f"not routing per the VirtualService {_CONVERGED_WITHIN} s after apply: {sorted(pending)}"
    )
    print(f"converged after apply: {converged}")
    for ip, _, _ in mesh.proxies.values():
        assert await mesh.routes_per_test_v2(ip)

    # Re-applying the same file changes nothing.
    again = await mesh.pilot.cli("apply", "-f", str(REVIEWS_TEST_V2))
    assert again.rc == 0 and again.out.strip().endswith("unchanged"), again

    # proxy-status: every proxy on the latest config.
    status = await mesh.pilot.cli("proxy-status")
    assert status.rc == 0, status.err
    for _, _, pid in mesh.proxies.values():
        line = next(ln for ln in status.out.splitlines() if pid.split("~")[2] in ln)
        assert line.split()[2:6] == ["SYNCED"] * 4, status.out

    # proxy-config shows the route, as istioctl would.
    ip, _, pid = mesh.proxies["pymesh"]
    routes = await mesh.pilot.cli("proxy-config", "routes", pid.split("~")[2])
    assert routes.rc == 0, routes.err
    assert "end-user=jason" in routes.out and "reviews.default" in routes.out, routes.out
    clusters = await mesh.pilot.cli("proxy-config", "clusters", ip)
    assert "reviews.default.svc.cluster.local" in clusters.out
    assert "v2" in clusters.out and "reviews.default" in clusters.out

    # Deleting it goes back to both versions.
    deleted = await mesh.pilot.cli("delete", "-f", str(REVIEWS_TEST_V2))
    assert deleted.rc == 0, deleted.err
    for kind, (ip, _, _) in mesh.proxies.items():
        deadline = time.monotonic() + 3
        seen: set[str | None] = set()
        while time.monotonic() < deadline and seen != {"reviews-v1", "reviews-v2"}:
            seen.add(await mesh.route(ip, "jason"))
        assert seen == {"reviews-v1", "reviews-v2"}, (kind, seen)
