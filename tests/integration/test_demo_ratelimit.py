"""Istio's rate limiting task on a running ``pymesh demo``, with Istio's files unchanged
(``../shared/istio-samples``): the ``ratelimit`` Service of the task is mixer's Rate Limit
Service, reading the task's ConfigMap; EnvoyFilters put the global filter on the ingress
gateway and the local one on productpage's sidecar. One demo serves the module's tests on a
worker (control 127.0.9.150-153, pods from 127.0.9.160, see ``_claim_slot``). Each test's
docstring is what Istio's documentation says happens; every test applies what it needs, so
the tests hold in any order and on any worker.
"""

from __future__ import annotations

import fcntl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pymesh.samples.bookinfo.constants import DETAILS_ERROR, REVIEWS_ERROR
from tests.integration.demo_harness import ISTIO, Demo, istio_file, no_demo_processes

pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("pymesh-demo-ratelimit")]

TASK = "docs-extracted/policy/rate-limit/"


def wait_for_window(margin: float = 12.0) -> None:
    """The service counts in fixed minute windows of the wall clock: start a sequence that
    must stay in one window at least ``margin`` seconds before the next one opens."""
    into = time.time() % 60
    if into > 60 - margin:
        time.sleep(60 - into + 0.5)


_SLOTS = 4


def _claim_slot(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """A demo on this area's addresses: slot N (held with a lock file, as the demo harness
    does, in case the module's tests run on more than one worker) has control address
    127.0.9.<150+N> and pods 127.0.9.<160+24N> and the 23 after it."""
    from pymesh.demo.ports import busy

    for slot in range(_SLOTS):
        lock = open(Path(tempfile.gettempdir()) / f"pymesh-ratelimit-demo-{slot}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        control = f"127.0.9.{150 + slot}"
        if busy([(control, p) for p in (8080, 15000, 15010, 15080)]):
            lock.close()
            continue
        first = 160 + 24 * slot
        demo = Demo(
            tmp_path_factory.mktemp("demo-ratelimit") / "run",
            control=control,
            pods=f"127.0.9.{first}-127.0.9.{min(first + 23, 254)}",
            external=f"127.0.9.{155 + slot}",
        )
        demo.lock = lock
        return demo
    pytest.fail(f"no free rate limit demo slot (all {_SLOTS} taken)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if not ISTIO.is_dir():
        pytest.skip("../shared/istio-samples is not present")
    demo = _claim_slot(tmp_path_factory)
    try:
        demo.up()
        demo.apply(
            istio_file("ratelimit/rate-limit-service.yaml"),
            istio_file(TASK + "1-configmap-ratelimit-config.yaml"),
        )
        # The whole pod (its sidecar too, which the gateway's calls reach over mTLS), and the
        # gateway told about it.
        demo.wait(lambda: demo.pod("ratelimit").ready, 60, "the ratelimit pod ready")
        demo.settle()
        yield demo
        result = demo.down()
        assert result.returncode == 0, result.stdout + result.stderr
        assert not no_demo_processes(demo.run_dir)
    finally:
        demo.release()


def global_filters(demo: Demo) -> None:
    """The task's global filter on the gateway, with the PATH action on its virtual host;
    returns once the gateway gets answers from the rate limit service."""
    demo.apply(
        istio_file(TASK + "2-envoyfilter-filter-ratelimit.yaml"),
        istio_file(TASK + "3-envoyfilter-filter-ratelimit-svc.yaml"),
    )
    # The filter fails closed (failure_mode_deny): a 500 means the service did not answer.
    # Each probe has a path of its own, so no probe counts against a limit a test checks.
    probes = iter(range(1_000_000))
    demo.wait(
        lambda: gateway(demo, f"/static/rls-probe-{next(probes)}")[0] != 500,
        60,
        "the gateway's calls to the rate limit service answered",
        interval=0.5,
    )


def gateway(demo: Demo, path: str) -> tuple[int, dict[str, str]]:
    page = demo.get(demo.gateway + path)
    return page.status, page.headers


def test_global_rate_limit_at_the_gateway(demo: Demo) -> None:
    """Global rate limit: with the ratelimit filter on the gateway and the PATH descriptor on
    its virtual host, /productpage is limited to 1 request per minute: the next one gets
    429 with ``x-envoy-ratelimited``."""
    global_filters(demo)
    wait_for_window()
    first, _ = gateway(demo, "/productpage")
    second, headers = gateway(demo, "/productpage")
    assert (first, second) == (200, 429)
    assert headers.get("x-envoy-ratelimited") == "true"
    # other paths have 100 a minute each
    assert gateway(demo, "/api/v1/products")[0] == 200


def test_per_route_api_descriptor(demo: Demo) -> None:
    """Per-route limit: with the VirtualService naming the product API route "api" and the
    EnvoyFilter giving that route its own descriptor, /api/v1/products/<n> is limited to 2
    requests per minute."""
    global_filters(demo)
    demo.apply(
        istio_file(TASK + "4-virtualservice-bookinfo-named-api-route.yaml"),
        istio_file(TASK + "5-envoyfilter-filter-ratelimit-svc-api.yaml"),
    )
    wait_for_window()
    statuses = [gateway(demo, f"/api/v1/products/{n}")[0] for n in (1, 2, 3)]
    assert statuses == [200, 200, 429]


@pytest.mark.parametrize(
    "task_file",
    [
        "6-envoyfilter-filter-local-ratelimit-svc.yaml",
        "7-envoyfilter-filter-local-ratelimit-svc-per-route.yaml",
    ],
)
def test_local_rate_limit_on_productpage(demo: Demo, task_file: str) -> None:
    """Local rate limit: productpage's sidecar allows 4 requests a minute (a token bucket of
    4); the fifth from the sleep pod gets 429 with ``x-local-rate-limit: true``."""
    demo.apply(istio_file(TASK + task_file))
    # A fresh client sidecar: connections it pooled to productpage before this config would
    # keep the filters they were opened with (pymesh does not drain connections of a changed
    # filter chain as Envoy does; see the branch notes).
    demo.pymesh("demo", "restart", "sleep", "--proxy-only", "--run-dir", str(demo.run_dir))
    results = [
        demo.curl_from("sleep", "-s", "http://productpage:9080/productpage") for _ in range(5)
    ]
    demo.delete(istio_file(TASK + task_file))
    statuses = [r.http_code for r in results]
    assert statuses == [200, 200, 200, 200, 429], statuses
    assert ("x-local-rate-limit", "true") in [(k.lower(), v) for k, v in results[-1].headers]
    assert not [k for k, _ in results[0].headers if k.lower() == "x-local-rate-limit"]


def test_quota_per_caller(demo: Demo) -> None:
    """Quotas per caller (README): the sleep workload gets 3 requests a minute to a
    destination; productpage, calling details and reviews for every page, is not limited."""
    rules = Path(__file__).resolve().parents[2] / "pymesh/samples/bookinfo/rules"
    demo.apply(rules / "quota-per-caller.yaml")
    demo.pymesh("demo", "restart", "sleep", "--proxy-only", "--run-dir", str(demo.run_dir))
    wait_for_window()
    statuses = [
        demo.curl_from("sleep", "-s", "http://details:9080/details/0").http_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    for n in range(5):
        page = demo.get(f"{demo.gateway}/productpage?n={n}")
        assert page.status == 200
        assert DETAILS_ERROR not in page.body and REVIEWS_ERROR not in page.body
    demo.delete(rules / "quota-per-caller.yaml")
    # the rule file carried the task's ConfigMap too: put the task's own back
    demo.apply(istio_file(TASK + "1-configmap-ratelimit-config.yaml"))
