"""Real Envoy sidecars, configured by pilot with ``envoy.access_loggers.http_grpc`` and
``envoy.tracers.zipkin``, report to mixer: Istio's metrics with every label, both reporters,
the recent log, the graph and Zipkin traces all come out of one run of real traffic.

productpage-v1 (Envoy, 127.0.7.10) → reviews:9080 → reviews-v1 (Envoy, 127.0.7.11) → the
reviews app (127.0.7.11:9080). Pilot and mixer run on 127.0.7.100-101.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from mixer.server import Mixer
from tests.integration.pilot_harness import (
    SAMPLES,
    PilotProcess,
    node_id,
    sidecar_bootstrap,
    start_proxy,
    via_sidecar,
)
from tests.mixer.harness import (
    get_json,
    get_text,
    running_mixer,
    sample_value,
    samples,
    url,
    wait_until,
)
from tests.support import TELEMETRY_NET, address
from tests.support.behaviours import Fixed
from tests.support.upstream import Upstream

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.xdist_group("mixer-envoy"),
    pytest.mark.asyncio(loop_scope="module"),
]

MIXER = address(TELEMETRY_NET, 100)
PILOT = address(TELEMETRY_NET, 101)
PRODUCTPAGE = address(TELEMETRY_NET, 10)
REVIEWS = address(TELEMETRY_NET, 11)
BOOKINFO = SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo.yaml"
REQUESTS = 20
FAILURES = 3
#: Istio's default retry policy (2 retries on 503): the callee sees each failure three times
ATTEMPTS = 3


@dataclass
class Mesh:
    mixer: Mixer
    pilot: PilotProcess
    proxies: list[Any]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    tmp = tmp_path_factory.mktemp("mixer-envoy")
    config_dir = tmp / "config"
    config_dir.mkdir()
    shutil.copy(BOOKINFO, config_dir / "bookinfo.yaml")
    async with (
        running_mixer(MIXER) as mixer,
        Upstream(REVIEWS, 9080, name="reviews-v1", routes={"/fail": Fixed(503)}),
    ):
        mesh_yaml = tmp / "mesh.yaml"
        mesh_yaml.write_text(
            "defaultConfig:\n"
            f"  envoyAccessLogService: {{address: '{MIXER}:{mixer.grpc_port}'}}\n"
            "  tracing:\n"
            "    sampling: 100\n"
            f"    zipkin: {{address: '{MIXER}:{mixer.site('zipkin').port}'}}\n"
        )
        pilot = PilotProcess(PILOT, config_dir, tmp / "logs", mesh_config=str(mesh_yaml))
        proxies: list[Any] = []
        try:
            await pilot.start()
            for pod, ip, labels, sa in (
                ("productpage-v1-6b746f74dc-x1", PRODUCTPAGE,
                 {"app": "productpage", "version": "v1"}, "bookinfo-productpage"),
                ("reviews-v1-5c6f4d9c7-x1", REVIEWS,
                 {"app": "reviews", "version": "v1"}, "bookinfo-reviews"),
            ):  # fmt: skip
                boot = sidecar_bootstrap(pod, ip, pilot.xds, labels=labels, service_account=sa)
                proxies.append(await start_proxy("envoy", boot, tmp / "envoy", pod))
            await pilot.wait_synced(
                [
                    node_id("productpage-v1-6b746f74dc-x1", PRODUCTPAGE),
                    node_id("reviews-v1-5c6f4d9c7-x1", REVIEWS),
                ]
            )
            for i in range(REQUESTS):
                path = "/fail" if i < FAILURES else "/reviews/0"
                resp = await via_sidecar(PRODUCTPAGE, "reviews:9080", path)
                assert resp.status == (503 if i < FAILURES else 200), resp
            yield Mesh(mixer, pilot, proxies)
        finally:
            for proxy in reversed(proxies):
                await proxy.astop()
            pilot.stop()


async def _metrics(mesh: Mesh) -> str:
    status, text = await get_text(url(mesh.mixer, "metrics", "/metrics"))
    assert status == 200
    return text


async def _reported(mesh: Mesh) -> str:
    async def both_sides() -> str | None:
        text = await _metrics(mesh)
        done = all(
            sample_value(text, "istio_requests_total", reporter=r) >= REQUESTS
            for r in ("source", "destination")
        )
        return text if done else None

    text: str = await wait_until(both_sides, "both sidecars' reports")
    return text


async def test_istio_requests_total_has_istio_labels_from_both_sides(mesh: Mesh) -> None:
    text = await _reported(mesh)
    common = {
        "source_workload": "productpage-v1",
        "source_workload_namespace": "default",
        "source_app": "productpage",
        "source_version": "v1",
        "source_canonical_service": "productpage",
        "source_canonical_revision": "v1",
        "destination_workload": "reviews-v1",
        "destination_workload_namespace": "default",
        "destination_app": "reviews",
        "destination_version": "v1",
        "destination_service": "reviews.default.svc.cluster.local",
        "destination_service_name": "reviews",
        "destination_service_namespace": "default",
        "destination_canonical_service": "reviews",
        "destination_canonical_revision": "v1",
        "request_protocol": "http",
        "grpc_response_status": "-",
    }
    found = samples(text, "istio_requests_total")
    for reporter, policy in (("source", "unknown"), ("destination", "none")):
        ok = [
            (lab, v)
            for lab, v in found
            if lab["reporter"] == reporter
            and lab["response_code"] == "200"
            and all(lab[k] == w for k, w in common.items())
        ]
        assert len(ok) == 1, (reporter, found)
        labels, value = ok[0]
        assert value == REQUESTS - FAILURES
        assert labels["response_flags"] == "-"
        assert labels["connection_security_policy"] == policy
        failed = sample_value(
            text, "istio_requests_total", reporter=reporter, response_code="503", **common
        )
        assert failed == FAILURES * (ATTEMPTS if reporter == "destination" else 1)
    # every label Istio documents is there, and nothing is left unknown for this call
    labels = ok[0][0]
    assert set(labels) >= {
        "reporter", "source_principal", "destination_principal", "response_flags",
        "connection_security_policy", "source_cluster", "destination_cluster",
    }  # fmt: skip
    hist = samples(text, "istio_request_duration_milliseconds_count")
    assert sum(v for lab, v in hist if lab["reporter"] == "source") == REQUESTS
    buckets = [lab["le"] for lab, _ in samples(text, "istio_request_bytes_bucket")]
    assert "+Inf" in buckets and "0.5" in buckets
    assert sample_value(text, "istio_response_bytes_sum", reporter="destination") > 0


async def test_recent_log_is_searchable_by_workload_and_status(mesh: Mesh) -> None:
    await _reported(mesh)
    logs = await get_json(url(mesh.mixer, "dashboard", "/api/logs?workload=reviews-v1&limit=100"))
    assert len(logs) == REQUESTS - FAILURES + FAILURES * ATTEMPTS
    assert {e["reporter"] for e in logs} == {"destination"}
    failed = await get_json(
        url(mesh.mixer, "dashboard", "/api/logs?workload=productpage-v1&status=5xx")
    )
    assert len(failed) == FAILURES
    entry = failed[0]
    assert entry["response_code"] == 503 and entry["path"] == "/fail"
    assert entry["response_flags"] == "URX"  # retries exhausted
    assert entry["destination_workload"] == "reviews-v1"
    assert entry["upstream_cluster"] == "outbound|9080||reviews.default.svc.cluster.local"
    status, body = await get_text(url(mesh.mixer, "dashboard", "/api/logs?status=6xx"))
    assert status == 400 and "5xx" in body


async def test_graph_has_the_call_with_rates_and_latency(mesh: Mesh) -> None:
    await _reported(mesh)
    graph = await get_json(url(mesh.mixer, "dashboard", "/api/graph?window=300"))
    ids = {n["id"] for n in graph["nodes"]}
    assert {
        "workload:default:productpage-v1",
        "service:default:reviews.default.svc.cluster.local",
        "workload:default:reviews-v1",
    } <= ids
    edges = {(e["source"], e["target"]): e for e in graph["edges"]}
    call = edges[
        ("workload:default:productpage-v1", "service:default:reviews.default.svc.cluster.local")
    ]
    assert call["requests"] == REQUESTS
    assert call["error_rate"] == pytest.approx(FAILURES / REQUESTS)
    assert call["protocol"] == "http" and call["mtls"] is False
    assert call["p50_ms"] is not None and call["p99_ms"] >= call["p50_ms"]


async def test_envoy_spans_reach_the_zipkin_api(mesh: Mesh) -> None:
    await _reported(mesh)
    base = url(mesh.mixer, "zipkin", "/api/v2")

    async def services() -> Any:
        found = await get_json(base + "/services")
        return found if {"productpage.default", "reviews.default"} <= set(found) else None

    await wait_until(services, "services in the span store")
    traces = await get_json(base + "/traces?serviceName=reviews.default&limit=100")
    assert traces
    for trace in traces:
        by_kind = {s.get("kind"): s for s in trace}
        client, server = by_kind["CLIENT"], by_kind["SERVER"]
        assert client["localEndpoint"]["serviceName"] == "productpage.default"
        assert server["localEndpoint"]["serviceName"] == "reviews.default"
        assert server["parentId"] == client["id"]
    one = await get_json(base + f"/trace/{traces[0][0]['traceId']}")
    assert {s["id"] for s in one} == {s["id"] for s in traces[0]}
    status, _ = await get_text(base + "/trace/00000000000000000000000000000bad")
    assert status == 404
    end = int(time.time() * 1000) + 60_000
    deps = await get_json(base + f"/dependencies?endTs={end}&lookback=3600000")
    assert {"parent": "productpage.default", "child": "reviews.default"}.items() <= next(
        d for d in deps if d["parent"] == "productpage.default"
    ).items()
