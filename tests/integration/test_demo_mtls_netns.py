"""Istio's mesh mTLS on ``pymesh demo --netns``, on by default as in process mode: every
captured pod's agent runs in the pod's namespace as the sidecar's uid (1337), gets the
identity of the manifests' service account from pilot's CA on the host's bridge address and
serves it to its sidecar over SDS on a socket only that uid may open. Calls between captured
pods are mTLS; PeerAuthentication decides whether a plaintext client (here the host, which
reaches a pod's address through the capture rules as a pod without a sidecar would) gets in.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymesh.demo.agent import sds_root
from pymesh.demo.layout import DemoLayout
from pymesh.samples.bookinfo.constants import PAGE_TITLE
from tests.integration.demo_harness import (
    ISTIO,
    Demo,
    check_per_pod_scrape,
    istio_file,
    no_demo_processes,
    reviews_version,
    start_demo,
)
from tests.integration.test_demo_security_netns import _NC

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("pymesh-demo-mtls-netns"),
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="netns mode needs root (namespaces, iptables)"),
    pytest.mark.skipif(
        shutil.which("iptables-restore") is None or shutil.which("setpriv") is None,
        reason="netns mode needs iptables and setpriv (apt-get install iptables util-linux)",
    ),
]

#: httpbin's container port (its Service's 8000 targets it)
HTTPBIN_PORT = 8080
_STRICT_DEFAULT = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: default
spec:
  mtls:
    mode: {mode}
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if not ISTIO.is_dir():
        pytest.skip("../shared/istio-samples is not present")
    demo = start_demo(tmp_path_factory, 1, "demo-mtls-netns", netns=True)
    assert demo.netns is not None
    sockets = sds_root(DemoLayout(demo.run_dir))
    try:
        demo.up()
        demo.settle()
        yield demo
        result = demo.down()
        assert result.returncode == 0, result.stdout + result.stderr
        assert not no_demo_processes(demo.run_dir)
        # The agents' keys and sockets leave with the demo.
        assert not sockets.exists(), sorted(sockets.rglob("*"))
    finally:
        demo.down()
        from pymesh.demo.netns import remove_all

        remove_all(demo.netns.prefix)
        demo.release()


def _handshakes(demo: Demo, pod: str) -> int:
    stats = demo.admin_stats(pod)
    return sum(int(v) for k, v in stats.items() if k.endswith(".ssl.handshake"))


def _from_host(demo: Demo, ip: str) -> int:
    """A plaintext GET from the host to httpbin's pod address: captured inbound, it meets
    the sidecar's inbound listener. 0 when the connection is refused or reset."""
    return demo.get(f"http://{ip}:{HTTPBIN_PORT}/headers", timeout=5).status


def test_captured_pods_talk_mtls_with_their_service_accounts(demo: Demo) -> None:
    """sleep → httpbin, both captured: httpbin sees its own identity (By=) and the caller's
    (URI=) in X-Forwarded-Client-Cert, and its sidecar counts the handshake."""
    before = _handshakes(demo, "httpbin")
    result = demo.curl_from("sleep", "-s", "http://httpbin:8000/headers")
    assert result.http_code == 200, result
    body = result.body.decode()
    assert "By=spiffe://cluster.local/ns/default/sa/httpbin" in body, body
    assert "URI=spiffe://cluster.local/ns/default/sa/sleep" in body, body
    demo.wait(lambda: _handshakes(demo, "httpbin") > before, 20, "an mTLS handshake at httpbin")


def test_the_page_goes_over_mtls_from_the_gateway_on(demo: Demo) -> None:
    """The gateway (on the host) → productpage → details and reviews, each hop mTLS."""
    page = demo.product_page()
    assert page.status == 200 and PAGE_TITLE in page.body
    assert reviews_version(page.body) in ("v1", "v2", "v3"), page.body
    for pod in ("productpage-v1", "details-v1"):
        demo.wait(lambda pod=pod: _handshakes(demo, pod) > 0, 20, f"an mTLS handshake at {pod}")


def test_mixer_names_the_gateway_as_the_pages_caller(demo: Demo) -> None:
    """productpage's own report of the gateway's calls: the gateway runs on the host and
    reaches the pod from the bridge's address, which is no proxy's, so mixer knows it by what
    productpage's sidecar learnt by metadata exchange (and logged), over mTLS."""
    assert demo.product_page().status == 200
    wanted = (
        'reporter="destination"',
        'source_workload="istio-ingressgateway"',
        'source_workload_namespace="istio-system"',
        'destination_workload="productpage-v1"',
        'connection_security_policy="mutual_tls"',
        'source_principal="spiffe://cluster.local/ns/istio-system/sa/'
        'istio-ingressgateway-service-account"',
    )

    def reported() -> bool:
        text = demo.get(f"http://{demo.control}:15014/metrics", timeout=10).body
        return any(
            line.startswith("istio_requests_total{") and all(w in line for w in wanted)
            for line in text.splitlines()
        )

    demo.wait(reported, 30, "productpage's report naming the gateway in mixer's metrics")


def test_proxy_config_secret_shows_the_pods_identity(demo: Demo) -> None:
    shown = demo.pymesh("proxy-config", "secret", "httpbin")
    leaf = next(line.split() for line in shown.stdout.splitlines() if line.startswith("default"))
    assert leaf[-1] == "spiffe://cluster.local/ns/default/sa/httpbin", shown.stdout
    assert leaf[4] == "true", shown.stdout  # valid now
    assert any(line.startswith("ROOTCA") for line in shown.stdout.splitlines()), shown.stdout


def test_the_agent_runs_as_the_sidecar_and_keeps_its_socket_to_itself(demo: Demo) -> None:
    """The agent is uid 1337 inside the pod's namespace; its directory (token, root, socket)
    is 1337's alone: nobody else may list, read or connect."""
    pod = demo.pod("httpbin")
    root = sds_root(DemoLayout(demo.run_dir))
    # This demo's agent: its socket is under this run's root (another demo on the machine
    # has a pod of the same name).
    socket = str(root / pod.key / "socket")
    agent_pids = [
        int(pid) for pid in os.listdir("/proc") if pid.isdigit() and _is_agent_of(int(pid), socket)
    ]
    assert len(agent_pids) == 1, agent_pids
    status = Path(f"/proc/{agent_pids[0]}/status").read_text()
    uid = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert set(uid) == {"1337"}, status
    assert os.readlink(f"/proc/{agent_pids[0]}/ns/net") != os.readlink("/proc/self/ns/net")
    assert stat.S_IMODE(root.stat().st_mode) & 0o006 == 0
    home = root / pod.key
    assert (home.stat().st_uid, stat.S_IMODE(home.stat().st_mode)) == (1337, 0o700)
    for entry in home.iterdir():
        info = entry.stat()
        assert info.st_uid == 1337 and stat.S_IMODE(info.st_mode) & 0o077 == 0, entry
    # Its status port (uncaptured, as Istio's 15020) says it holds a certificate, which it
    # renews at half life as every agent does.
    stats = demo.get(f"http://{pod.ip}:15020/stats", timeout=5)
    assert "pymesh_agent.certificate_ready: 1" in stats.body, stats


def _is_agent_of(pid: int, socket: str) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"agent" in argv and socket.encode() in argv


def test_strict_refuses_plaintext_and_permissive_accepts_it(demo: Demo, tmp_path: Path) -> None:
    """PERMISSIVE (the default): the host's plaintext call reaches httpbin, without a client
    certificate. STRICT in the namespace: refused at the connection, while sleep, with its
    sidecar, still gets in. PERMISSIVE again: the host gets in again."""
    ip = demo.pod("httpbin").ip
    plain = demo.get(f"http://{ip}:{HTTPBIN_PORT}/headers", timeout=5)
    assert plain.status == 200, plain
    assert "X-Forwarded-Client-Cert" not in plain.body, plain.body
    policy = tmp_path / "peerauthentication.yaml"
    policy.write_text(_STRICT_DEFAULT.format(mode="STRICT"), encoding="utf-8")
    demo.apply(policy)
    try:
        demo.wait(lambda: _from_host(demo, ip) == 0, 30, "plaintext from the host refused")
        inside = demo.curl_from("sleep", "-s", "http://httpbin:8000/headers")
        assert inside.http_code == 200, inside
        assert demo.product_page().status == 200
        policy.write_text(_STRICT_DEFAULT.format(mode="PERMISSIVE"), encoding="utf-8")
        demo.apply(policy)
        demo.wait(lambda: _from_host(demo, ip) == 200, 30, "plaintext accepted again")
    finally:
        demo.delete(policy)
    assert _from_host(demo, ip) == 200


def test_tcp_between_captured_pods_is_mtls_and_keeps_half_closes(demo: Demo) -> None:
    """Istio's tcp-echo, called from sleep as ``echo ... | nc`` does: the client writes its
    line and shuts its write side, the answer still comes back through both sidecars over
    mTLS (close_notify carries the half-close), and tcp-echo's sidecar counts the
    handshake."""
    sample = istio_file("tcp-echo/tcp-echo.yaml")
    demo.apply(sample)
    try:
        demo.wait(
            lambda: "tcp-echo.default" in {p.key for p in demo.state().pods if p.ready},
            60,
            "tcp-echo running",
        )
        before = _handshakes(demo, "tcp-echo")

        def answer() -> str:
            sleep = demo.pod("sleep")
            done = subprocess.run(
                ["ip", "netns", "exec", sleep.netns, sys.executable, "-c", _NC, "tcp-echo", "9000"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            return done.stdout

        demo.wait(lambda: answer() == "hello port 9000\n", 30, "tcp-echo answering sleep")
        assert _handshakes(demo, "tcp-echo") > before
    finally:
        demo.delete(sample)


def test_prometheus_scrapes_each_captured_pods_agent(demo: Demo) -> None:
    """The demo's Prometheus finds every captured pod by its ``prometheus.io/*`` annotations
    and scrapes the merged metrics its agent serves on the pod's uncaptured :15020, with the
    sidecar's ``istio_requests_total`` labelled as mixer labels it."""
    if shutil.which("prometheus") is None:
        pytest.skip("needs Debian's prometheus")
    check_per_pod_scrape(demo, f"http://{demo.control}:9090")
