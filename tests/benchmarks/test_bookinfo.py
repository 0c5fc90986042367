"""The Bookinfo benchmark's pieces without running it: the pods it starts from the project's
manifests, the addresses they get, pilot's config, the proxies' bootstraps, and the
pymesh/Envoy table (failures counted, never hidden)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.bookinfo import ratio_table
from benchmarks.bookinfo_mesh import (
    MANIFESTS,
    NET,
    bookinfo_pods,
    page_ok,
    pilot_config,
    pod_addresses,
)
from pymesh.demo.bootstrap import bootstrap
from pymesh.demo.images import Role


def test_pods_are_bookinfo_and_its_gateway_on_the_benchmark_addresses() -> None:
    pods = bookinfo_pods()
    names = [p.name for p in pods]
    assert names == ["istio-ingressgateway", "details-v1", "productpage-v1", "ratings-v1",
                     "reviews-v1", "reviews-v2", "reviews-v3"]  # fmt: skip
    assert pods[0].role is Role.GATEWAY and all(p.runs_app for p in pods[1:])
    ips = pod_addresses(pods)
    assert len(set(ips.values())) == 7 and all(ip.startswith(f"{NET}.") for ip in ips.values())
    # An app hides behind its sidecar, which holds the container port, as in the demo.
    reviews = pods[-1]
    meta = bootstrap(reviews, ips[reviews.name], f"{NET}.100:15010")["node"]["metadata"]
    assert meta["PYMESH_MODE"] == "process" and meta["PYMESH_APP_PORTS"] == '{"9080": 29080}'
    assert reviews.stand_in.argv("h", 29080)[-2:] == ["--version", "v3"]
    gateway = bootstrap(pods[0], ips[pods[0].name], f"{NET}.100:15010")
    assert gateway["node"]["id"].startswith("router~")


def test_pilot_config_is_the_shipped_manifests(tmp_path: Path) -> None:
    files = pilot_config(tmp_path / "mesh")
    assert [f.name for f in files] == list(MANIFESTS)
    assert "kind: Gateway" in (tmp_path / "mesh" / "bookinfo-gateway.yaml").read_text()


def test_only_the_full_page_counts_while_waiting() -> None:
    assert page_ok(b"<title>Simple Bookstore App</title> reviews")
    assert not page_ok(b"<title>Simple Bookstore App</title> currently unavailable")
    assert not page_ok(b"upstream connect error")


def row(plane: str, rate: Any, rep: int, **kw: Any) -> dict[str, Any]:
    base = {"plane": plane, "rate": rate, "rep": rep, "p50_ms": 10.0, "p99_ms": 20.0, "rps": 25.0,
            "requests": 250, "errors": 0, "cpu_us": 1000.0, "rss_mb": 500.0,
            "idle_cpu_pct": 5.0}  # fmt: skip
    return {**base, **kw}


def test_ratio_table_counts_failures_and_compares_the_planes() -> None:
    runs = [
        row("direct", 25.0, 0),
        row("envoy", 25.0, 0),
        row("pymesh", 25.0, 0, p50_ms=15.0, cpu_us=2000.0, errors=1),
        row("pymesh", 25.0, 1, errors=40, error="40 of 250 requests failed"),
        {"plane": "envoy", "rate": 25.0, "rep": 1, "error": "did not start"},
    ]
    table = ratio_table(runs, [25.0])
    line = table.splitlines()[-1]
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[1:4] == ["0 / 250", "0 / 250 (+1 runs failed)", "41 / 500"]
    # The failed pymesh run is counted above but left out of the medians.
    assert cells[4] == "10.0 / 15.0 (1.50x)"
    assert cells[7] == "1,000 / 2,000 (2.00x)"
    assert cells[9] == "5.0 / 5.0 (1.00x)"
