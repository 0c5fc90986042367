"""``pymesh demo``: Istio's mesh mTLS on the Bookinfo demo, on by default. Pilot serves its
CA, every pod's sidecar (the ingress gateway's too) gets its identity from its own ``pymesh agent``
(the service account of the manifests, ``bookinfo-productpage``, ...), and auto mTLS makes
every sidecar-to-sidecar call mTLS without a policy. Istio's mesh-wide STRICT
PeerAuthentication (the mTLS migration task's file, unchanged) keeps the product page
working and refuses plaintext at the sidecars, on the pods' own addresses too: in process mode
the sidecar holds each pod's container port and the app listens where only its sidecar knows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pymesh.demo.pods import APP_PORT_OFFSET, GRPC_AGENT_WARNING
from pymesh.demo.ports import holder
from pymesh.samples.bookinfo.constants import PAGE_TITLE
from tests.integration.demo_harness import (
    ISTIO,
    Demo,
    istio_file,
    listeners_on,
    no_demo_processes,
    reviews_version,
)
from tests.support.httpclient import request

pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("pymesh-demo-mtls")]

NET = "127.0.0"
MIGRATION = "docs-extracted/security/mtls-migration"
#: admin, outbound, inbound and the identity agent's status port
_SIDECAR_PORTS = frozenset({15000, 15001, 15006, 15020, 9080})


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if not ISTIO.is_dir():
        pytest.skip("../shared/istio-samples is not present")
    base = tmp_path_factory.mktemp("demo-mtls")
    demo = Demo(
        base / "run",
        control=f"{NET}.120",
        pods=f"{NET}.121-{NET}.139",
        external=f"{NET}.140",
    )
    try:
        demo.up()
        demo.wait(lambda: demo.state().ready, 90, "every pod ready")
        demo.settle()
        yield demo
    finally:
        result = demo.down()
        assert result.returncode == 0, result.stdout + result.stderr
        assert not no_demo_processes(demo.run_dir)


def _handshakes(demo: Demo, pod: str) -> int:
    stats = demo.admin_stats(pod)
    return sum(int(v) for k, v in stats.items() if k.endswith(".ssl.handshake"))


def _plaintext_status(ip: str, port: int = 15006) -> int | None:
    async def call() -> int | None:
        try:
            resp = await request(
                ip, port, "GET", "/reviews/0", [("x-pymesh-service-port", "9080")],
                host_header="reviews:9080", timeout=3.0,
            )  # fmt: skip
        except (OSError, TimeoutError, ConnectionError):
            return None
        except Exception as exc:  # the connection ended before a response
            if isinstance(exc, AssertionError):
                raise
            return None
        return resp.status

    return asyncio.run(call())


def test_sidecars_talk_mtls_with_their_service_account_identities(demo: Demo) -> None:
    page = demo.product_page()
    assert page.status == 200 and PAGE_TITLE in page.body
    assert reviews_version(page.body) in ("v1", "v2", "v3"), page.body
    # The page went gateway → productpage → reviews (→ ratings), each hop over mTLS.
    for pod in ("productpage-v1", "details-v1"):
        demo.wait(lambda pod=pod: _handshakes(demo, pod) > 0, 20, f"an mTLS handshake at {pod}")
    reviews = ("reviews-v1", "reviews-v2", "reviews-v3")
    assert sum(_handshakes(demo, pod) for pod in reviews) > 0
    shown = demo.pymesh("proxy-config", "secret", "productpage-v1")
    leaf = next(line.split() for line in shown.stdout.splitlines() if line.startswith("default"))
    assert leaf[-1] == "spiffe://cluster.local/ns/default/sa/bookinfo-productpage", shown.stdout
    assert leaf[4] == "true"  # valid now


def test_grpc_echo_sample_runs_through_the_mesh_with_mtls(demo: Demo) -> None:
    """Istio's grpc-echo sample, unchanged: a grpcio client in the sleep pod calls
    echo.echo-grpc:7070 through its sidecar; the calls reach both versions over HTTP/2 and
    mTLS, and the server's sidecar tells the app the caller's SPIFFE identity in
    x-forwarded-client-cert. The sample asks for proxyless gRPC (the grpc-agent template): the
    demo says it runs sidecars instead."""
    demo.pymesh("create", "namespace", "echo-grpc")
    sample = istio_file("grpc-echo/grpc-echo.yaml")
    demo.apply(sample)
    try:
        pods = {"echo-v1.echo-grpc", "echo-v2.echo-grpc"}
        demo.wait(
            lambda: pods <= {p.key for p in demo.state().pods if p.ready}, 60, "echo v1 and v2"
        )
        assert demo.pod("echo-v1.echo-grpc").warning == GRPC_AGENT_WARNING
        client = ("exec", "sleep", "--", "python3", "-m", "pymesh.samples.grpc_client")
        calls = demo.pymesh(*client, "echo.echo-grpc:7070", "--count", "20", "--message", "hi")
        answers = [a for a in calls.stdout.split("\n\n") if a.strip()]
        assert len(answers) == 20, calls.stdout
        assert {_fact(a, "Hostname") for a in answers} == {"echo-v1", "echo-v2"}, calls.stdout
        for answer in answers:
            assert _fact(answer, "Echo") == "hi" and _fact(answer, "ServicePort") == "17070"
            xfcc = _fact(answer, "RequestHeader=x-forwarded-client-cert:By")
            assert xfcc.startswith("spiffe://cluster.local/ns/echo-grpc/sa/default;"), answer
            assert xfcc.endswith(";URI=spiffe://cluster.local/ns/default/sa/sleep"), answer
        stats = demo.admin_stats("echo-v1.echo-grpc")
        assert any(k.endswith(".ssl.handshake") and int(v) > 0 for k, v in stats.items())
        # A name the mesh does not know goes out through the passthrough cluster and fails there
        # as through Envoy: a gRPC status, not a hang.
        missing = demo.pymesh(*client, "nowhere.echo-grpc:7070", check=False)
        assert missing.returncode == 1 and missing.stderr.startswith("UNAVAILABLE"), missing
    finally:
        demo.delete(sample)


def _fact(answer: str, key: str) -> str:
    """The rest of the echo app's line that starts with ``key=``."""
    for line in answer.splitlines():
        if line.startswith(f"{key}="):
            return line[len(key) + 1 :]
    raise AssertionError(f"no {key} in {answer!r}")


def test_mesh_wide_strict_keeps_the_page_and_refuses_plaintext(demo: Demo) -> None:
    reviews = demo.pod("reviews-v1")
    assert _plaintext_status(reviews.ip) == 200  # PERMISSIVE: a client without a sidecar
    strict = istio_file(
        "docs-extracted/security/mtls-migration/2-peerauthentication-mesh-strict.yaml"
    )
    demo.apply(strict)
    try:
        demo.wait(lambda: _plaintext_status(reviews.ip) is None, 30, "plaintext refused")
        page = demo.product_page()
        assert page.status == 200 and reviews_version(page.body) in ("v1", "v2", "v3")
    finally:
        demo.delete(strict)
    demo.wait(lambda: _plaintext_status(reviews.ip) == 200, 30, "plaintext accepted again")


def test_the_pods_address_is_its_sidecar_and_strict_refuses_plaintext_there(demo: Demo) -> None:
    """What dials ``<pod ip>:9080`` meets the sidecar's inbound listener, never the app: the
    port is held by the proxy, the app listens on a port only its sidecar knows. PERMISSIVE
    lets a plaintext client through the sidecar; mesh-wide STRICT refuses it at the
    connection while the page, sidecar to sidecar, keeps working."""
    reviews = demo.pod("reviews-v2")
    assert reviews.proxy is not None and reviews.app is not None
    assert holder((reviews.ip, 9080)).startswith(f"pid {reviews.proxy.pid} "), holder(
        (reviews.ip, 9080)
    )
    hidden = [port for ip, port in listeners_on([reviews.ip]) if port not in _SIDECAR_PORTS]
    assert hidden == [9080 + APP_PORT_OFFSET], hidden
    assert holder((reviews.ip, hidden[0])).startswith(f"pid {reviews.app.pid} ")
    assert _plaintext_status(reviews.ip, 9080) == 200
    strict = istio_file(f"{MIGRATION}/2-peerauthentication-mesh-strict.yaml")
    demo.pymesh("apply", "-n", "istio-system", "-f", str(strict))
    demo.settle()
    try:
        demo.wait(lambda: _plaintext_status(reviews.ip, 9080) is None, 30, "plaintext refused")
        page = demo.product_page()
        assert page.status == 200 and reviews_version(page.body) in ("v1", "v2", "v3")
    finally:
        demo.pymesh("delete", "-n", "istio-system", "-f", str(strict), check=False)
        demo.settle()
    demo.wait(lambda: _plaintext_status(reviews.ip, 9080) == 200, 30, "plaintext accepted again")
