"""Endpoint-only changes reach real proxies as EDS alone: Envoy 1.40 (state of the world and
delta) and a pymesh proxy, configured by ``pymesh pilot`` with Bookinfo, route to a reviews pod
that registers later and stop once it is gone, while pilot sends them no new clusters,
listeners or routes (addresses 127.0.54.80-89)."""

from __future__ import annotations

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
from tests.pilot.xds.ads_client import AdsClient
from tests.support.envoy import pymesh_proxy_missing
from tests.support.upstream import Upstream

PILOT = "127.0.54.80"
REVIEWS_A = "127.0.54.81"
REVIEWS_B = "127.0.54.82"
PODS = {  # kind -> (pod ip, pod name, xDS flavour)
    "envoy": ("127.0.54.83", "productpage-v1-6b746f74dc-i1", "GRPC"),
    "envoy-delta": ("127.0.54.84", "productpage-v1-6b746f74dc-i2", "DELTA_GRPC"),
    "pymesh": ("127.0.54.85", "productpage-v1-6b746f74dc-i3", "GRPC"),
}
NETWORKING = SAMPLES / "bookinfo" / "networking"
BOOKINFO = SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo.yaml"
V1 = {"app": "reviews", "version": "v1"}

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(not BOOKINFO.is_file(), reason=f"Istio samples not found under {SAMPLES}"),
]


class Mesh:
    def __init__(self, pilot: PilotProcess) -> None:
        self.pilot = pilot

    async def seen(self, ip: str, n: int = 12) -> set[str | None]:
        found: set[str | None] = set()
        for _ in range(n):
            resp = await via_sidecar(ip, "reviews:9080", "/reviews/0")
            found.add(upstream_of(resp) if resp.status == 200 else f"HTTP {resp.status}")
        return found

    async def until(self, ip: str, wanted: set[str | None], timeout: float = 5.0) -> None:
        """Until a round of requests through ``ip``'s sidecar reaches exactly ``wanted``."""
        deadline = time.monotonic() + timeout
        while (got := await self.seen(ip)) != wanted:
            assert time.monotonic() < deadline, (ip, got, wanted)

    async def sent_versions(self) -> dict[str, dict[str, str]]:
        """kind -> xDS type -> the version pilot last sent it."""
        data = await self.pilot.aapi("/proxies")
        by_id = {p["id"]: p for p in data["proxies"]}
        return {
            kind: {t: s["sent_version"] for t, s in by_id[node_id(pod, ip)]["types"].items()}
            for kind, (ip, pod, _) in PODS.items()
        }


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
    client: AdsClient | None = None
    async with (
        Upstream(REVIEWS_A, 9080, name="reviews-a"),
        Upstream(REVIEWS_B, 9080, name="reviews-b"),
    ):
        try:
            await pilot.start()
            client = await register_pod(pilot.xds, "reviews-v1-5c6f4d9c7-a1", REVIEWS_A, V1)
            for kind, (ip, pod, api) in PODS.items():
                bootstrap = sidecar_bootstrap(
                    pod, ip, pilot.xds, labels={"app": "productpage", "version": "v1"},
                    service_account="bookinfo-productpage",
                )  # fmt: skip
                bootstrap["dynamic_resources"]["ads_config"]["api_type"] = api
                binary = "pymesh" if kind == "pymesh" else "envoy"
                started.append(await start_proxy(binary, bootstrap, tmp_path / kind, kind))
            await pilot.wait_synced([node_id(pod, ip) for ip, pod, _ in PODS.values()])
            yield Mesh(pilot)
        finally:
            for proxy in reversed(started):
                await proxy.astop()
            if client is not None:
                await client.close()
            pilot.stop()


@pytest.mark.timeout(120)
async def test_a_pod_coming_and_going_is_pushed_as_endpoints_alone(mesh: Mesh) -> None:
    for ip, _, _ in PODS.values():
        await mesh.until(ip, {"reviews-a"})
    before = await mesh.sent_versions()

    pod_b = await register_pod(mesh.pilot.xds, "reviews-v1-5c6f4d9c7-b2", REVIEWS_B, V1)
    try:
        for ip, _, _ in PODS.values():
            await mesh.until(ip, {"reviews-a", "reviews-b"})
        after = await mesh.sent_versions()
    finally:
        await pod_b.close()
    for ip, _, _ in PODS.values():
        await mesh.until(ip, {"reviews-a"})
    gone = await mesh.sent_versions()

    for kind in PODS:
        assert after[kind]["EDS"] != before[kind]["EDS"], kind
        assert gone[kind]["EDS"] != after[kind]["EDS"], kind
        for xds_type in ("CDS", "LDS", "RDS"):
            assert before[kind][xds_type] == after[kind][xds_type] == gone[kind][xds_type], (
                kind,
                xds_type,
            )
    await mesh.pilot.wait_synced([node_id(pod, ip) for ip, pod, _ in PODS.values()])
