"""Istio's standard metrics computed in each pymesh sidecar (``istio.metadata_exchange`` and
``istio.stats``, which pilot adds to every HTTP connection manager when the mesh reports to
mixer), served with the proxy's Envoy statistics on its ``/stats/prometheus``.

sleep (127.0.53.14) → productpage-v1 (.10) → details-v1 (.11) and reviews-v1 (.12), each
app behind its ``pymesh proxy`` (process mode). Pilot and mixer run on .101 and .100. Each
sidecar's series must be exactly the ones mixer keeps for that reporter's side of the same
calls: same label sets, same counts.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from mixer.server import Mixer
from pymesh.demo.pods import pod_env
from tests.integration.pilot_harness import (
    SAMPLES,
    PilotProcess,
    node_id,
    sidecar_bootstrap,
    start_proxy,
    via_sidecar,
)
from tests.mixer.harness import get_text, running_mixer, samples, url, wait_until
from tests.support import PROXY_STATS_NET, address
from tests.support.procs import ManagedProcess, async_wait_for_port
from tests.support.prometheus import find_prometheus, promtool_check_metrics

pytestmark = [
    pytest.mark.timeout(150),
    pytest.mark.xdist_group("proxy-istio-stats"),
    pytest.mark.asyncio(loop_scope="module"),
]

MIXER = address(PROXY_STATS_NET, 100)
PILOT = address(PROXY_STATS_NET, 101)
SLEEP = address(PROXY_STATS_NET, 14)
BOOKINFO = SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo.yaml"
# pod, host part, labels, service account, app module and args
PODS = (
    ("productpage-v1-6b746f74dc-x1", 10, {"app": "productpage", "version": "v1"},
     "bookinfo-productpage", ["pymesh.samples.bookinfo.productpage"]),
    ("details-v1-79f774bdb9-x1", 11, {"app": "details", "version": "v1"},
     "bookinfo-details", ["pymesh.samples.bookinfo.details"]),
    ("reviews-v1-545db77b95-x1", 12, {"app": "reviews", "version": "v1"},
     "bookinfo-reviews", ["pymesh.samples.bookinfo.reviews", "--version", "v1"]),
    ("sleep-9454cc476-x1", 14, {"app": "sleep"}, "sleep", []),
)  # fmt: skip
PAGES = 12
MISSING = 2  # page loads of a page productpage does not have: 404


@dataclass
class Mesh:
    mixer: Mixer
    proxies: dict[str, Any]  # by app
    headers: list[tuple[str, str]]  # what sleep's app got back with its last page


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def mesh(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mesh]:
    tmp = tmp_path_factory.mktemp("proxy-istio-stats")
    config_dir = tmp / "config"
    config_dir.mkdir()
    shutil.copy(BOOKINFO, config_dir / "bookinfo.yaml")
    apps: list[ManagedProcess] = []
    proxies: dict[str, Any] = {}
    async with running_mixer(MIXER) as mixer:
        mesh_yaml = tmp / "mesh.yaml"
        mesh_yaml.write_text(
            f"defaultConfig:\n  envoyAccessLogService: {{address: '{MIXER}:{mixer.grpc_port}'}}\n"
        )
        pilot = PilotProcess(PILOT, config_dir, tmp / "logs", mesh_config=str(mesh_yaml))
        try:
            await pilot.start()
            for pod, host, labels, sa, module in PODS:
                ip = address(PROXY_STATS_NET, host)
                if module:
                    env = pod_env(pod, "default", sa, ip, os.environ)
                    argv = [sys.executable, "-m", module[0], "--host", ip, "--port", "9080"]
                    app = ManagedProcess(
                        [*argv, *module[1:]], log_path=tmp / "logs" / f"{pod}.log", env=env,
                        die_with_parent=False,
                    )  # fmt: skip
                    apps.append(app.start())
                boot = sidecar_bootstrap(pod, ip, pilot.xds, labels=labels, service_account=sa)
                proxies[labels["app"]] = await start_proxy("pymesh", boot, tmp / "pymesh", pod)
            for app, (_pod, host, *_rest) in zip(apps, PODS, strict=False):
                await async_wait_for_port(address(PROXY_STATS_NET, host), 9080, 15.0, proc=app)
            ids = [node_id(p[0], address(PROXY_STATS_NET, p[1])) for p in PODS]
            await pilot.wait_synced(ids)
            headers: list[tuple[str, str]] = []
            for i in range(PAGES):
                path = "/no-such-page" if i < MISSING else "/productpage"
                resp = await via_sidecar(SLEEP, "productpage:9080", path, timeout=10.0)
                assert resp.status == (404 if i < MISSING else 200), resp
                headers = list(resp.headers)
            yield Mesh(mixer, proxies, headers)
        finally:
            for proxy in reversed(list(proxies.values())):
                await proxy.astop()
            for app in apps:
                app.stop()
            pilot.stop()


async def _exposition(proxy: Any) -> str:
    host, port = proxy.admin
    status, text = await get_text(f"http://{host}:{port}/stats/prometheus")
    assert status == 200, text
    return text


def _series(text: str, reporter: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(labels.items())): value
        for labels, value in samples(text, "istio_requests_total")
        if labels["reporter"] == reporter
    }


async def _all_counted(mesh: Mesh) -> tuple[str, dict[str, str]]:
    """Mixer's exposition and each sidecar's, once both sides of every call are in."""
    calls = 3 * (PAGES - MISSING) + MISSING  # sleep→productpage, →details, →reviews

    async def counted() -> tuple[str, dict[str, str]] | None:
        _, mixer = await get_text(url(mesh.mixer, "metrics", "/metrics"))
        proxies = {app: await _exposition(p) for app, p in mesh.proxies.items()}
        total = sum(
            sum(_series(t, r).values()) for t in proxies.values() for r in ("source", "destination")
        )
        mixed = sum(sum(_series(mixer, r).values()) for r in ("source", "destination"))
        return (mixer, proxies) if total == mixed == 2 * calls else None

    found: tuple[str, dict[str, str]] = await wait_until(counted, "every call on both sides")
    return found


async def test_each_sidecar_counts_its_side_of_each_call_with_mixers_labels(mesh: Mesh) -> None:
    mixer, proxies = await _all_counted(mesh)
    # A sidecar reports as source what its app called, as destination what its app served.
    mine = {
        "sleep": ({"source_workload": "sleep"}, {}),
        "productpage": (
            {"source_workload": "productpage-v1"},
            {"destination_workload": "productpage-v1"},
        ),
        "details": ({}, {"destination_workload": "details-v1"}),
        "reviews": ({}, {"destination_workload": "reviews-v1"}),
    }  # fmt: skip
    for app, text in proxies.items():
        for reporter, who in zip(("source", "destination"), mine[app], strict=True):
            expected = {
                key: value
                for key, value in _series(mixer, reporter).items()
                if who and all((k, v) in key for k, v in who.items())
            }
            assert _series(text, reporter) == expected, (app, reporter)
    # Both sides knew each other: every label of the productpage → reviews call is filled.
    [(labels, value)] = [
        (dict(key), v)
        for key, v in _series(proxies["productpage"], "source").items()
        if dict(key)["destination_workload"] == "reviews-v1"
    ]
    assert value == PAGES - MISSING
    assert labels["source_app"] == "productpage" and labels["destination_version"] == "v1"
    assert labels["destination_service"] == "reviews.default.svc.cluster.local"
    assert labels["destination_canonical_service"] == "reviews"
    [(served, _)] = [
        (dict(key), v) for key, v in _series(proxies["reviews"], "destination").items()
    ]
    assert served["source_workload"] == "productpage-v1" and served["source_version"] == "v1"
    assert served["connection_security_policy"] == "none"
    missing = [
        dict(k)
        for k in _series(proxies["productpage"], "destination")
        if ("response_code", "404") in k
    ]
    assert len(missing) == 1 and missing[0]["source_workload"] == "sleep"


async def test_the_exchange_headers_never_reach_an_app(mesh: Mesh) -> None:
    """The sidecar that learns its peer from the headers removes them: sleep's app got a
    response without them (its sidecar took productpage's)."""
    names = {name.lower() for name, _ in mesh.headers}
    assert "x-envoy-peer-metadata" not in names and "x-envoy-peer-metadata-id" not in names


async def test_the_proxy_exposition_has_envoy_and_istio_metrics_and_passes_promtool(
    mesh: Mesh,
) -> None:
    if find_prometheus() is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    _, proxies = await _all_counted(mesh)
    for app, text in proxies.items():
        assert "envoy_cluster_upstream_rq_total" in text or app == "sleep", app
        assert "# TYPE istio_requests_total counter" in text
        assert "# TYPE istio_request_duration_milliseconds histogram" in text
        rc, findings = promtool_check_metrics(text)
        # It parses (exit 1 otherwise); the lint findings left are Envoy's own (its stats
        # have no help text and its counters no _total, as in a real Envoy's exposition) and
        # Istio's documented milliseconds.
        istio = [f for f in findings if not f.startswith("envoy_")]
        assert all("milliseconds" in f for f in istio), (app, istio)
        assert rc in (0, 3), (app, findings)
