"""Istio's metrics merging on the agent's ``/stats/prometheus``: the proxy's exposition, then
the app's (where ``ISTIO_PROMETHEUS_ANNOTATIONS`` says), then the agent's scrape failures;
a source that is down is left out, counted, and the rest is still served."""

from __future__ import annotations

import asyncio
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from auth.metrics_merge import app_metrics_url
from pymesh.errors import ConfigError
from tests.auth.conftest import start_ca
from tests.support import PROXY_STATS_NET, address
from tests.support.procs import ManagedProcess, async_wait_for_http, free_port
from tests.support.prometheus import promtool_check_metrics

HOST = address(PROXY_STATS_NET, 1)
PROXY_TEXT = (
    "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n"
    "# HELP istio_requests_total Requests, by Istio's standard labels.\n"
    "# TYPE istio_requests_total counter\n"
    'istio_requests_total{reporter="destination",source_workload="sleep"} 7.0\n'
)
APP_TEXT = (
    "# HELP app_orders_total Orders taken.\n# TYPE app_orders_total counter\n"
    "app_orders_total 3"  # no final newline: the merge adds it
)


@pytest.mark.parametrize(
    ("annotations", "url"),
    [
        (None, None),
        ('{"scrape": "false", "port": "9080"}', None),
        ('{"scrape": "true", "port": "9080"}', "http://10.0.0.5:9080/metrics"),
        ('{"scrape": "true", "port": "8443", "path": "stats", "scheme": "https"}',
         "https://10.0.0.5:8443/stats"),
    ],
)  # fmt: skip
def test_the_apps_metrics_url_comes_from_its_saved_annotations(
    annotations: str | None, url: str | None
) -> None:
    assert app_metrics_url(annotations, "10.0.0.5") == url


@pytest.mark.parametrize(
    "annotations",
    ["{", "[1]", '{"scrape": "true", "port": "http"}', '{"scrape": "true", "scheme": "ftp"}'],
)
def test_annotations_that_cannot_be_honoured_are_refused(annotations: str) -> None:
    with pytest.raises(ConfigError, match="ISTIO_PROMETHEUS_ANNOTATIONS"):
        app_metrics_url(annotations, "10.0.0.5")


async def _serve(text: str, path: str, port: int) -> web.AppRunner:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=text)

    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    return runner


def _get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


@pytest.fixture
async def sources() -> AsyncIterator[tuple[int, int, list[web.AppRunner]]]:
    proxy_port, app_port = free_port(HOST), free_port(HOST)
    runners = [
        await _serve(PROXY_TEXT, "/stats/prometheus", proxy_port),
        await _serve(APP_TEXT, "/metrics", app_port),
    ]
    yield proxy_port, app_port, runners
    for runner in runners:
        await runner.cleanup()


async def test_the_agent_serves_the_proxys_and_the_apps_metrics_on_one_port(
    tmp_path: Path, sources: tuple[int, int, list[web.AppRunner]]
) -> None:
    proxy_port, app_port, runners = sources
    ca = await start_ca(tmp_path / "ca")
    (tmp_path / "token").write_text(ca.issuer.issue("default", "reviews"))
    (tmp_path / "root.pem").write_text(ca.root)
    status = free_port(HOST)
    socket_path = Path("/tmp") / f"pm-merge-{status}.sock"
    agent = ManagedProcess(
        [sys.executable, "-m", "pymesh.cli.main", "agent", "--ca-address", ca.address,
         "--ca-root", str(tmp_path / "root.pem"), "--token-file", str(tmp_path / "token"),
         "--namespace", "default", "--service-account", "reviews",
         "--sds-socket", str(socket_path), "--status-address", f"{HOST}:{status}",
         "--proxy-stats-url", f"http://{HOST}:{proxy_port}/stats/prometheus",
         "--prometheus-annotations", f'{{"scrape":"true","port":"{app_port}"}}',
         "--app-host", HOST],
        log_path=tmp_path / "agent.log", name="agent", die_with_parent=False,
    )  # fmt: skip
    try:
        agent.start()
        await async_wait_for_http(HOST, status, "/ready", 20, proc=agent)
        url = f"http://{HOST}:{status}/stats/prometheus"
        merged = await asyncio.to_thread(_get, url)
        assert merged.startswith(PROXY_TEXT + APP_TEXT + "\n")
        assert 'istio_agent_scrape_failures_total{type="application"} 0' in merged
        rc, findings = promtool_check_metrics(merged)
        assert rc in (0, 3) and all(f.startswith("envoy_") for f in findings), findings
        # The app goes away: the proxy's metrics are still served, the failure counted.
        await runners.pop().cleanup()
        merged = await asyncio.to_thread(_get, url)
        assert merged.startswith(PROXY_TEXT) and "app_orders_total" not in merged
        assert 'istio_agent_scrape_failures_total{type="application"} 1' in merged
    finally:
        agent.stop()
        await ca.server.stop()
        socket_path.unlink(missing_ok=True)
