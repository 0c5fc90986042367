"""``pymesh proxy`` on delta xDS (``ads_config.api_type: DELTA_GRPC``) against a real
``pymesh pilot``, beside Envoy 1.40 on the same delta bootstrap: both route alike, follow a
VirtualService, lose a removed service's cluster; a resource only pymesh refuses is NACKed
while the proxy keeps serving; a pilot restart is resumed with the versions the proxy holds
(addresses 127.0.60.20-29)."""

from __future__ import annotations

import asyncio
import json
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
    reviews_route,
    reviews_seen,
    sidecar_bootstrap,
    start_proxy,
)
from tests.support.envoy import ProxyProcess, find_envoy, pymesh_proxy_missing
from tests.support.procs import ManagedProcess
from tests.support.waiting import wait_until

PILOT = "127.0.60.20"
REVIEWS_V1 = "127.0.60.21"
REVIEWS_V2 = "127.0.60.22"
PYMESH_POD = "127.0.60.24"
ENVOY_POD = "127.0.60.25"
PYMESH_NAME = "productpage-v1-6b746f74dc-p1"
ENVOY_NAME = "productpage-v1-6b746f74dc-e1"
REVIEWS_TEST_V2 = NETWORKING / "virtual-service-reviews-test-v2.yaml"
EXTRA_CLUSTER = "outbound|9080||extra.default.svc.cluster.local"

EXTRA_SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: extra, namespace: default}
spec:
  selector: {app: extra}
  ports: [{port: 9080, name: http}]
"""

# Lua is an Envoy filter pilot accepts and pymesh does not run: only pymesh's sidecar gets it.
LUA_FILTER = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: lua, namespace: default}
spec:
  workloadSelector: {labels: {proxy: pymesh}}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_OUTBOUND}
    patch:
      operation: INSERT_FIRST
      value:
        name: envoy.filters.http.lua
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
          default_source_code: {inline_string: "function envoy_on_request(h) end"}
"""

pytestmark = [
    pytest.mark.envoy,
    # Every test binds the same pod addresses and ports: one worker runs them in turn.
    pytest.mark.xdist_group("proxy-delta-pilot"),
    pytest.mark.skipif(
        not BOOKINFO.is_file() or not REVIEWS_TEST_V2.is_file(),
        reason=f"Istio samples not found under {SAMPLES}",
    ),
    pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary"),
    pytest.mark.skipif(pymesh_proxy_missing() is not None, reason=str(pymesh_proxy_missing())),
]


def _dump(proxy: ProxyProcess) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{proxy.admin_url}/config_dump", timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
    return data


async def dump_text(proxy: ProxyProcess) -> str:
    return json.dumps(await asyncio.to_thread(_dump, proxy))


class Mesh:
    def __init__(self, pilot: PilotProcess, pymesh: ProxyProcess, envoy: ProxyProcess) -> None:
        self.pilot = pilot
        self.pymesh = pymesh
        self.envoy = envoy

    async def status(self, pod: str, ip: str) -> dict[str, Any]:
        data = await self.pilot.aapi("/proxies")
        found: dict[str, Any] = next(p for p in data["proxies"] if p["id"] == node_id(pod, ip))
        return found

    async def apply(self, text: str, *, delete: bool = False) -> None:
        done = await self.pilot.cli("delete" if delete else "apply", "-f", "-", stdin=text)
        assert done.rc == 0, done.err


async def _dump_has(proxy: ProxyProcess, text: str, present: bool = True) -> bool:
    return (text in await dump_text(proxy)) is present


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    upstreams = {"v1": REVIEWS_V1, "v2": REVIEWS_V2}
    async with bookinfo_reviews(tmp_path, PILOT, upstreams) as pilot:
        proxies: list[ProxyProcess] = []
        try:
            for kind, pod, ip in (
                ("pymesh", PYMESH_NAME, PYMESH_POD),
                ("envoy", ENVOY_NAME, ENVOY_POD),
            ):
                labels = {"app": "productpage", "version": "v1", "proxy": kind}
                bootstrap = sidecar_bootstrap(
                    pod, ip, pilot.xds, labels=labels, service_account="bookinfo-productpage"
                )
                bootstrap["dynamic_resources"]["ads_config"]["api_type"] = "DELTA_GRPC"
                proxies.append(await start_proxy(kind, bootstrap, tmp_path / kind, f"{kind}-delta"))
            await pilot.wait_synced(
                [node_id(PYMESH_NAME, PYMESH_POD), node_id(ENVOY_NAME, ENVOY_POD)]
            )
            yield Mesh(pilot, *proxies)
        finally:
            for proxy in proxies:
                await proxy.astop()


@pytest.mark.timeout(120)
async def test_pymesh_on_delta_routes_as_envoy_does_and_follows_pilot(mesh: Mesh) -> None:
    both = {"reviews-v1", "reviews-v2"}
    for pod in (PYMESH_POD, ENVOY_POD):
        assert await reviews_seen(pod, both) == both
    status = await mesh.status(PYMESH_NAME, PYMESH_POD)
    for kind in ("CDS", "EDS", "LDS", "RDS"):
        assert status["types"][kind]["status"] == "SYNCED", status["types"]

    # A VirtualService: each proxy's own config_dump says when its route arrived (no luck with
    # round robin), then both give the same verdicts.
    await mesh.apply(REVIEWS_TEST_V2.read_text())
    for proxy in (mesh.pymesh, mesh.envoy):
        await wait_until(lambda p=proxy: _dump_has(p, "jason"), f"the route reaches {proxy.name}")
    for _ in range(4):
        for user, wanted in (("jason", "reviews-v2"), ("alice", "reviews-v1")):
            verdicts = {await reviews_route(pod, user) for pod in (PYMESH_POD, ENVOY_POD)}
            assert verdicts == {wanted}, (user, verdicts)

    # A service that comes and goes: its cluster comes and goes (removed_resources).
    await mesh.apply(EXTRA_SERVICE)
    for proxy in (mesh.pymesh, mesh.envoy):
        await wait_until(
            lambda p=proxy: _dump_has(p, EXTRA_CLUSTER), f"{proxy.name} gets the cluster"
        )
    await mesh.apply(EXTRA_SERVICE, delete=True)
    for proxy in (mesh.pymesh, mesh.envoy):
        await wait_until(
            lambda p=proxy: _dump_has(p, EXTRA_CLUSTER, False), f"{proxy.name} drops the cluster"
        )
    assert await reviews_route(PYMESH_POD, "jason") == "reviews-v2"


@pytest.mark.timeout(120)
async def test_a_listener_pymesh_cannot_run_is_nacked_and_the_old_one_serves(mesh: Mesh) -> None:
    await mesh.apply(LUA_FILTER)

    async def nacked() -> bool:
        lds = (await mesh.status(PYMESH_NAME, PYMESH_POD))["types"]["LDS"]
        return "envoy.filters.http.lua" in json.dumps(lds)

    await wait_until(nacked, "pilot hears the NACK")
    lds = json.dumps((await mesh.status(PYMESH_NAME, PYMESH_POD))["types"]["LDS"])
    assert "not supported by pymesh" in lds, lds
    both = {"reviews-v1", "reviews-v2"}
    assert await reviews_seen(PYMESH_POD, both) == both, "the last good config serves"
    assert "envoy.filters.http.lua" not in await dump_text(mesh.pymesh)

    await mesh.apply(LUA_FILTER, delete=True)

    async def synced() -> bool:
        return bool(
            (await mesh.status(PYMESH_NAME, PYMESH_POD))["types"]["LDS"]["status"] == "SYNCED"
        )

    await wait_until(synced, "the listeners are accepted again")


@pytest.mark.timeout(120)
async def test_pilot_restart_is_resumed_without_dropping_config(mesh: Mesh) -> None:
    both = {"reviews-v1", "reviews-v2"}
    assert await reviews_seen(PYMESH_POD, both) == both
    pilot = mesh.pilot
    pilot.proc.kill()
    assert await reviews_seen(PYMESH_POD, both) == both, "serves while pilot is away"
    pilot.proc = ManagedProcess(
        pilot.proc.argv, log_path=pilot.proc.log_path, name="pilot", env=pilot.proc.env,
        die_with_parent=False,
    )  # fmt: skip
    await pilot.start()
    await pilot.wait_synced([node_id(PYMESH_NAME, PYMESH_POD)], timeout=30)

    def resumed() -> bool:
        return "xds delta stream resumed" in mesh.pymesh.log_path.read_text()

    await wait_until(resumed, "the proxy resumes its stream with what it holds", 10)
    assert await reviews_seen(PYMESH_POD, both) == both
    await mesh.apply(REVIEWS_TEST_V2.read_text())
    await wait_until(lambda: _dump_has(mesh.pymesh, "jason"), "a rule after the restart arrives")
    assert await reviews_route(PYMESH_POD, "jason") == "reviews-v2"
