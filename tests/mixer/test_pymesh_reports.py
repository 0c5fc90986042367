"""pymesh's own sidecars, configured by pilot with ``envoy.access_loggers.http_grpc`` to the
mesh's ``mixer`` cluster (an HTTP/2 cluster), report to a real ``pymesh mixer``.

sleep (127.0.0.210) → details-v1 (.211), each behind a ``pymesh proxy`` (process mode: the
apps use their sidecar as ``HTTP_PROXY``) with its identity from ``pymesh agent``, so the two
sidecars talk mesh mTLS as Istio's do by default. Pilot (with its CA) runs on .201; mixer's
address (.200) is in
the mesh config from the start, but mixer itself is started only after the first requests:
those still succeed (reporting is fail-open), their reports wait in the sidecars' bounded
buffers, and reach mixer once the streams reconnect.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from pymesh.demo.pods import pod_env
from tests.integration.mtls_harness import TLS_MODE, MeshPod, MtlsMesh
from tests.integration.pilot_harness import (
    SAMPLES,
    PilotProcess,
    node_id,
    sidecar_bootstrap,
    start_proxy,
    via_sidecar,
)
from tests.mixer.harness import get_json, get_text, running_mixer, samples, url, wait_until
from tests.support.procs import ManagedProcess, async_wait_for_port, free_port

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.xdist_group("mixer-pymesh"),
    pytest.mark.asyncio(loop_scope="module"),
]

MIXER = "127.0.0.200"
PILOT = "127.0.0.201"
SLEEP = "127.0.0.210"
DETAILS = "127.0.0.211"
BOOKINFO = SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo.yaml"
BEFORE = 5  # requests sent while mixer is down
AFTER = 7  # requests sent once it is up


@dataclass
class Mesh:
    pilot: PilotProcess
    proxies: dict[str, Any]
    grpc_address: str
    zipkin_address: str
    tmp: Path


async def _stat(proxy: Any, name: str) -> int:
    status, text = await get_text(f"{proxy.admin_url}/stats?filter={name}")
    assert status == 200, text
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    tmp = tmp_path_factory.mktemp("mixer-pymesh")
    config_dir = tmp / "config"
    config_dir.mkdir()
    shutil.copy(BOOKINFO, config_dir / "bookinfo.yaml")
    grpc_address = f"{MIXER}:{free_port(MIXER)}"
    zipkin_address = f"{MIXER}:{free_port(MIXER)}"
    mesh_yaml = tmp / "mesh.yaml"
    mesh_yaml.write_text(
        "defaultConfig:\n"
        f"  envoyAccessLogService: {{address: '{grpc_address}'}}\n"
        f"  tracing: {{sampling: 100, zipkin: {{address: '{zipkin_address}'}}}}\n"
    )
    mtls = MtlsMesh(PILOT, config_dir, tmp, mesh_config=str(mesh_yaml))
    pilot = mtls.pilot
    env = pod_env("details-v1-79f774bdb9-x1", "default", "bookinfo-details", DETAILS, os.environ)
    app = ManagedProcess(
        [sys.executable, "-m", "pymesh.samples.bookinfo.details", "--host", DETAILS,
         "--port", "9080"],
        log_path=tmp / "logs" / "details.log", env=env, die_with_parent=False,
    )  # fmt: skip
    proxies: dict[str, Any] = {}
    try:
        await pilot.start()
        app.start()
        for pod, ip, labels, sa in (
            ("details-v1-79f774bdb9-x1", DETAILS, {"app": "details", "version": "v1"},
             "bookinfo-details"),
            ("sleep-9454cc476-x1", SLEEP, {"app": "sleep"}, "sleep"),
        ):  # fmt: skip
            identity = MeshPod(pod, "default", ip, sa)
            mtls.pods.append(identity)  # its agent stops with the mesh
            sds = await mtls.start_agent(identity)
            boot = sidecar_bootstrap(
                pod, ip, pilot.xds, labels={**labels, **TLS_MODE}, service_account=sa,
                sds_socket=sds,
            )  # fmt: skip
            proxies[labels["app"]] = await start_proxy("pymesh", boot, tmp / "proxies", pod)
        await async_wait_for_port(DETAILS, 9080, 15.0, proc=app)
        await pilot.wait_synced(
            [node_id("details-v1-79f774bdb9-x1", DETAILS), node_id("sleep-9454cc476-x1", SLEEP)]
        )
        yield Mesh(pilot, proxies, grpc_address, zipkin_address, tmp)
    finally:
        for proxy in proxies.values():
            await proxy.astop()
        app.stop()
        await mtls.stop()


async def _details() -> Any:
    return await via_sidecar(SLEEP, "details:9080", "/details/0", timeout=10.0)


async def test_requests_succeed_while_mixer_is_down_and_are_reported_once_it_is_up(
    mesh: Mesh,
) -> None:
    for _ in range(BEFORE):
        resp = await _details()
        assert resp.status == 200, resp
    sleep, details = mesh.proxies["sleep"], mesh.proxies["details"]
    # Each sidecar's stream tries mixer once its batch is flushed (after 1 s), fails, and
    # keeps the batch for the next attempt: nothing is written, nothing dropped.
    for proxy in (sleep, details):
        await wait_until(
            lambda p=proxy: "access log stream failed" in p.log_path.read_text(),
            f"{proxy.name}: a failed attempt to reach mixer",
        )
        assert await _stat(proxy, "access_logs.grpc_access_log.logs_written") == 0
        assert await _stat(proxy, "access_logs.grpc_access_log.logs_dropped") == 0

    running = running_mixer(
        MIXER, grpc_address=mesh.grpc_address, zipkin_address=mesh.zipkin_address
    )
    async with running as mixer:
        for _ in range(AFTER):
            resp = await _details()
            assert resp.status == 200, resp

        async def reported() -> str | None:
            status, text = await get_text(url(mixer, "metrics", "/metrics"))
            assert status == 200
            counts = {
                lab["reporter"]: v
                for lab, v in samples(text, "istio_requests_total")
                if lab["destination_workload"] == "details-v1"
            }
            done = counts.get("source") == counts.get("destination") == BEFORE + AFTER
            return text if done else None

        text = await wait_until(reported, "both sidecars' reports", timeout=40.0)
        want = {
            "source_workload": "sleep",
            "source_workload_namespace": "default",
            "source_app": "sleep",
            "source_canonical_service": "sleep",
            "destination_workload": "details-v1",
            "destination_workload_namespace": "default",
            "destination_app": "details",
            "destination_version": "v1",
            "destination_canonical_service": "details",
            "destination_canonical_revision": "v1",
            "destination_service": "details.default.svc.cluster.local",
            "destination_service_name": "details",
            "destination_service_namespace": "default",
            "request_protocol": "http",
            "response_code": "200",
            "grpc_response_status": "-",
            "response_flags": "-",
        }
        found = [
            lab for lab, _ in samples(text, "istio_requests_total") if lab.items() >= want.items()
        ]
        assert {lab["reporter"] for lab in found} == {"source", "destination"}, found
        # As Istio reports them: only the server side knows the connection was mutual TLS,
        # and names the caller by its certificate and itself by its own.
        policy = {lab["reporter"]: lab["connection_security_policy"] for lab in found}
        assert policy == {"source": "unknown", "destination": "mutual_tls"}
        server = next(lab for lab in found if lab["reporter"] == "destination")
        assert server["source_principal"] == "spiffe://cluster.local/ns/default/sa/sleep"
        assert server["destination_principal"] == (
            "spiffe://cluster.local/ns/default/sa/bookinfo-details"
        )
        durations = [
            v
            for lab, v in samples(text, "istio_request_duration_milliseconds_count")
            if lab["destination_workload"] == "details-v1"
        ]
        assert sum(durations) == 2 * (BEFORE + AFTER)
        sizes = [
            v
            for lab, v in samples(text, "istio_response_bytes_sum")
            if lab["destination_workload"] == "details-v1"
        ]
        assert all(v > 0 for v in sizes) and len(sizes) == 2
        for proxy in (sleep, details):
            assert await _stat(proxy, "access_logs.grpc_access_log.logs_written") == (
                BEFORE + AFTER
            )
            assert await _stat(proxy, "access_logs.grpc_access_log.logs_dropped") == 0


async def test_a_call_is_one_trace_of_the_caller_s_and_the_callee_s_spans(mesh: Mesh) -> None:
    running = running_mixer(
        MIXER, grpc_address=mesh.grpc_address, zipkin_address=mesh.zipkin_address
    )
    async with running as mixer:
        for _ in range(3):
            assert (await _details()).status == 200
        base = url(mixer, "zipkin", "/api/v2")

        async def whole() -> Any:
            traces = await get_json(base + "/traces?serviceName=details.default&limit=50")
            complete = [t for t in traces if len(t) == 2]
            return complete if len(complete) >= 3 else None

        # the sidecars flush every 5 spans or 5 s
        traces = await wait_until(whole, "three traces of two spans", timeout=30.0)
        for trace in traces:
            by_kind = {s["kind"]: s for s in trace}
            client, server = by_kind["CLIENT"], by_kind["SERVER"]
            assert client["localEndpoint"]["serviceName"] == "sleep.default"
            assert server["localEndpoint"]["serviceName"] == "details.default"
            assert server["parentId"] == client["id"] and "parentId" not in client
            assert client["traceId"] == server["traceId"] and len(client["traceId"]) == 32
            assert client["name"] == server["name"] == "details.default.svc.cluster.local:9080/*"
            assert client["tags"]["upstream_cluster"] == (
                "outbound|9080||details.default.svc.cluster.local"
            )
            assert server["tags"]["http.status_code"] == "200"
            assert server["duration"] <= client["duration"]
