"""Bookinfo with sidecars configured by pilot with ``envoy.access_loggers.http_grpc`` and
``envoy.tracers.zipkin``, reporting to one mixer: Istio's metrics with every label from both
reporters, the recent log, the graph, Zipkin traces, and a real Prometheus scraping mixer,
checked with Istio's own Grafana queries. Every test runs twice: with real Envoy sidecars,
then with pymesh's own, which must give the same numbers.
The exact counts are those of the module's first page loads: the Prometheus tests, last in
the module, add traffic of their own.

sleep (127.0.7.14) → productpage-v1 (.10) → details-v1 (.11) and reviews-v2 (.12) →
ratings-v1 (.13): pymesh's Bookinfo apps, each behind its sidecar (process mode: the apps use
their sidecar as ``HTTP_PROXY``). Pilot, mixer and Prometheus run on 127.0.7.100-102.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from mixer.dashboard import vendor_missing
from mixer.server import Mixer
from pymesh.cli.dashboard import DASHBOARDS_DIR
from pymesh.demo.pods import pod_env
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
from tests.support.grafana import load_dashboard, panels, resolve_variables, substitute
from tests.support.procs import ManagedProcess, async_wait_for_port
from tests.support.prometheus import PrometheusServer, find_prometheus, promtool_check_metrics

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.xdist_group("mixer-envoy"),
    pytest.mark.asyncio(loop_scope="module"),
]

MIXER = address(TELEMETRY_NET, 100)
PILOT = address(TELEMETRY_NET, 101)
SLEEP = address(TELEMETRY_NET, 14)
PRODUCTPAGE = address(TELEMETRY_NET, 10)
BOOKINFO = SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo.yaml"
# pod, ip, labels, service account, app module and args
PODS = (
    ("productpage-v1-6b746f74dc-x1", 10, {"app": "productpage", "version": "v1"},
     "bookinfo-productpage", ["pymesh.samples.bookinfo.productpage"]),
    ("details-v1-79f774bdb9-x1", 11, {"app": "details", "version": "v1"},
     "bookinfo-details", ["pymesh.samples.bookinfo.details"]),
    ("reviews-v2-65c4dc6fdc-x1", 12, {"app": "reviews", "version": "v2"},
     "bookinfo-reviews", ["pymesh.samples.bookinfo.reviews", "--version", "v2"]),
    ("ratings-v1-7dc98c7588-x1", 13, {"app": "ratings", "version": "v1"},
     "bookinfo-ratings", ["pymesh.samples.bookinfo.ratings"]),
    ("sleep-9454cc476-x1", 14, {"app": "sleep"}, "sleep", []),
)  # fmt: skip
REQUESTS = 20
FAILURES = 3  # requests for a page productpage does not have: 404
#: calls per reporter: each page load is sleep→productpage, →details, →reviews, →ratings
CALLS = 4 * REQUESTS - 3 * FAILURES


@dataclass
class Mesh:
    mixer: Mixer
    pilot: PilotProcess
    proxies: list[Any]
    kind: str  # the sidecars: "envoy" or "pymesh"


async def page(path: str = "/productpage") -> Any:
    """A request as the sleep pod's curl sends it: through its sidecar to productpage."""
    return await via_sidecar(SLEEP, "productpage:9080", path, timeout=10.0)


@pytest_asyncio.fixture(
    scope="module",
    loop_scope="module",
    params=[pytest.param("envoy", marks=pytest.mark.envoy), "pymesh"],
)
async def mesh(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Mesh]:
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"mixer-{kind}")
    config_dir = tmp / "config"
    config_dir.mkdir()
    shutil.copy(BOOKINFO, config_dir / "bookinfo.yaml")
    apps: list[ManagedProcess] = []
    proxies: list[Any] = []
    async with running_mixer(MIXER) as mixer:
        mesh_yaml = tmp / "mesh.yaml"
        mesh_yaml.write_text(
            "defaultConfig:\n"
            f"  envoyAccessLogService: {{address: '{MIXER}:{mixer.grpc_port}'}}\n"
            "  tracing:\n"
            "    sampling: 100\n"
            f"    zipkin: {{address: '{MIXER}:{mixer.site('zipkin').port}'}}\n"
        )
        pilot = PilotProcess(PILOT, config_dir, tmp / "logs", mesh_config=str(mesh_yaml))
        try:
            await pilot.start()
            for pod, host, labels, sa, module in PODS:
                ip = address(TELEMETRY_NET, host)
                if module:
                    env = pod_env(pod, "default", sa, ip, os.environ)
                    argv = [sys.executable, "-m", module[0], "--host", ip, "--port", "9080"]
                    app = ManagedProcess(
                        [*argv, *module[1:]], log_path=tmp / "logs" / f"{pod}.log", env=env,
                        die_with_parent=False,
                    )  # fmt: skip
                    apps.append(app.start())
                boot = sidecar_bootstrap(pod, ip, pilot.xds, labels=labels, service_account=sa)
                proxies.append(await start_proxy(kind, boot, tmp / kind, pod))
            for app, (_pod, host, *_rest) in zip(apps, PODS, strict=False):
                await async_wait_for_port(address(TELEMETRY_NET, host), 9080, 15.0, proc=app)
            await pilot.wait_synced([node_id(p[0], address(TELEMETRY_NET, p[1])) for p in PODS])
            for i in range(REQUESTS):
                resp = await page("/no-such-page" if i < FAILURES else "/productpage")
                assert resp.status == (404 if i < FAILURES else 200), resp
                if i >= FAILURES:
                    assert b"glyphicon-star" in resp.body  # reviews v2 reached ratings
            yield Mesh(mixer, pilot, proxies, kind)
        finally:
            for proxy in reversed(proxies):
                await proxy.astop()
            for app in apps:
                app.stop()
            pilot.stop()


async def _metrics(mesh: Mesh) -> str:
    status, text = await get_text(url(mesh.mixer, "metrics", "/metrics"))
    assert status == 200
    return text


async def _reported(mesh: Mesh) -> str:
    async def both_sides() -> str | None:
        text = await _metrics(mesh)
        done = all(
            sample_value(text, "istio_requests_total", reporter=r) >= CALLS
            for r in ("source", "destination")
        )
        return text if done else None

    text: str = await wait_until(both_sides, "both sidecars' reports")
    return text


def _workload_labels(side: str, workload: str, app: str, version: str) -> dict[str, str]:
    return {
        f"{side}_workload": workload,
        f"{side}_workload_namespace": "default",
        f"{side}_app": app,
        f"{side}_version": version,
        f"{side}_canonical_service": app,
        f"{side}_canonical_revision": version,
    }


async def test_istio_requests_total_has_istio_labels_from_both_sides(mesh: Mesh) -> None:
    text = await _reported(mesh)
    call = {
        **_workload_labels("source", "productpage-v1", "productpage", "v1"),
        **_workload_labels("destination", "reviews-v2", "reviews", "v2"),
        "destination_service": "reviews.default.svc.cluster.local",
        "destination_service_name": "reviews",
        "destination_service_namespace": "default",
        "request_protocol": "http",
        "response_code": "200",
        "grpc_response_status": "-",
        "response_flags": "-",
    }
    found = samples(text, "istio_requests_total")
    for reporter, policy in (("source", "unknown"), ("destination", "none")):
        ok = [
            (lab, v)
            for lab, v in found
            if lab["reporter"] == reporter and all(lab[k] == w for k, w in call.items())
        ]
        assert len(ok) == 1, (reporter, found)
        labels, value = ok[0]
        assert value == REQUESTS - FAILURES
        assert labels["connection_security_policy"] == policy
        # without mTLS there are no principals to report
        assert labels["source_principal"] == labels["destination_principal"] == "unknown"
        not_found = sample_value(
            text, "istio_requests_total", reporter=reporter, response_code="404",
            source_workload="sleep", destination_workload="productpage-v1",
            destination_service="productpage.default.svc.cluster.local",
        )  # fmt: skip
        assert not_found == FAILURES
    assert {lab["destination_workload"] for lab, _ in found} == {
        "productpage-v1", "details-v1", "reviews-v2", "ratings-v1",
    }  # fmt: skip
    assert "unknown" not in {lab["source_workload"] for lab, _ in found}
    hist = samples(text, "istio_request_duration_milliseconds_count")
    assert sum(v for lab, v in hist if lab["reporter"] == "source") == CALLS
    buckets = [lab["le"] for lab, _ in samples(text, "istio_request_bytes_bucket")]
    assert "+Inf" in buckets and "0.5" in buckets
    assert sample_value(text, "istio_response_bytes_sum", destination_workload="ratings-v1") > 0


async def test_recent_log_is_searchable_by_workload_and_status(mesh: Mesh) -> None:
    await _reported(mesh)
    logs = await get_json(url(mesh.mixer, "dashboard", "/api/logs?workload=reviews-v2&limit=100"))
    # reviews reports each call it served and each call it made to ratings
    assert len(logs) == 2 * (REQUESTS - FAILURES)
    assert {e["reporter"] for e in logs} == {"source", "destination"}
    missing = await get_json(
        url(mesh.mixer, "dashboard", "/api/logs?workload=productpage-v1.default&status=4xx")
    )
    assert len(missing) == FAILURES
    entry = missing[0]
    assert (entry["response_code"], entry["path"]) == (404, "/no-such-page")
    assert (entry["reporter"], entry["source_workload"]) == ("destination", "sleep")
    assert entry["upstream_cluster"] == "inbound|9080||"
    assert await get_json(url(mesh.mixer, "dashboard", "/api/logs?status=5xx")) == []
    status, body = await get_text(url(mesh.mixer, "dashboard", "/api/logs?status=6xx"))
    assert status == 400 and "5xx" in body


async def test_graph_has_every_bookinfo_call_with_rates_and_latency(mesh: Mesh) -> None:
    await _reported(mesh)
    graph = await get_json(url(mesh.mixer, "dashboard", "/api/graph?window=300"))
    edges = {(e["source"], e["target"]): e for e in graph["edges"]}
    for caller, service, callee in (
        ("sleep", "productpage", "productpage-v1"),
        ("productpage-v1", "details", "details-v1"),
        ("productpage-v1", "reviews", "reviews-v2"),
        ("reviews-v2", "ratings", "ratings-v1"),
    ):
        svc = f"service:default:{service}.default.svc.cluster.local"
        call = edges[(f"workload:default:{caller}", svc)]
        assert edges[(svc, f"workload:default:{callee}")]["requests"] == call["requests"]
        assert call["protocol"] == "http" and call["mtls"] is False
        assert call["p50_ms"] is not None and call["p99_ms"] >= call["p50_ms"]
        assert call["error_rate"] == 0.0  # a 404 is the client's error, not the service's
    productpage = "service:default:productpage.default.svc.cluster.local"
    assert edges[("workload:default:sleep", productpage)]["requests"] == REQUESTS
    assert len(graph["edges"]) == 8


async def test_a_page_load_is_one_trace_in_bookinfo_order(mesh: Mesh) -> None:
    await _reported(mesh)
    base = url(mesh.mixer, "zipkin", "/api/v2")
    names = {"sleep.default", "productpage.default", "details.default", "reviews.default",
             "ratings.default"}  # fmt: skip

    async def services() -> Any:
        found = await get_json(base + "/services")
        return found if names <= set(found) else None

    await wait_until(services, "every service in the span store")

    async def complete() -> Any:
        # sidecars post spans in batches: wait for every page load's eight spans
        found = await get_json(base + "/traces?serviceName=ratings.default&limit=100")
        whole = [t for t in found if len(t) == 8]
        return found if len(whole) == len(found) == REQUESTS - FAILURES else None

    traces = await wait_until(complete, "every span of every page load")
    for trace in traces:
        spans = {s["id"]: s for s in trace}
        assert len({s["traceId"] for s in trace}) == 1

        def chain(span: dict[str, Any], spans: dict[str, Any] = spans) -> list[str]:
            out = []
            while span is not None:
                out.append(f"{span['localEndpoint']['serviceName']}:{span['kind']}")
                span = spans.get(span.get("parentId", ""))
            return out

        ratings = next(s for s in trace if s["localEndpoint"]["serviceName"] == "ratings.default")
        assert chain(ratings) == [
            "ratings.default:SERVER", "reviews.default:CLIENT", "reviews.default:SERVER",
            "productpage.default:CLIENT", "productpage.default:SERVER", "sleep.default:CLIENT",
        ]  # fmt: skip
        details = next(s for s in trace if s["localEndpoint"]["serviceName"] == "details.default")
        assert chain(details)[1:] == chain(ratings)[3:]  # a sibling of the reviews call
    one = await get_json(base + f"/trace/{traces[0][0]['traceId']}")
    assert {s["id"] for s in one} == {s["id"] for s in traces[0]}
    status, _ = await get_text(base + "/trace/00000000000000000000000000000bad")
    assert status == 404
    end = int(time.time() * 1000) + 60_000
    deps = await get_json(base + f"/dependencies?endTs={end}&lookback=3600000")
    links = {(d["parent"], d["child"]): d["callCount"] for d in deps}
    assert links == {
        ("sleep.default", "productpage.default"): REQUESTS,
        ("productpage.default", "details.default"): REQUESTS - FAILURES,
        ("productpage.default", "reviews.default"): REQUESTS - FAILURES,
        ("reviews.default", "ratings.default"): REQUESTS - FAILURES,
    }


# -- the real Prometheus ------------------------------------------------------------------------
RATE = 10.0  # page loads per second during the scraped traffic
DURATION = 10.0
#: Grafana's $__rate_interval: wide enough to hold the whole scraped traffic
RATE_INTERVAL = "30s"
DASHBOARDS = SAMPLES / "grafana-dashboards"


@dataclass
class Phase:
    start: float  # wall time of the first request
    sent: int
    counted: float  # wall time by which Prometheus had scraped every report of it


@dataclass
class Scraped:
    prometheus: PrometheusServer
    pages: Phase  # page loads through sleep's sidecar: every Bookinfo call
    calls: Phase  # productpage's sidecar calling reviews, one call per request sent


async def _steady(send: Callable[[], Awaitable[Any]], rate: float, duration: float) -> Phase:
    """``rate`` requests per second for ``duration`` seconds (on schedule), each answered 200."""
    loop = asyncio.get_running_loop()
    begin, wall, sent = loop.time(), time.time(), 0
    while (due := begin + sent / rate) < begin + duration:
        await asyncio.sleep(max(0.0, due - loop.time()))
        resp = await send()
        assert resp.status == 200, resp
        sent += 1
    return Phase(wall, sent, 0.0)


async def _scraped(prom: PrometheusServer, total: str, phase: Phase, before: float) -> Phase:
    async def all_scraped() -> bool:
        [now] = await prom.query(total)
        return float(now["value"][1]) >= before + phase.sent

    await wait_until(all_scraped, "Prometheus to scrape every report", timeout=30)
    return Phase(phase.start, phase.sent, time.time())


async def _value(prom: PrometheusServer, expr: str) -> float:
    [sample] = await prom.query(expr)
    return float(sample["value"][1])


#: what productpage's sidecar reported of its calls to reviews v2 that succeeded
PP_TO_REVIEWS = (
    'istio_requests_total{reporter="source",source_workload="productpage-v1",'
    'destination_workload="reviews-v2",destination_service_name="reviews",'
    'response_code="200",request_protocol="http"}'
)
SLEEP_CALLS = 'sum(istio_requests_total{reporter="source",source_workload="sleep"})'


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def scraped(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scraped]:
    if find_prometheus() is None:
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    await _reported(mesh)
    metrics = mesh.mixer.site("metrics")
    prom = PrometheusServer(
        address(TELEMETRY_NET, 102),
        tmp_path_factory.mktemp("prometheus"),
        {"mixer": [f"{MIXER}:{metrics.port}"]},
        # rate() extrapolates to the window's edges by up to one scrape interval: a short
        # interval keeps that within a few percent of the window
        interval="500ms",
    )
    await prom.start()
    try:
        # The series exist (the module's first requests) before the traffic starts, so
        # rate() over a window that opens before the traffic sees all of it.
        await wait_until(lambda: prom.query(PP_TO_REVIEWS), "the first scrape")
        await asyncio.sleep(2.0)
        before = await _value(prom, SLEEP_CALLS)
        pages = await _scraped(prom, SLEEP_CALLS, await _steady(page, RATE, DURATION), before)
        # Then calls as productpage's app makes them, so that every request sent is one
        # call to reviews (a page load under a busy machine may retry its call).
        await asyncio.sleep(1.0)
        before = await _value(prom, f"sum({PP_TO_REVIEWS})")

        async def reviews() -> Any:
            return await via_sidecar(PRODUCTPAGE, "reviews:9080", "/reviews/0", timeout=10.0)

        calls = await _scraped(
            prom, f"sum({PP_TO_REVIEWS})", await _steady(reviews, RATE, DURATION), before
        )
        yield Scraped(prom, pages, calls)
    finally:
        prom.stop()


async def test_prometheus_rate_of_productpage_to_reviews_matches_requests_sent(
    scraped: Scraped,
) -> None:
    calls, prom = scraped.calls, scraped.prometheus
    [series] = await prom.query(f"{PP_TO_REVIEWS}[2m]", at=calls.counted)
    points = [(float(t), float(v)) for t, v in series["values"]]
    # The window runs from the last scrape before the first request to the first scrape
    # that had counted them all. rate() extrapolates a window's unsampled edges with the
    # average slope, which would add the flat time around the traffic to the count.
    first = max(t for t, _ in points if t <= calls.start)
    base = dict(points)[first]
    last = min(t for t, v in points if v >= base + calls.sent)
    window_ms = round((last - first) * 1000)
    [sample] = await prom.query(f"sum(rate({PP_TO_REVIEWS}[{window_ms}ms]))", at=last)
    measured = float(sample["value"][1])
    expected = calls.sent / (window_ms / 1000)
    assert measured == pytest.approx(expected, rel=0.02), (measured, expected, points)


def _expected_empty(expr: str) -> str | None:
    """Why a dashboard query has no data in this mesh, when Istio's semantics say so."""
    if 'connection_security_policy="mutual_tls"' in expr or 'principal=~"spiffe' in expr:
        return "no mutual TLS in this mesh (and a source never reports mutual_tls)"
    if "istio_tcp_" in expr and "istio_request" not in expr:
        return "no TCP traffic: process-mode pods carry HTTP only"
    return None


async def _check_dashboard(scraped: Scraped, path: Any, chosen: dict[str, str]) -> list[str]:
    # When every page load had been scraped: a scrape that failed later (the machine is
    # busy) would mark the series stale from then on.
    at = scraped.pages.counted

    async def query(expr: str) -> list[dict[str, Any]]:
        return await scraped.prometheus.query(expr, at=at)

    board = load_dashboard(path)
    values = await resolve_variables(board, query, chosen, RATE_INTERVAL)
    problems = []
    checked = 0
    for panel in panels(board):
        for raw in panel.exprs:
            expr = substitute(raw, values)
            assert "$" not in expr, f"{panel.title}: unresolved variable in {expr}"
            result = await query(expr)
            why = _expected_empty(raw)
            if why is None and not result:
                problems.append(f"{path.name}: {panel.title!r}: no data: {expr}")
            elif why is not None and result:
                problems.append(f"{path.name}: {panel.title!r}: has data now ({why}): {expr}")
            checked += 1
    assert checked >= 5, path
    return problems


@pytest.mark.parametrize(
    ("name", "chosen"),
    [
        ("istio-mesh-dashboard.gen.json", {}),
        ("istio-service-dashboard.json", {"service": "reviews.default.svc.cluster.local"}),
        ("istio-workload-dashboard.json", {"namespace": "default", "workload": "reviews-v2"}),
        ("istio-workload-dashboard.json", {"namespace": "default", "workload": "productpage-v1"}),
    ],
)
async def test_istio_grafana_dashboard_queries_return_data(
    scraped: Scraped, name: str, chosen: dict[str, str]
) -> None:
    path = DASHBOARDS / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    problems = await _check_dashboard(scraped, path, chosen)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("name", "chosen"),
    [
        ("pymesh-mesh.json", {}),
        ("pymesh-service.json", {"service": "reviews.default.svc.cluster.local"}),
        ("pymesh-workload.json", {"namespace": "default", "workload": "reviews-v2"}),
    ],
)
async def test_shipped_grafana_dashboards_return_data(
    scraped: Scraped, name: str, chosen: dict[str, str]
) -> None:
    problems = await _check_dashboard(scraped, DASHBOARDS_DIR / name, chosen)
    assert not problems, "\n".join(problems)


async def test_promtool_accepts_mixers_exposition(mesh: Mesh) -> None:
    text = await _reported(mesh)
    rc, findings = promtool_check_metrics(text)
    # Istio's documented name is in milliseconds; promtool's one lint finding is about it.
    assert all(
        f == 'istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"'
        for f in findings
    ), findings
    assert rc in (0, 3), findings


# -- the graph page in a real browser ------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts"


async def test_graph_page_draws_bookinfo_live_with_edge_metrics_and_a_trace(mesh: Mesh) -> None:
    playwright = pytest.importorskip("playwright.async_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip("chromium is not installed (Debian package chromium)")
    missing = vendor_missing()
    assert not missing, f"the page's drawing library is missing: run `make web` ({missing})"
    await _reported(mesh)
    for _ in range(3):  # traffic within the page's one-minute window
        assert (await page()).status == 200
    async with playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page_ = await browser.new_page(viewport={"width": 1400, "height": 1000})
            await page_.goto(url(mesh.mixer, "dashboard", "/"), timeout=20_000)
            # the drawing library is loaded and has laid out every workload and call
            await page_.wait_for_function(
                "window.pymeshGraph && window.pymeshGraph.edges().length >= 8", timeout=20_000
            )
            nodes = await page_.evaluate(
                "window.pymeshGraph.nodes().map(n => [n.data('kind'), n.data('label')])"
            )
            workloads = {label for kind, label in nodes if kind == "workload"}
            assert workloads == {"sleep", "productpage-v1", "details-v1", "reviews-v2",
                                 "ratings-v1"}  # fmt: skip
            services = {label for kind, label in nodes if kind == "service"}
            assert services == {"productpage", "details", "reviews", "ratings"}
            positions = await page_.evaluate(
                "window.pymeshGraph.nodes().map(n => [n.position('x'), n.position('y')])"
            )
            assert len({(round(x), round(y)) for x, y in positions}) == len(positions)
            rows = await page_.locator("#edge-table tbody tr").count()
            assert rows == 8
            # per-edge metrics on click
            await page_.locator("#edge-table tbody tr", has_text="ratings").first.click()
            details = page_.locator("#detail-list")
            await details.get_by_text("p99").wait_for(timeout=5_000)
            assert "ratings" in await details.inner_text()
            # live: new traffic shows up without reloading the page (over 15 minutes, so
            # that nothing leaves the window meanwhile)
            await page_.select_option("#window", "900")
            await page_.wait_for_function("document.body.dataset.window === '900'")
            before = await page_.evaluate(
                "window.pymeshGraph.edges().map(e => e.data('requests')).reduce((a, b) => a + b)"
            )
            for _ in range(3):
                assert (await page()).status == 200
            await page_.wait_for_function(
                "window.pymeshGraph.edges().map(e => e.data('requests')).reduce((a, b) => a + b)"
                f" > {before}",
                timeout=15_000,
            )
            # a trace's waterfall: one row per span of the page load
            await page_.locator("#trace-list li").first.wait_for(timeout=10_000)
            # A page load whose eight spans have all arrived (sidecars post spans in
            # batches), as the newest-first list shows it; the list is refreshed as spans
            # arrive. (Sorted slowest first, the 15 rows shown may hold none: slow traces of
            # other tests' traffic fill them on a busy machine; the sort is checked below.)
            item = page_.locator("#trace-list li", has_text="sleep").filter(has_text="8 spans")
            await item.first.wait_for(timeout=30_000)
            trace_id = await item.first.get_attribute("data-trace")
            # by its id: the list refreshes live, and ``.first`` may be another trace by now
            await page_.locator(f'#trace-list li[data-trace="{trace_id}"]').click()
            await page_.locator("#waterfall .row").first.wait_for(timeout=5_000)
            assert await page_.locator("#trace-id").inner_text() == trace_id
            spans = await page_.locator("#waterfall .row").count()
            assert spans == 8  # sleep, productpage (x3), details, reviews (x2), ratings
            text = await page_.locator("#waterfall").inner_text()
            for service in ("sleep", "productpage", "details", "reviews", "ratings"):
                assert f"{service}.default" in text
            # slowest first: the listed durations do not increase
            await page_.locator("#slowest").click()
            await page_.wait_for_function(
                """() => {
                  const ms = [...document.querySelectorAll("#trace-list li")]
                    .map((li) => parseFloat(li.textContent.split(" — ")[1]));
                  return ms.length > 1 && ms.every((v, i) => i === 0 || ms[i - 1] >= v);
                }""",
                timeout=10_000,
            )
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / f"mixer-graph-{mesh.kind}.png"
            await page_.screenshot(path=str(shot), full_page=True)
        finally:
            await browser.close()
