"""The Istio tasks of :mod:`tests.integration.test_demo_tasks`, replayed on ``pymesh demo
--netns``: every pod in its own network namespace, its traffic taken to the sidecar by
Istio's iptables rules (``pymesh iptables``), the apps unchanged and without ``HTTP_PROXY``,
names resolved from each pod's ``/etc/hosts``, the sidecars running as uid 1337.

The tests are the same functions; only the demo they run against differs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymesh.samples.bookinfo.constants import REVIEWS_ERROR
from tests.integration import test_demo_tasks
from tests.integration.demo_harness import ISTIO, Demo, no_demo_processes, start_demo
from tests.integration.test_demo_tasks import (  # noqa: F401 - collected here too
    rules,  # the fixture
    test_circuit_breaking,
    test_fault_injection_abort,
    test_fault_injection_delay,
    test_ingress_bookinfo,
    test_ingress_httpbin,
    test_ingress_tls_simple,
    test_mirroring,
    test_request_routing_all_v1,
    test_request_routing_jason_to_v2,
    test_request_timeouts,
    test_tcp_traffic_shifting,
    test_traffic_shifting,
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("pymesh-demo-tasks-netns"),
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="netns mode needs root (namespaces, iptables)"),
    pytest.mark.skipif(
        shutil.which("iptables-restore") is None or shutil.which("setpriv") is None,
        reason="netns mode needs iptables and setpriv (apt-get install iptables util-linux)",
    ),
]


def _leftovers(prefix: str) -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return [w for w in (names + links).replace(":", " ").split() if w.startswith(prefix)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if not ISTIO.is_dir():
        pytest.skip("../shared/istio-samples is not present")
    demo = start_demo(tmp_path_factory, 0, "demo-tasks-netns", netns=True)
    assert demo.netns is not None
    try:
        demo.up()
        state = demo.state()
        captured = [p for p in state.pods if p.role != "gateway"]
        assert captured and all(p.netns for p in captured), state.pods
        yield demo
        result = demo.down()
        assert result.returncode == 0, result.stdout + result.stderr
        assert not no_demo_processes(demo.run_dir)
        assert _leftovers(demo.netns.prefix) == []
    finally:
        demo.down()
        from pymesh.demo.netns import remove_all

        remove_all(demo.netns.prefix)
        demo.release()


def test_capture_is_transparent(demo: Demo) -> None:
    """Inside a pod there is no HTTP_PROXY: the app dials the Service's name, /etc/hosts
    gives it an address, and the capture rules take the connection to the sidecar, which
    answers with Envoy's headers; the sidecar runs as uid 1337."""
    pod = demo.pod("sleep")
    result = demo.curl_from("sleep", "-s", "http://httpbin:8000/headers")
    assert result.http_code == 200, result
    assert "X-Envoy-Attempt-Count" in result.body.decode()
    nat = subprocess.run(
        ["ip", "netns", "exec", pod.netns, "iptables", "-t", "nat", "-S"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in nat
    assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in nat
    # `ip netns exec` and setpriv exec in place: the recorded pid is the program's own.
    assert pod.proxy is not None
    status = Path(f"/proc/{pod.proxy.pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1] == "1337", uid_line
    # Istio's readiness endpoint, uncaptured, answers once the sidecar has its config.
    ready = demo.get(f"http://{pod.ip}:15021/healthz/ready")
    assert (ready.status, ready.body.strip()) == (200, "LIVE"), ready
    app = demo.pod("productpage-v1").app
    assert app is not None
    assert b"HTTP_PROXY" not in Path(f"/proc/{app.pid}/environ").read_bytes().upper()


def test_captured_pods_report_to_mixer(demo: Demo) -> None:
    """Sidecars in their own namespaces reach mixer on the host's bridge address, as they
    reach pilot: a page load shows up as Bookinfo's calls, reported from both sides."""
    assert demo.product_page().status == 200
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    details = "service:default:details.default.svc.cluster.local"
    wanted = {
        ("workload:default:productpage-v1", details),
        (details, "workload:default:details-v1"),
    }

    def edges() -> set[tuple[str, str]]:
        url = f"http://{demo.control}:20001/api/graph?window=300"
        with opener.open(url, timeout=10) as resp:
            graph = json.loads(resp.read())
        return {(e["source"], e["target"]) for e in graph["edges"]}

    demo.wait(lambda: edges() >= wanted, 30, "productpage's call to details in mixer's graph")


def test_rolling_restart_under_load_loses_no_request(demo: Demo) -> None:
    """Every reviews pod restarted in turn (sidecar and app, as a rollout replaces a pod)
    while four clients keep loading the product page through the gateway: no request fails
    and no page shows the reviews error. The client sidecars' retries (connect-failure,
    refused-stream, 503 on another host) cover the pod that is going away."""
    stop = threading.Event()
    results: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def load() -> None:
        while not stop.is_set():
            page = demo.product_page(timeout=20)
            with lock:
                results.append((page.status, REVIEWS_ERROR in page.body))

    clients = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        for pod in ("reviews-v1", "reviews-v2", "reviews-v3"):
            before = len(results)
            demo.pymesh("demo", "restart", pod, "--run-dir", str(demo.run_dir), timeout=120)
            demo.wait(lambda n=before: len(results) > n + 8, 30, f"load after restarting {pod}")
    finally:
        stop.set()
        for client in clients:
            client.join(30)
    failed = [r for r in results if r != (200, False)]
    print(f"rolling restart: {len(results)} requests, {len(failed)} failed")
    assert len(results) >= 30
    assert failed == [], f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"


def test_a_second_demo_with_the_same_prefix_is_refused(demo: Demo, tmp_path: Path) -> None:
    """Its clean-up of leftovers would take the running demo's pods: it refuses, and the
    running demo is untouched."""
    assert demo.netns is not None
    result = demo.pymesh(
        "demo", "up", "--run-dir", str(tmp_path / "second"), "--control-address", "127.0.11.99",
        "--netns", "--netns-prefix", demo.netns.prefix, "--netns-subnet", demo.netns.subnet,
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "another netns demo running" in result.stdout + result.stderr
    assert demo.product_page().status == 200


# Last, as in the process-mode module: it stops the demo.
test_zz_down_leaves_nothing = test_demo_tasks.test_zz_down_leaves_nothing
