"""``pymesh proxy --concurrency 2``: two worker processes share the listeners, the admin port
shows their stats summed (and per worker for the listener), a push from pilot reaches both,
and a worker that dies takes the proxy down loudly, as a crashed Envoy worker does
(addresses 127.0.55.1-20).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from pymesh.container import sidecar_bootstrap as container_bootstrap
from tests.integration.pilot_harness import PilotProcess, sidecar_bootstrap, via_sidecar
from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, sa, vhost
from tests.support.envoy import PymeshProxyProcess, pymesh_proxy_missing
from tests.support.httpclient import request
from tests.support.procs import free_port, port_accepts, wait_for_port
from tests.support.upstream import Upstream
from tests.support.waiting import wait_until

PROXY = "127.0.55.1"
BACKEND = "127.0.55.2"
PILOT = "127.0.55.10"
CLIENT = "127.0.55.11"
SERVICE = "127.0.55.12"
CONNECTIONS = 40  # each on a fresh connection: all landing on one worker has odds 2**-39
# Two workers import and build a whole proxy each, side by side: slow on a loaded machine.
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(autouse=True)
def _needs_proxy() -> None:
    if (why := pymesh_proxy_missing()) is not None:
        pytest.skip(why)


def admin_get(admin: tuple[str, int], path: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{admin[0]}:{admin[1]}{path}", timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if path.endswith("json") or "format=json" in path else body.decode()


async def stats(admin: tuple[str, int]) -> dict[str, int]:
    data = await asyncio.to_thread(admin_get, admin, "/stats?format=json")
    return {s["name"]: s["value"] for s in data["stats"]}


def workers_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def static_proxy(upstream: Upstream, tmp_path: Path) -> PymeshProxyProcess:
    port = free_port(PROXY)
    boot = bootstrap(
        [listener((PROXY, port), hcm([vhost([route()])], stat_prefix="ingress"))],
        [cluster("backend", [(upstream.host, upstream.port)])],
        admin=(PROXY, free_port(PROXY)),
    )
    return PymeshProxyProcess(boot, workdir=tmp_path, extra_args=["--concurrency", "2"])


async def test_both_workers_accept_and_the_admin_sums_their_stats(tmp_path: Path) -> None:
    async with Upstream(BACKEND, 0, name="backend") as upstream:
        proxy = await static_proxy(upstream, tmp_path).astart(timeout=120)
        try:
            host, port = proxy.listener()
            for _ in range(CONNECTIONS):
                resp = await request(host, port, "GET", "/", timeout=10)
                assert resp.status == 200
            got = await stats(proxy.admin)
            lst = f"listener.{host}_{port}"
            per_worker = [got[f"{lst}.worker_{i}.downstream_cx_total"] for i in (0, 1)]
            # The kernel gave connections to both workers, and each counted its own.
            assert all(n > 0 for n in per_worker), per_worker
            assert sum(per_worker) == got[f"{lst}.downstream_cx_total"] == CONNECTIONS
            assert got["http.ingress.downstream_rq_total"] == CONNECTIONS
            assert got["http.ingress.downstream_rq_2xx"] == CONNECTIONS
            assert got["cluster.backend.upstream_rq_200"] == CONNECTIONS
            assert upstream.stats.requests == CONNECTIONS
            # State every worker holds alike is shown once, not twice.
            assert got["cluster.backend.membership_total"] == 1
            assert got["server.concurrency"] == 2
            prom = await asyncio.to_thread(admin_get, proxy.admin, "/stats/prometheus")
            prefix = 'envoy_http_conn_manager_prefix="ingress"'
            assert f"envoy_http_downstream_rq_total{{{prefix}}} {CONNECTIONS}\n" in prom
            text = await asyncio.to_thread(admin_get, proxy.admin, "/stats?filter=rq_time")
            assert "http.ingress.downstream_rq_time: P50(" in text
            info = await asyncio.to_thread(admin_get, proxy.admin, "/server_info")
            assert json.loads(info)["command_line_options"] == {"concurrency": 2}
            assert len(workers_of(proxy.pid)) == 2
        finally:
            assert await proxy.astop() == 0


async def test_a_dead_worker_stops_the_proxy_loudly(tmp_path: Path) -> None:
    async with Upstream(BACKEND, 0, name="backend") as upstream:
        proxy = await static_proxy(upstream, tmp_path).astart(timeout=120)
        try:
            host, port = proxy.listener()
            victim, survivor = workers_of(proxy.pid)
            os.kill(victim, signal.SIGKILL)
            assert proxy.proc is not None
            proc = proxy.proc
            await wait_until(lambda: not proc.alive, "proxy exits", timeout=30)
            assert proc.returncode == 1
            assert "worker exited: stopping the proxy" in proxy.log_tail(50)
            assert "killed by SIGKILL" in proxy.log_tail(50)
            # The other worker went with it: nothing is left serving on the listener.
            assert not Path(f"/proc/{survivor}").exists() or _zombie(survivor)
            assert not port_accepts(host, port)
        finally:
            await proxy.astop()


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"


SERVICE_ENTRY = f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.example.com]
  location: MESH_INTERNAL
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {SERVICE}}}]
"""
ABORT_ALL = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.example.com]
  http:
  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: echo.example.com}}]
"""


async def _statuses(n: int) -> list[int]:
    return [
        (await via_sidecar(CLIENT, "echo.example.com:9080", "/", timeout=10)).status
        for _ in range(n)
    ]


async def test_a_push_from_pilot_reaches_every_worker(tmp_path: Path) -> None:
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    (config_dir / "echo.yaml").write_text(SERVICE_ENTRY)
    pilot = PilotProcess(PILOT, config_dir, tmp_path / "logs")
    async with Upstream(SERVICE, 9080, name="echo"):
        await pilot.start()
        try:
            boot = sidecar_bootstrap("client-7d9c8b6f5-x1", CLIENT, pilot.xds)
            proxy = PymeshProxyProcess(
                boot, workdir=tmp_path / "proxy", extra_args=["--concurrency", "2"]
            )
            await proxy.astart(timeout=120)
            try:
                await wait_until(
                    lambda: port_accepts(CLIENT, 15001), "both workers bound 15001", timeout=30
                )
                await wait_until(
                    lambda: _all(_statuses(10), 200), "route to echo on every worker", timeout=30
                )
                result = await pilot.cli("apply", "-f", "-", stdin=ABORT_ALL)
                assert result.rc == 0, result.err
                await wait_until(
                    lambda: _all(_statuses(10), 418), "fault on every worker", timeout=30
                )
                # Every worker serves with the pushed rule: both take connections, all abort.
                lst = f"listener.{CLIENT}_15001"
                before = await stats(proxy.admin)
                assert await _statuses(CONNECTIONS) == [418] * CONNECTIONS
                after = await stats(proxy.admin)
                served = [
                    after[f"{lst}.worker_{i}.downstream_cx_total"]
                    - before[f"{lst}.worker_{i}.downstream_cx_total"]
                    for i in (0, 1)
                ]
                assert all(n > 0 for n in served) and sum(served) == CONNECTIONS, served
            finally:
                assert await proxy.astop() == 0
        finally:
            pilot.stop()


async def _all(statuses: Any, want: int) -> bool:
    return all(s == want for s in await statuses)


def test_an_injected_sidecar_with_two_workers_is_ready_and_quits_as_one(tmp_path: Path) -> None:
    """The sidecar Istio's injector describes (``proxy.istio.io/config: concurrency: 2``):
    its readiness port answers for both workers (503 PRE_INITIALIZING, no pilot here), and a
    Job's ``POST :15020/quitquitquit``, which reaches one worker's listener, stops them all."""
    ip = "127.0.55.20"
    env = {
        "POD_NAME": "reviews-v2-5d8f7c9b6-x2k4q", "POD_NAMESPACE": "default",
        "INSTANCE_IP": ip, "SERVICE_ACCOUNT": "bookinfo-reviews", "WORKLOAD_NAME": "reviews-v2",
        "ISTIO_METAJSON_LABELS": json.dumps({"app": "reviews", "version": "v2"}),
        "PILOT_ADDRESS": f"{ip}:{free_port(ip)}", "APP_PORT": "9080",
    }  # fmt: skip
    boot = yaml.safe_load(container_bootstrap("sidecar", env))
    admin, health, agent = (free_port(ip) for _ in range(3))
    boot["admin"]["address"]["socket_address"] = {"address": ip, "port_value": admin}
    admin_cluster = boot["static_resources"]["clusters"][1]["load_assignment"]
    admin_cluster["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] = sa(ip, admin)
    listeners = boot["static_resources"]["listeners"]
    listeners[0]["address"], listeners[1]["address"] = sa(ip, health), sa(ip, agent)
    log = (tmp_path / "proxy.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pymesh.cli.main", "proxy", "--concurrency", "2",
         "--config-yaml", yaml.safe_dump(boot)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        wait_for_port(ip, agent, timeout=60)
        workers = wait_for(lambda: len(workers_of(proc.pid)) == 2 and workers_of(proc.pid))
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open(f"http://{ip}:{health}/healthz/ready", timeout=30)
        assert info.value.code == 503
        assert info.value.read().decode().strip() == "PRE_INITIALIZING"
        request = urllib.request.Request(f"http://{ip}:{agent}/quitquitquit", method="POST")
        with opener.open(request, timeout=30) as resp:
            assert resp.status == 200
        assert proc.wait(60) == 0
        assert not any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        log.close()
        print((tmp_path / "proxy.log").read_text()[-3000:])


def wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s")
        time.sleep(0.05)
    return value
