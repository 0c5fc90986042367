"""A control-plane restart loses no request: steady traffic from a productpage sidecar (pymesh
proxy and Envoy) to reviews v1 (behind its own pymesh sidecar) and v2 (a workload registered by
its ADS stream alone), all configured by ``pymesh pilot``; pilot is killed with SIGKILL and
started again on the same ports. Not one request fails, and a VirtualService applied
afterwards takes effect (addresses 127.0.0.50-59).

What used to fail: the restarted pilot knew no endpoint until the workload behind it had
reconnected, and the first proxies back were pushed endpoint lists without the others. The
v2 workload reconnects only after everything else is back and synced, the worst order, so the
test does not depend on which proxy's backoff ends first.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
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
from tests.support.envoy import find_envoy, pymesh_proxy_missing
from tests.support.procs import ManagedProcess
from tests.support.upstream import Upstream
from tests.support.waiting import wait_until

PILOT = "127.0.0.50"
REVIEWS = {"v1": "127.0.0.51", "v2": "127.0.0.52"}
CLIENTS = {"pymesh": "127.0.0.53", "envoy": "127.0.0.54"}
NETWORKING = SAMPLES / "bookinfo" / "networking"
BOOKINFO = SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo.yaml"
DOWNTIME = 3.0
ALL_V1 = NETWORKING / "virtual-service-all-v1.yaml"

pytestmark = pytest.mark.skipif(
    not BOOKINFO.is_file() or not ALL_V1.is_file(),
    reason=f"Istio samples not found under {SAMPLES}",
)


@dataclass
class Traffic:
    """Requests sent back to back from each client sidecar; every outcome is recorded."""

    clients: dict[str, str]
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    failures: list[tuple[float, str, str]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _run(self, kind: str, ip: str) -> None:
        counts = self.outcomes.setdefault(kind, Counter())
        while not self._stop.is_set():
            try:
                resp = await via_sidecar(ip, "reviews:9080", "/reviews/0", timeout=5.0)
                outcome = upstream_of(resp) if resp.status == 200 else f"HTTP {resp.status}"
                outcome = outcome or f"HTTP {resp.status}"
            except (OSError, TimeoutError) as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            counts[outcome] += 1
            if not outcome.startswith("reviews-"):
                self.failures.append((time.monotonic(), kind, outcome))
            await asyncio.sleep(0.005)

    def since(self, kind: str) -> Counter[str]:
        return Counter(self.outcomes.get(kind, Counter()))

    async def __aenter__(self) -> Traffic:
        self._tasks = [asyncio.create_task(self._run(k, ip)) for k, ip in self.clients.items()]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def _sidecar(kind: str, pod: str, ip: str, app: str, version: str, pilot: Any, tmp: Path):
    bootstrap = sidecar_bootstrap(
        pod, ip, pilot.xds, labels={"app": app, "version": version},
        service_account=f"bookinfo-{app}",
    )  # fmt: skip
    return await start_proxy(kind, bootstrap, tmp / f"{kind}-{pod}", f"{kind}-{pod}")


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[tuple[PilotProcess, dict[str, str], list[Any]]]:
    if (why := pymesh_proxy_missing()) is not None:
        pytest.skip(why)
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    shutil.copy(BOOKINFO, config_dir / "bookinfo.yaml")
    shutil.copy(NETWORKING / "destination-rule-all.yaml", config_dir)
    pilot = PilotProcess(PILOT, config_dir, tmp_path / "logs")
    clients = dict(CLIENTS) if find_envoy() else {"pymesh": CLIENTS["pymesh"]}
    started: list[Any] = []
    registered: list[Any] = []
    async with (
        Upstream(REVIEWS["v1"], 9080, name="reviews-v1"),
        Upstream(REVIEWS["v2"], 9080, name="reviews-v2"),
    ):
        try:
            await pilot.start()
            pod = "reviews-v1-5c6f4d9c7-a1"
            started.append(
                await _sidecar("pymesh", pod, REVIEWS["v1"], "reviews", "v1", pilot, tmp_path)
            )
            ids = [node_id(pod, REVIEWS["v1"])]
            registered.append(await _register_v2(pilot))
            for kind, ip in clients.items():
                pod = f"productpage-v1-6b746f74dc-{kind}"
                started.append(await _sidecar(kind, pod, ip, "productpage", "v1", pilot, tmp_path))
                ids.append(node_id(pod, ip))
            await pilot.wait_synced(ids)
            yield pilot, clients, registered
        finally:
            for proxy in reversed(started):
                await proxy.astop()
            for client in registered:
                await client.close()
            pilot.stop()


async def _register_v2(pilot: PilotProcess) -> Any:
    return await register_pod(
        pilot.xds, "reviews-v2-7b5d8f6c4-b2", REVIEWS["v2"], {"app": "reviews", "version": "v2"}
    )


async def _both_versions(ip: str) -> bool:
    seen = set()
    for _ in range(10):
        seen.add(upstream_of(await via_sidecar(ip, "reviews:9080", "/reviews/0")))
    return seen == {"reviews-v1", "reviews-v2"}


@pytest.mark.timeout(180)
async def test_pilot_killed_and_restarted_under_traffic_fails_no_request(
    mesh: tuple[PilotProcess, dict[str, str], list[Any]],
) -> None:
    pilot, clients, registered = mesh
    for ip in clients.values():
        await wait_until(lambda ip=ip: _both_versions(ip), "both reviews versions serve", 15)

    async with Traffic(clients) as traffic:
        await wait_until(
            lambda: all(sum(traffic.since(k).values()) >= 20 for k in clients), "traffic flows"
        )
        pilot.proc.kill()
        before = {k: traffic.since(k) for k in clients}
        # Pilot stays down for a while, as a rescheduled istiod does: long enough for the
        # sidecars' reconnect backoff to grow and spread them out, so they come back one by
        # one over a second or more.
        await asyncio.sleep(DOWNTIME)
        assert all(sum((traffic.since(k) - before[k]).values()) >= 20 for k in clients)
        pilot.proc = ManagedProcess(
            pilot.proc.argv, log_path=pilot.proc.log_path, name="pilot", env=pilot.proc.env,
            die_with_parent=False,
        )  # fmt: skip
        await pilot.start()
        # Every sidecar reconnected and synced; the v2 workload has not reconnected yet and
        # still serves: pilot remembers it from before the restart.
        await wait_until(
            lambda: len(pilot.api("/proxies")["proxies"]) == 1 + len(clients),
            "every sidecar reconnected",
            30,
        )
        ids = [p["id"] for p in (await pilot.aapi("/proxies"))["proxies"]]
        await pilot.wait_synced(ids, timeout=30)
        for ip in clients.values():
            await wait_until(lambda ip=ip: _both_versions(ip), "v2 served before it is back", 5)
        await registered.pop().close()
        registered.append(await _register_v2(pilot))
        after = {k: traffic.since(k) for k in clients}
        await wait_until(
            lambda: all(sum((traffic.since(k) - after[k]).values()) >= 50 for k in clients),
            "traffic flows after the restart",
            30,
        )

        # A rule applied to the restarted pilot takes effect, still without a failure.
        result = await pilot.cli("apply", "-f", str(ALL_V1))
        assert result.rc == 0, result.err
        for ip in clients.values():
            await wait_until(lambda ip=ip: _only_v1(ip), "the VirtualService routes to v1", 15)

    print({k: dict(v) for k, v in traffic.outcomes.items()})
    assert not traffic.failures, traffic.failures[:20]


async def _only_v1(ip: str) -> bool:
    for _ in range(10):
        if upstream_of(await via_sidecar(ip, "reviews:9080", "/reviews/0")) != "reviews-v1":
            return False
    return True
