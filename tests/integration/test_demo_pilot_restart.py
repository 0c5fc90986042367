"""``pymesh demo restart pilot`` under steady traffic through the demo's ingress gateway fails
no page: the sidecars and the gateway keep serving while pilot is away, and when they
reconnect they warm what the new pilot pushes before using it (addresses 127.0.51.100-225).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.demo_harness import ISTIO, Demo, reviews_version

pytestmark = [pytest.mark.timeout(400), pytest.mark.xdist_group("pymesh-demo-pilot-restart")]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    if not ISTIO.is_dir():
        pytest.skip("../shared/istio-samples is not present")
    base: Path = tmp_path_factory.mktemp("demo-pilot-restart")
    demo = Demo(
        base / "run",
        control="127.0.51.100",
        pods="127.0.51.110-125",
        external="127.0.51.225",
    )
    try:
        demo.up()
        demo.wait_ready(timeout=120)
        yield demo
    finally:
        demo.down()
        demo.release()


def test_pilot_restart_under_load_fails_no_page(demo: Demo) -> None:
    outcomes: Counter[str] = Counter()
    failures: list[tuple[float, str]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            page = demo.product_page(timeout=10)
            version = reviews_version(page.body) if page.status == 200 else "none"
            outcome = f"{page.status} {version}"
            outcomes[outcome] += 1
            if page.status != 200 or version in ("error", "unknown"):
                failures.append((time.monotonic(), outcome))

    workers = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for worker in workers:
        worker.start()
    try:
        demo.wait(lambda: sum(outcomes.values()) >= 20, 30, "pages before the restart")
        demo.pymesh("demo", "restart", "pilot", "--run-dir", str(demo.run_dir), timeout=180)
        demo.wait_ready(timeout=60)
        before = sum(outcomes.values())
        # The reconnected proxies got their first pushes from the new pilot: pages go on.
        demo.wait(lambda: sum(outcomes.values()) >= before + 40, 60, "pages after the restart")
        demo.settle()
        after = sum(outcomes.values())
        demo.wait(lambda: sum(outcomes.values()) >= after + 20, 60, "pages once settled")
    finally:
        stop.set()
        for worker in workers:
            worker.join(15)
    print(dict(outcomes))
    assert not failures, failures[:20]
