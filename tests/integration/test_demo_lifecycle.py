"""``pymesh demo`` as ``make demo`` runs it (foreground, Ctrl-C to stop), and what a user
does with a running demo: the page, ``status``, ``exec``, killing and restarting an app,
restarting pilot with another mesh config (the egress task), and a clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.async_api import TimeoutError as PlaywrightTimeout

from pymesh.demo.process import alive
from pymesh.demo.telemetry import MIXER_PORTS
from tests.integration.demo_harness import (
    ISTIO,
    Demo,
    check_per_pod_scrape,
    istio_file,
    listeners_on,
    no_demo_processes,
    pod_pids,
    start_demo,
)
from tests.mixer.harness import samples
from tests.support.browser import artifact_path, chromium

pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("pymesh-demo-lifecycle")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    demo = start_demo(tmp_path_factory, 1, "demo-lifecycle")
    try:
        demo.run_foreground()
        yield demo
        if demo.proc is not None and demo.proc.poll() is None:
            demo.interrupt()
        demo.down()
    finally:
        demo.release()


def test_make_demo_smoke(demo: Demo) -> None:
    """``make demo``: the page through the ingress gateway, reviews alternating between the
    three versions (no routing rule yet: round robin over every reviews pod)."""
    output = demo.foreground_output()
    assert "every proxy SYNCED" in output and f"{demo.gateway}/productpage" in output
    versions = demo.versions(24)
    assert set(versions) == {"v1", "v2", "v3"}, versions


def test_status_lists_pods_addresses_pids_and_sync(demo: Demo) -> None:
    result = demo.pymesh("demo", "status", "--run-dir", str(demo.run_dir))
    state = demo.state()
    for pod in state.pods:
        line = next(line for line in result.stdout.splitlines() if line.startswith(pod.name))
        assert pod.ip in line and "SYNCED" in line
        assert pod.proxy is not None and str(pod.proxy.pid) in line
    assert "demo: running" in result.stdout


def test_exec_runs_through_the_pods_sidecar(demo: Demo) -> None:
    """``pymesh exec sleep -- ...``: the command sees the pod's environment, and its calls
    by service name leave through the sleep pod's sidecar."""
    sleep = demo.pod("sleep")
    counter = f"http.outbound_{sleep.ip}_15001.downstream_rq_total"
    before = int(demo.admin_stats("sleep").get(counter, "0"))
    result = demo.pymesh(
        "exec",
        "--run-dir",
        str(demo.run_dir),
        "sleep",
        "--",
        "python",
        "-m",
        "pymesh.samples.sleep",
        "-s",
        "http://reviews:9080/reviews/0",
    )
    assert json.loads(result.stdout)["podname"].startswith("reviews-v")
    after = int(demo.admin_stats("sleep").get(counter, "0"))
    assert after == before + 1
    env = demo.pymesh("exec", "--run-dir", str(demo.run_dir), "sleep", "--", "env").stdout
    assert f"http_proxy=http://{sleep.ip}:15001" in env.splitlines()
    assert "POD_NAME=sleep" in env.splitlines()
    if shutil.which("curl"):
        out = demo.pymesh(
            "exec",
            "--run-dir",
            str(demo.run_dir),
            "sleep",
            "--",
            "curl",
            "-s",
            "http://ratings:9080/ratings/0",
        ).stdout
        assert json.loads(out)["ratings"] == {"Reviewer1": 5, "Reviewer2": 4}
    missing = demo.pymesh("exec", "--run-dir", str(demo.run_dir), "nope", "--", "true", check=False)
    assert missing.returncode == 1
    assert missing.stderr == 'error: pods "nope" not found in namespace default\n'


def test_killed_app_is_unhealthy_until_restarted(demo: Demo) -> None:
    """Killing the only ratings app makes its endpoint unhealthy: callers get 503 "no
    healthy upstream". ``pymesh demo restart ratings-v1 --app-only`` brings it back without
    touching any other process."""
    before = pod_pids(demo.state())
    ratings = demo.pod("ratings-v1")
    assert ratings.app is not None
    os.kill(ratings.app.pid, signal.SIGKILL)
    demo.wait(lambda: not demo.pod("ratings-v1").app_ready, 10, "the supervisor to notice")

    def unhealthy() -> bool:
        r = demo.curl_from("sleep", "-s", "http://ratings:9080/ratings/0")
        return r.http_code == 503 and b"no healthy upstream" in r.body

    demo.wait(unhealthy, 15, "503 no healthy upstream", interval=0.3)
    assert demo.pod("ratings-v1").app is not None
    assert not demo.pod("ratings-v1").app.running  # type: ignore[union-attr]

    demo.pymesh("demo", "restart", "ratings-v1", "--app-only", "--run-dir", str(demo.run_dir))

    def healthy() -> bool:
        return demo.curl_from("sleep", "-s", "http://ratings:9080/ratings/0").http_code == 200

    demo.wait(healthy, 30, "ratings to answer again", interval=0.5)
    after = pod_pids(demo.state())
    assert after.pop("ratings-v1.default")[1] == before.pop("ratings-v1.default")[1]
    assert after == before, "restarting one app touched other processes"


class _External(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"external answered {self.path} for {self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def external(demo: Demo) -> Iterator[str]:
    """A server outside the mesh on the module's "external" loopback address."""
    server = ThreadingHTTPServer((demo.external, 0), _External)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"{demo.external}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_egress_registry_only(demo: Demo, external: str, tmp_path: Path) -> None:
    """Egress control: with the default ALLOW_ANY a pod reaches a host outside the mesh; with
    meshConfig.outboundTrafficPolicy.mode REGISTRY_ONLY (pilot restarted with it, as
    ``istioctl install --set`` restarts istiod) the sidecar answers 502 for any host not in the
    registry, httpbin.org included, until a ServiceEntry registers it."""
    host, port = external.split(":")
    open_call = demo.curl_from("sleep", "-s", f"http://{external}/open")
    assert open_call.http_code == 200 and b"external answered /open" in open_call.body

    mesh = tmp_path / "mesh.yaml"
    # the demo's own mesh config (ALLOW_ANY, reporting to mixer) comes back at the end
    original = (demo.run_dir / "mesh.yaml").read_text()
    assert "mode: ALLOW_ANY" in original and "envoyAccessLogService" in original
    mesh.write_text(original.replace("mode: ALLOW_ANY", "mode: REGISTRY_ONLY"))
    run_dir = str(demo.run_dir)
    demo.pymesh("demo", "restart", "pilot", "--mesh-config", str(mesh), "--run-dir", run_dir)
    entry = tmp_path / "serviceentry.yaml"
    entry.write_text(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: external\n"
        "spec:\n  hosts:\n  - external.pymesh.test\n  location: MESH_EXTERNAL\n"
        "  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  resolution: STATIC\n"
        f"  endpoints:\n  - address: {host}\n    ports:\n      http: {port}\n"
    )
    try:
        demo.settle()
        assert demo.curl_from("sleep", "-s", f"http://{external}/closed").http_code == 502
        assert demo.curl_from("sleep", "-s", "http://httpbin.org/headers").http_code == 502
        assert demo.curl_from("sleep", "-s", "http://external.pymesh.test/").http_code == 502
        # Istio's own ServiceEntry for httpbin.org is accepted as it is.
        if ISTIO.is_dir():
            demo.apply(
                istio_file(
                    "docs-extracted/traffic-management/egress-control/"
                    "1-serviceentry-httpbin-ext.yaml"
                )
            )
        demo.apply(entry)
        opened = demo.curl_from("sleep", "-s", "http://external.pymesh.test/registered")
        assert opened.http_code == 200 and b"external answered /registered" in opened.body
    finally:
        demo.delete(entry)
        if ISTIO.is_dir():
            demo.delete(
                istio_file(
                    "docs-extracted/traffic-management/egress-control/"
                    "1-serviceentry-httpbin-ext.yaml"
                )
            )
        mesh.write_text(original)
        demo.pymesh("demo", "restart", "pilot", "--mesh-config", str(mesh), "--run-dir", run_dir)
    assert demo.curl_from("sleep", "-s", f"http://{external}/again").http_code == 200


def test_demo_runs_mixer_and_a_prometheus_scraping_it(demo: Demo) -> None:
    """``pymesh demo`` starts mixer (graph page, metrics, Zipkin API) and, when the binary is
    installed, a Prometheus scraping mixer and pilot; ``demo env`` and ``dashboard`` point
    at them."""
    mixer = f"http://{demo.control}:20001"
    assert f"mixer ready: {mixer}/" in demo.foreground_output()
    env = demo.pymesh("demo", "env", "--run-dir", str(demo.run_dir)).stdout
    assert f"export PYMESH_MIXER={mixer}" in env
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{mixer}/api/graph", timeout=10) as resp:
        assert set(json.loads(resp.read())) >= {"nodes", "edges"}
    shown = demo.pymesh("dashboard", "graph", "--mixer", mixer, "--no-browser").stdout
    assert shown.strip() == f"{mixer}/"
    # the sidecars report: a page load shows up as Bookinfo's calls and as one trace
    assert demo.get(f"{demo.gateway}/productpage").status == 200

    def graph_edges() -> set[tuple[str, str]]:
        with opener.open(f"{mixer}/api/graph?window=300", timeout=10) as resp:
            graph = json.loads(resp.read())
        return {(e["source"], e["target"]) for e in graph["edges"]}

    calls = {
        ("workload:default:productpage-v1", "service:default:details.default.svc.cluster.local"),
        ("service:default:details.default.svc.cluster.local", "workload:default:details-v1"),
    }
    demo.wait(lambda: graph_edges() >= calls, 30, "productpage's calls in the graph")
    # The gateway forwarded the Host the user typed (the demo's address): productpage's own
    # report still names the service its inbound cluster serves, never that Host.
    metrics = f"http://{demo.control}:{MIXER_PORTS['metrics']}/metrics"

    def services_productpage_reported() -> set[str]:
        return {
            labels["destination_service"]
            for labels, _ in samples(demo.get(metrics).body, "istio_requests_total")
            if labels["reporter"] == "destination"
            and labels["destination_workload"] == "productpage-v1"
        }

    demo.wait(services_productpage_reported, 30, "productpage's own report")
    assert services_productpage_reported() == {"productpage.default.svc.cluster.local"}

    def page_trace() -> bool:
        url = f"http://{demo.control}:9411/api/v2/traces?serviceName=details.default&limit=5"
        with opener.open(url, timeout=10) as resp:
            traces = json.loads(resp.read())
        names = {s["localEndpoint"]["serviceName"] for t in traces for s in t}
        return {"productpage.default", "details.default"} <= names

    demo.wait(page_trace, 30, "a page load's trace in mixer's Zipkin API")
    if shutil.which("prometheus") is None:
        return
    prometheus = f"http://{demo.control}:9090"
    assert f"Prometheus ready: {prometheus}" in demo.foreground_output()

    def targets_up() -> set[str]:
        with opener.open(f"{prometheus}/api/v1/targets", timeout=10) as resp:
            active = json.loads(resp.read())["data"]["activeTargets"]
        return {t["labels"]["job"] for t in active if t["health"] == "up"}

    demo.wait(lambda: targets_up() >= {"mixer", "pilot"}, 30, "Prometheus scraping mixer, pilot")
    check_per_pod_scrape(demo, prometheus)


_PAGE_TO_REVIEWS = (
    'reporter="source"',
    'source_workload="productpage-v1"',
    'destination_service_name="reviews"',
    'response_code="200"',
)


def _mixer_count(exposition: str) -> float:
    """productpage → reviews requests in mixer's ``/metrics``."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("istio_requests_total{") and all(p in line for p in _PAGE_TO_REVIEWS)
    )


async def test_graph_page_a_slow_trace_and_the_same_numbers_in_prometheus(demo: Demo) -> None:
    """The telemetry a ``make demo`` user looks at: the graph page (headless Chromium) draws
    Bookinfo's workloads and calls as pages load; with ratings delayed 2 s (the request
    timeouts task's files), the slowest trace the page lists is such a page load, and its
    waterfall shows the ratings call; Prometheus then holds the same productpage → reviews
    count as mixer's ``/metrics``."""
    if shutil.which("prometheus") is None or not ISTIO.is_dir():
        pytest.skip("needs Debian's prometheus and ../shared/istio-samples")
    mixer = f"http://{demo.control}:20001"
    tasks = "docs-extracted/traffic-management/request-timeouts"
    rules = [
        istio_file(f"{tasks}/1-reviews-v2.yaml"),
        istio_file(f"{tasks}/2-ratings-delay-2s.yaml"),
    ]
    for rule in rules:
        await asyncio.to_thread(demo.apply, rule)

    async def load_page() -> None:
        page = await asyncio.to_thread(demo.get, f"{demo.gateway}/productpage")
        assert page.status == 200, page

    try:
        async with chromium(width=1400, height=1000) as browser:
            tab = await browser.new_page()
            await tab.goto(f"{mixer}/", timeout=20_000)
            for _ in range(2):
                await load_page()
            # Every workload of these page loads, not just one: a node may be left from an
            # earlier test's calls (the graph shows a minute) while this load's reports are
            # still on their way.
            expected = ["productpage-v1", "details-v1", "reviews-v2", "ratings-v1"]
            workloads_js = (
                "window.pymeshGraph ? window.pymeshGraph.nodes()"
                ".filter((n) => n.data('kind') === 'workload').map((n) => n.data('label')) : []"
            )
            try:
                await tab.wait_for_function(
                    f"(want) => want.every((w) => ({workloads_js}).includes(w))",
                    arg=expected,
                    timeout=30_000,
                )
            except PlaywrightTimeout:
                drawn = await tab.evaluate(workloads_js)
                raise AssertionError(f"graph draws {drawn}, expected {expected}") from None
            await tab.locator("#slowest").click()
            # Sidecars post spans in batches: the slow page load's trace arrives within ~5 s.
            await tab.wait_for_function(
                """() => {
                  const li = document.querySelector("#trace-list li");
                  return li !== null && parseFloat(li.textContent.split(" — ")[1]) >= 2000;
                }""",
                timeout=30_000,
            )
            waterfall = ""
            deadline = time.monotonic() + 30
            # The callee's spans may come in a later batch than productpage's: open the
            # slowest trace again until its waterfall holds the ratings call.
            while "ratings.default" not in waterfall and time.monotonic() < deadline:
                trace_id = await tab.locator("#trace-list li").first.get_attribute("data-trace")
                await tab.locator(f'#trace-list li[data-trace="{trace_id}"]').click()
                await tab.locator("#waterfall .row").first.wait_for(timeout=5_000)
                waterfall = await tab.locator("#waterfall").inner_text()
                await asyncio.sleep(1)
            for service in ("productpage", "reviews", "ratings"):
                assert f"{service}.default" in waterfall, waterfall
            await tab.screenshot(path=str(artifact_path("demo-graph-slow-trace.png")))
    finally:
        await asyncio.to_thread(demo.delete, *reversed(rules))
    metrics = f"http://{demo.control}:{MIXER_PORTS['metrics']}/metrics"
    query = 'sum(istio_requests_total{job="mixer",' + ",".join(_PAGE_TO_REVIEWS) + "})"
    prometheus = f"http://{demo.control}:9090/api/v1/query?" + urllib.parse.urlencode(
        {"query": query}
    )

    def same() -> bool:
        held = json.loads(demo.get(prometheus).body)["data"]["result"]
        counted = _mixer_count(demo.get(metrics).body)
        return bool(held) and counted >= 2 and float(held[0]["value"][1]) == counted

    await asyncio.to_thread(demo.wait, same, 30, "Prometheus holding mixer's count")


def test_zz_ctrl_c_stops_everything(demo: Demo) -> None:
    """Ctrl-C on ``pymesh demo``: every process stops and no port is left listening."""
    state = demo.state()
    pids = [p for pair in pod_pids(state).values() for p in pair if p]
    assert demo.interrupt() == 0
    assert "stopped: no process of this demo is left" in demo.foreground_output()
    assert no_demo_processes(demo.run_dir) == []
    assert not any(alive(p) for p in pids)
    addresses = [p.ip for p in state.pods if p.ip != demo.control]
    assert listeners_on(addresses) == []
    ports = (8080, 15000, 15010, 15080)
    assert [e for e in listeners_on([demo.control]) if e[1] in ports] == []
