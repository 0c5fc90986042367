"""Istio's traffic-management tasks, replayed on a running ``pymesh demo`` with Istio's own
files, unchanged (``../shared/istio-samples``), applied with ``pymesh apply -f``.

One demo (``pymesh demo up``) serves the whole module; every test removes what it applied.
Each test's docstring is the behaviour the Istio documentation describes for that task.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from pymesh.demo.runtime import unprivileged_port_start
from pymesh.demo.telemetry import MIXER_PORTS
from pymesh.samples.bookinfo.constants import (
    PAGE_TITLE,
    RATINGS_UNAVAILABLE,
    REVIEWS_ERROR,
)
from tests.integration.demo_harness import (
    ISTIO,
    Demo,
    Page,
    istio_file,
    listeners_on,
    no_demo_processes,
    reviews_version,
    start_demo,
)
from tests.support.certs import self_signed

pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("pymesh-demo-tasks")]

NET = "bookinfo/networking"
DOCS = "docs-extracted/traffic-management"

Apply = Callable[..., None]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if not ISTIO.is_dir():
        pytest.skip("../shared/istio-samples is not present")
    demo = start_demo(tmp_path_factory, 0, "demo-tasks")
    try:
        demo.up()
        yield demo
        result = demo.down()
        assert result.returncode == 0, result.stdout + result.stderr
        assert not no_demo_processes(demo.run_dir)
    finally:
        demo.release()


@pytest.fixture
def rules(demo: Demo) -> Iterator[Apply]:
    """``rules(path, ...)`` applies Istio files; they are deleted again after the test."""
    applied: list[Path] = []

    def apply(*paths: Path) -> None:
        for path in paths:
            applied.append(path)
            demo.apply(path)

    yield apply
    if applied:
        demo.delete(*reversed(applied))


def test_ingress_bookinfo(demo: Demo) -> None:
    """Ingress (bookinfo-gateway.yaml): the gateway serves /productpage and the product API,
    and answers 404 for any path its VirtualService does not match."""
    page = demo.product_page()
    assert page.status == 200
    assert f"<title>{PAGE_TITLE}</title>" in page.body or PAGE_TITLE in page.body
    api = demo.get(f"{demo.gateway}/api/v1/products")
    assert api.status == 200 and json.loads(api.body)[0]["title"]
    assert demo.get(f"{demo.gateway}/not-in-the-virtual-service").status == 404


def test_request_routing_all_v1(demo: Demo, rules: Apply) -> None:
    """Request routing, virtual-service-all-v1.yaml: every service goes to v1, so the page
    shows reviews without stars however often it is refreshed."""
    rules(istio_file(f"{NET}/virtual-service-all-v1.yaml"))
    assert set(demo.versions(10)) == {"v1"}


def test_request_routing_jason_to_v2(demo: Demo, rules: Apply) -> None:
    """Request routing by user identity, virtual-service-reviews-test-v2.yaml: signed in as
    jason the page shows black stars (reviews v2); anyone else still gets v1."""
    rules(
        istio_file(f"{NET}/virtual-service-all-v1.yaml"),
        istio_file(f"{NET}/virtual-service-reviews-test-v2.yaml"),
    )
    jason = demo.login("jason")
    assert set(demo.versions(6, jason)) == {"v2"}
    assert set(demo.versions(6)) == {"v1"}
    assert set(demo.versions(3, demo.login("someone-else"))) == {"v1"}


def test_fault_injection_delay(demo: Demo, rules: Apply) -> None:
    """Fault injection, ratings-test-delay.yaml: a 7 s delay between reviews v2 and ratings
    for jason. reviews v2 would wait 10 s, but productpage gives up on reviews after 3 s and
    tries once more, so after about 6 s the page shows the reviews error (the bug the task
    exposes). Other users are not delayed."""
    rules(
        istio_file(f"{NET}/virtual-service-all-v1.yaml"),
        istio_file(f"{NET}/virtual-service-reviews-test-v2.yaml"),
        istio_file(f"{NET}/virtual-service-ratings-test-delay.yaml"),
    )
    page = demo.product_page(demo.login("jason"))
    assert page.status == 200
    assert REVIEWS_ERROR in page.body
    assert 5.0 <= page.elapsed < 9.5, f"the page took {page.elapsed:.1f} s, expected about 6 s"
    other = demo.product_page()
    assert other.elapsed < 3.0 and reviews_version(other.body) == "v1"


def test_fault_injection_abort(demo: Demo, rules: Apply) -> None:
    """Fault injection, ratings-test-abort.yaml: ratings answers jason with HTTP 500, so his
    page shows reviews v2 with "Ratings service is currently unavailable"; others see v1."""
    rules(
        istio_file(f"{NET}/virtual-service-all-v1.yaml"),
        istio_file(f"{NET}/virtual-service-reviews-test-v2.yaml"),
        istio_file(f"{NET}/virtual-service-ratings-test-abort.yaml"),
    )
    page = demo.product_page(demo.login("jason"))
    assert page.status == 200
    assert RATINGS_UNAVAILABLE in page.body
    assert "Reviews served by: reviews-v2" in page.body
    anonymous = demo.product_page()
    assert RATINGS_UNAVAILABLE not in anonymous.body and "reviews-v1" in anonymous.body


def _reviews_pod(demo: Demo) -> str:
    api = demo.get(f"{demo.gateway}/api/v1/products/0/reviews")
    assert api.status == 200, api
    return str(json.loads(api.body)["podname"])


def test_traffic_shifting(demo: Demo, rules: Apply) -> None:
    """Traffic shifting, virtual-service-reviews-50-v3.yaml: half of the requests go to
    reviews v1 and half to v3 (red stars); then virtual-service-reviews-v3.yaml sends all of
    them to v3."""
    rules(
        istio_file(f"{NET}/virtual-service-all-v1.yaml"),
        istio_file(f"{NET}/virtual-service-reviews-50-v3.yaml"),
    )
    n = 80
    seen = Counter(_reviews_pod(demo) for _ in range(n))
    assert set(seen) == {"reviews-v1", "reviews-v3"}, seen
    # Binomial(80, 0.5): 0.3..0.7 is more than 3.5 standard deviations each way.
    assert 0.3 <= seen["reviews-v3"] / n <= 0.7, seen
    rules(istio_file(f"{NET}/virtual-service-reviews-v3.yaml"))
    assert {_reviews_pod(demo) for _ in range(15)} == {"reviews-v3"}
    assert set(demo.versions(3)) == {"v3"}


def _tcp_echo(address: tuple[str, int], line: bytes, *, half_close: bool = False) -> bytes:
    with socket.create_connection(address, timeout=5) as conn:
        conn.settimeout(5)
        conn.sendall(line + b"\n")
        if half_close:
            conn.shutdown(socket.SHUT_WR)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = conn.recv(256)
            assert chunk, f"the connection closed after {answer!r}"
            answer += chunk
        return answer


def test_tcp_traffic_shifting(demo: Demo, rules: Apply) -> None:
    """TCP traffic shifting (tcp-echo-services.yaml, tcp-echo-all-v1.yaml): every connection
    through the ingress gateway's TCP port 31400 reaches tcp-echo v1 ("one ..."); with
    tcp-echo-20-v2.yaml about 20 % reach v2 ("two ...")."""
    rules(
        istio_file("tcp-echo/tcp-echo-services.yaml"),
        istio_file("tcp-echo/tcp-echo-all-v1.yaml"),
    )
    demo.wait(
        lambda: (
            {"tcp-echo-v1.default", "tcp-echo-v2.default"}
            <= {p.key for p in demo.state().pods if p.ready}
        ),
        60,
        "tcp-echo v1 and v2 running",
    )
    gateway = (demo.control, 31400)

    def prefix(i: int) -> str | None:
        try:
            answer = _tcp_echo(gateway, f"hello {i}".encode())
        except OSError:
            return None
        assert answer.endswith(f" hello {i}\n".encode()), answer
        return answer.split()[0].decode()

    demo.wait(lambda: prefix(0) == "one", 30, "the gateway forwarding port 31400 to v1")
    assert {prefix(i) for i in range(20)} == {"one"}
    rules(istio_file("tcp-echo/tcp-echo-20-v2.yaml"))
    demo.wait(lambda: any(prefix(i) == "two" for i in range(20)), 30, "v2 taking connections")
    n = 200
    seen = Counter(prefix(i) for i in range(n))
    assert set(seen) == {"one", "two"}, seen
    # Binomial(200, 0.2): 0.1..0.3 is more than 3.5 standard deviations each way.
    assert 0.1 <= seen["two"] / n <= 0.3, seen
    stats = demo.admin_stats("istio-ingressgateway")
    opened = sum(
        int(v)
        for k, v in stats.items()
        if k.startswith("cluster.outbound|9000|")
        and k.endswith("tcp-echo.default.svc.cluster.local.upstream_cx_total")
    )
    assert opened >= n, {k: v for k, v in stats.items() if "tcp-echo" in k}
    # A client that half-closes after its line still gets the answer through both sidecars.
    # In netns mode gateway to tcp-echo is mesh mTLS (close_notify carries the half-close);
    # process mode marks only HTTP endpoints for auto mTLS, so TCP stays plaintext there.
    if demo.netns is not None:
        assert any(
            k.endswith(".ssl.handshake") and int(v) > 0
            for pod in ("tcp-echo-v1", "tcp-echo-v2")
            for k, v in demo.admin_stats(pod).items()
        )
    assert _tcp_echo(gateway, b"half-closed", half_close=True).endswith(b" half-closed\n")
    # The gateway reports every connection to mixer (Envoy's TCP access-log service).
    metrics = f"http://{demo.control}:{MIXER_PORTS['metrics']}/metrics"
    demo.wait(lambda: _tcp_opened(demo.get(metrics).body) >= n, 30, "mixer counting connections")


def _tcp_opened(exposition: str) -> float:
    """``istio_tcp_connections_opened_total`` the gateway reported for tcp-echo."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("istio_tcp_connections_opened_total{")
        and 'destination_service="tcp-echo.default.svc.cluster.local"' in line
        and 'source_workload="istio-ingressgateway"' in line
        and 'reporter="source"' in line
    )


def test_request_timeouts(demo: Demo, rules: Apply) -> None:
    """Request timeouts: with reviews on v2 and a 2 s delay on ratings the page still shows
    its stars, about 2 s late; a 0.5 s timeout on reviews then makes it return after about
    1 s (productpage's hard-coded retry doubles it) with the reviews unavailable."""
    rules(
        istio_file(f"{NET}/virtual-service-all-v1.yaml"),
        istio_file(f"{DOCS}/request-timeouts/1-reviews-v2.yaml"),
        istio_file(f"{DOCS}/request-timeouts/2-ratings-delay-2s.yaml"),
    )
    slow = demo.product_page()
    assert "Reviews served by: reviews-v2" in slow.body and 'color="black"' in slow.body
    assert 2.0 <= slow.elapsed < 4.0, f"{slow.elapsed:.2f} s"
    rules(istio_file(f"{DOCS}/request-timeouts/3-reviews-v2-timeout-0.5s.yaml"))
    page = demo.product_page()
    assert REVIEWS_ERROR in page.body
    assert 0.9 <= page.elapsed < 2.0, f"{page.elapsed:.2f} s, expected about 1 s"


async def test_circuit_breaking(demo: Demo, rules: Apply) -> None:
    """Circuit breaking, the task's httpbin DestinationRule (one connection, one pending
    request): concurrent calls from the client pod overflow, and those calls fail fast with
    503 and ``x-envoy-overloaded: true``; the client sidecar counts upstream_rq_pending_overflow."""
    rules(istio_file(f"{DOCS}/circuit-breaking/destination-rule-httpbin-cb.yaml"))
    results = []
    for _ in range(3):
        batch = await asyncio.gather(
            *(demo.acurl_from("sleep", "-s", "http://httpbin:8000/get") for _ in range(10))
        )
        results.extend(batch)
    codes = Counter(r.http_code for r in results)
    assert codes[200] >= 1 and codes[503] >= 1, codes
    assert set(codes) <= {200, 503}, codes
    for r in results:
        if r.http_code == 503:
            assert dict((k.lower(), v) for k, v in r.headers).get("x-envoy-overloaded") == "true"
    stats = demo.admin_stats("sleep")
    overflow = (
        "cluster.outbound|8000||httpbin.default.svc.cluster.local.upstream_rq_pending_overflow"
    )
    assert int(stats.get(overflow, "0")) >= codes[503], {
        k: v for k, v in stats.items() if "httpbin" in k and "overflow" in k
    }


def _low_ports() -> bool:
    return unprivileged_port_start() <= 80


def _count(demo: Demo, pod_log: str, marker: str) -> list[str]:
    return [line for line in demo.log_text(pod_log).splitlines() if marker in line]


@pytest.mark.skipif(not _low_ports(), reason="the mirroring task's httpbin listens on port 80")
def test_mirroring(demo: Demo) -> None:
    """Mirroring: with all traffic on httpbin v1, v2 receives nothing; with the mirror rule
    v2 gets a copy of each request (Host with "-shadow"), and the caller still gets v1's
    answer, never v2's."""
    # The task starts from two httpbin Deployments of its own: the demo's httpbin makes way,
    # and comes back at the end (this test cleans up itself: the task replaces the demo's
    # httpbin Service, which must survive the cleanup).
    ours = Path(__file__).resolve().parents[2] / "pymesh/samples/bookinfo/manifests/httpbin.yaml"
    demo.pymesh("delete", "deployment", "httpbin")
    try:
        demo.apply(istio_file(f"{DOCS}/mirroring/0-httpbin-v1-v2-service.yaml"))
        demo.wait(
            lambda: (
                {p.name for p in demo.state().pods if p.ready} >= {"httpbin-v1", "httpbin-v2"}
                and "httpbin" not in {p.name for p in demo.state().pods}
            ),
            60,
            "pods httpbin-v1 and httpbin-v2",
        )
        demo.settle()
        demo.apply(istio_file(f"{DOCS}/mirroring/1-httpbin-all-v1.yaml"))
        first = f"before-{uuid.uuid4().hex[:8]}"
        for _ in range(5):
            r = demo.curl_from("sleep", "-s", f"http://httpbin:8000/headers?m={first}")
            assert r.http_code == 200, r
        assert len(_count(demo, "httpbin-v1.default.app", first)) == 5
        assert _count(demo, "httpbin-v2.default.app", first) == []

        demo.apply(istio_file(f"{DOCS}/mirroring/2-httpbin-mirror-v2.yaml"))
        second = f"mirrored-{uuid.uuid4().hex[:8]}"
        for _ in range(5):
            r = demo.curl_from("sleep", "-s", f"http://httpbin:8000/headers?m={second}")
            assert r.http_code == 200, r
            assert "-shadow" not in r.body.decode()
        demo.wait(
            lambda: len(_count(demo, "httpbin-v2.default.app", second)) == 5,
            10,
            "the 5 mirrored copies in httpbin-v2's log",
        )
        assert len(_count(demo, "httpbin-v1.default.app", second)) == 5
        assert all("-shadow" in line for line in _count(demo, "httpbin-v2.default.app", second))
    finally:
        demo.delete(
            istio_file(f"{DOCS}/mirroring/2-httpbin-mirror-v2.yaml"),
            istio_file(f"{DOCS}/mirroring/1-httpbin-all-v1.yaml"),
            istio_file(f"{DOCS}/mirroring/0-httpbin-v1-v2-service.yaml"),
        )
        demo.apply(ours)
        demo.wait(
            lambda: (pod := demo.state().pod("httpbin")) is not None and pod.ready,
            60,
            "the demo's httpbin pod back",
        )


@pytest.mark.skipif(not _low_ports(), reason="the httpbin Gateways listen on port 80")
def test_ingress_httpbin(demo: Demo, rules: Apply) -> None:
    """Ingress control: the task's Gateway for httpbin.example.com routes /status and
    /delay to httpbin and 404s other paths; samples/httpbin/httpbin-gateway.yaml then opens
    every path for any host."""
    rules(istio_file(f"{DOCS}/ingress-control/httpbin-gateway-and-virtualservice.yaml"))
    gateway80 = f"http://{demo.control}:80"
    host = {"Host": "httpbin.example.com"}
    seen: list[Page] = []

    def answered() -> bool:
        seen.append(demo.get(f"{gateway80}/status/200", host))
        return seen[-1].status == 200

    demo.wait(
        answered,
        10,
        lambda: f"200 from the gateway on port 80 (last: {seen[-1] if seen else None})",
    )
    assert demo.get(f"{gateway80}/status/418", host).status == 418
    assert demo.get(f"{gateway80}/headers", host).status == 404
    assert demo.get(f"{gateway80}/status/200", {"Host": "other.example.com"}).status == 404
    rules(istio_file("httpbin/httpbin-gateway.yaml"))
    page = demo.get(f"{gateway80}/headers", {"Host": "anything.example.com"})
    assert page.status == 200 and "anything.example.com" in page.body


_TLS_GATEWAY = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway-tls
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    tls: {mode: SIMPLE, credentialName: bookinfo-credential}
    hosts: [bookinfo.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bookinfo-tls
spec:
  hosts: [bookinfo.example.com]
  gateways: [bookinfo-gateway-tls]
  http:
  - match: [{uri: {exact: /productpage}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
"""


def _https_status(address: str, port: int, host: str, path: str, ca: bytes) -> int:
    context = ssl.create_default_context(cadata=ca.decode())
    with (
        socket.create_connection((address, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        status_line = tls.recv(4096).split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def test_ingress_tls_simple(demo: Demo, rules: Apply, tmp_path: Path) -> None:
    """Secure ingress (Istio's "Secure Gateways" task): a Gateway server with ``tls.mode:
    SIMPLE`` and a ``credentialName`` terminates TLS with the certificate of that
    kubernetes.io/tls Secret and routes by the VirtualService bound to it."""
    cert, key = self_signed("bookinfo.example.com")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "bookinfo-credential", "namespace": "istio-system"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert.decode(), "tls.key": key.decode()},
    }
    # `kubectl create secret tls`: pilot reads Secrets from its config directory.
    secrets = demo.run_dir / "config" / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "bookinfo-credential.yaml").write_text(yaml.safe_dump(secret))
    gateway = tmp_path / "bookinfo-gateway-tls.yaml"
    gateway.write_text(_TLS_GATEWAY)
    try:
        rules(gateway)
        status = demo.wait(
            lambda: _try_https(demo.control, "/productpage", cert), 5, "HTTPS on port 8443"
        )
        assert status == 200
        assert _https_status(demo.control, 8443, "bookinfo.example.com", "/nothing", cert) == 404
    finally:
        (secrets / "bookinfo-credential.yaml").unlink()


def _try_https(address: str, path: str, ca: bytes) -> int | None:
    try:
        return _https_status(address, 8443, "bookinfo.example.com", path, ca)
    except (OSError, ssl.SSLError, ValueError, IndexError):
        return None


def test_zz_down_leaves_nothing(demo: Demo) -> None:
    """``pymesh demo down`` stops every process of the demo and frees every port (run last:
    the module's later teardown finds it already stopped)."""
    state = demo.state()
    addresses = [demo.control, *(p.ip for p in state.pods)]
    result = demo.down()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no process and no listening port left" in result.stdout
    assert no_demo_processes(demo.run_dir) == []
    ours = [
        (ip, port)
        for ip, port in listeners_on(addresses)
        if ip != demo.control or port in (80, 8080, 15000, 15010, 15080)
    ]
    assert ours == []
