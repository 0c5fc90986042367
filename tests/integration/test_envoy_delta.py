"""Envoy 1.40 on delta xDS (``ads_config.api_type: DELTA_GRPC``) configured by ``pymesh pilot``:
it gets Bookinfo's config, routes by a VirtualService applied later, reaches a pod that
registers later and stops reaching it once it is gone (addresses 127.0.54.60-69)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pilot_harness import (
    BOOKINFO,
    NETWORKING,
    SAMPLES,
    PilotProcess,
    bookinfo_reviews,
    node_id,
    register_pod,
    reviews_route,
    reviews_seen,
    sidecar_bootstrap,
    start_proxy,
)

PILOT = "127.0.54.60"
REVIEWS_V1 = "127.0.54.61"
REVIEWS_V2 = "127.0.54.62"
REVIEWS_V3 = "127.0.54.63"
ENVOY_POD = "127.0.54.64"
REVIEWS_TEST_V2 = NETWORKING / "virtual-service-reviews-test-v2.yaml"
POD = "productpage-v1-6b746f74dc-d1"

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.skipif(
        not BOOKINFO.is_file() or not REVIEWS_TEST_V2.is_file(),
        reason=f"Istio samples not found under {SAMPLES}",
    ),
]


class Mesh:
    def __init__(self, pilot: PilotProcess, envoy: Any) -> None:
        self.pilot = pilot
        self.envoy = envoy

    async def route(self, user: str | None = None) -> str | None:
        return await reviews_route(ENVOY_POD, user)

    async def until_seen(self, wanted: set[str], user: str | None = None) -> set[str | None]:
        return await reviews_seen(ENVOY_POD, wanted, user)

    def routes(self) -> Any:
        dump = self.config_dump()
        return next(c for c in dump["configs"] if c["@type"].endswith(".RoutesConfigDump"))

    def config_dump(self) -> dict[str, Any]:
        host, port = self.envoy.admin
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{host}:{port}/config_dump", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    upstreams = {"v1": REVIEWS_V1, "v2": REVIEWS_V2, "v3": REVIEWS_V3}
    async with bookinfo_reviews(tmp_path, PILOT, upstreams) as pilot:
        bootstrap = sidecar_bootstrap(
            POD, ENVOY_POD, pilot.xds, labels={"app": "productpage", "version": "v1"},
            service_account="bookinfo-productpage",
        )  # fmt: skip
        bootstrap["dynamic_resources"]["ads_config"]["api_type"] = "DELTA_GRPC"
        envoy = await start_proxy("envoy", bootstrap, tmp_path / "envoy", "envoy-delta")
        try:
            await pilot.wait_synced([node_id(POD, ENVOY_POD)])
            yield Mesh(pilot, envoy)
        finally:
            await envoy.astop()


@pytest.mark.timeout(120)
async def test_envoy_on_delta_xds_routes_by_pilots_config(mesh: Mesh) -> None:
    assert await mesh.until_seen({"reviews-v1", "reviews-v2"}) == {"reviews-v1", "reviews-v2"}

    # Resources arrived one by one, each with its own version (a delta stream's mark; a
    # state-of-the-world stream gives every resource the push's version).
    dump = mesh.config_dump()
    clusters = next(c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump"))
    versions = {c["version_info"] for c in clusters["dynamic_active_clusters"]}
    assert len(versions) > 1, versions

    status = await mesh.pilot.aapi("/proxies")
    [envoy] = [p for p in status["proxies"] if p["id"] == node_id(POD, ENVOY_POD)]
    for kind in ("CDS", "EDS", "LDS", "RDS"):
        assert envoy["types"][kind]["status"] == "SYNCED", envoy["types"]

    applied = await mesh.pilot.cli("apply", "-f", str(REVIEWS_TEST_V2))
    assert applied.rc == 0, applied.err
    # Envoy's own dump says when the route arrived: before it, round robin answers "jason"
    # from v2 and anyone else from v1 one time in four.
    deadline = time.monotonic() + 5.0
    while "jason" not in json.dumps(mesh.routes()):
        assert time.monotonic() < deadline, "the VirtualService never reached Envoy"
        await asyncio.sleep(0.05)
    for _ in range(5):
        assert await mesh.route("jason") == "reviews-v2"
        assert await mesh.route("alice") == "reviews-v1"

    deleted = await mesh.pilot.cli("delete", "-f", str(REVIEWS_TEST_V2))
    assert deleted.rc == 0, deleted.err
    seen = await mesh.until_seen({"reviews-v1", "reviews-v2"}, "jason")
    assert seen == {"reviews-v1", "reviews-v2"}


@pytest.mark.timeout(120)
async def test_envoy_on_delta_xds_follows_endpoints(mesh: Mesh) -> None:
    v3 = await register_pod(
        mesh.pilot.xds, "reviews-v3-84779c7bbc-c3", REVIEWS_V3, {"app": "reviews", "version": "v3"}
    )
    try:
        everyone = {"reviews-v1", "reviews-v2", "reviews-v3"}
        assert await mesh.until_seen(everyone) == everyone
    finally:
        await v3.close()
    deadline = time.monotonic() + 5.0
    while True:
        seen: set[str | None] = {await mesh.route() for _ in range(12)}
        if "reviews-v3" not in seen:
            break
        assert time.monotonic() < deadline, "the gone pod is still routed to"
    assert seen <= {"reviews-v1", "reviews-v2"}, seen
