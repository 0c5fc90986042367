"""The admin interface: readiness, stats in Envoy's names and Prometheus format, clusters,
config dump, health-check failing, listener draining."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.proxy.runtime.conftest import (
    ADMIN,
    InProcessProxy,
    StartProxy,
    listen_address,
    upstream_ip,
)
from tests.support.httpclient import AsyncConnection, Response, request
from tests.support.procs import free_port, port_accepts
from tests.support.upstream import Fixed, Held, Steps


async def admin(proxy: InProcessProxy, method: str, path: str) -> Response:
    host, port = proxy.config["admin"]["address"]["socket_address"].values()
    return await request(host, port, method, path, host_header="admin")


async def start_with_admin(start_proxy: StartProxy, up: Any) -> InProcessProxy:
    routes = [
        route("/retry", retry_policy={"retry_on": "5xx", "num_retries": 1}),
        route("/"),
    ]
    config = bootstrap(
        [listener(listen_address(), hcm([vhost(routes)]))],
        [cluster("backend", [up.address])],
        admin=(ADMIN, free_port(ADMIN)),
    )
    return await start_proxy(config, admin=True)


async def traffic(proxy: InProcessProxy) -> None:
    async with await AsyncConnection.open(*proxy.address) as conn:
        for _ in range(3):
            assert (await conn.request("GET", "/", host="svc")).status == 200
        assert (await conn.request("GET", "/teapot", host="svc")).status == 418
        assert (await conn.request("GET", "/retry", host="svc")).status == 200


async def test_ready_and_stats_use_envoy_names(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(
        upstream_ip(0),
        routes={"/teapot": Fixed(418), "/retry": Steps((Fixed(503), Fixed(200)))},
    )
    proxy = await start_with_admin(start_proxy, up)
    r = await admin(proxy, "GET", "/ready")
    assert (r.status, r.body) == (200, b"LIVE\n")
    await traffic(proxy)
    r = await admin(proxy, "GET", "/stats")
    assert r.status == 200
    stats = dict(line.split(": ", 1) for line in r.text.splitlines() if ": " in line)
    # As Envoy counts them: upstream_rq_total once per try (the retry too), the retried 503
    # under no code, and the connection of the retried (complete) 503 reused.
    expected = {
        "cluster.backend.upstream_rq_total": "6",
        "cluster.backend.upstream_rq_completed": "5",
        "cluster.backend.upstream_rq_200": "4",
        "cluster.backend.upstream_rq_2xx": "4",
        "cluster.backend.upstream_rq_418": "1",
        "cluster.backend.upstream_rq_4xx": "1",
        "cluster.backend.upstream_rq_503": None,
        "cluster.backend.upstream_rq_retry": "1",
        "cluster.backend.upstream_rq_retry_success": "1",
        "cluster.backend.upstream_cx_total": "1",
        "cluster.backend.upstream_cx_active": "1",
        "cluster.backend.membership_total": "1",
        "http.ingress.downstream_rq_total": "5",
        "http.ingress.downstream_rq_2xx": "4",
        "http.ingress.downstream_rq_4xx": "1",
        "http.ingress.downstream_rq_5xx": "0",
        "http.ingress.downstream_cx_total": "1",
    }
    assert {k: stats.get(k) for k in expected} == expected
    assert stats["cluster.backend.upstream_rq_time"].startswith("P50(")
    r = await admin(proxy, "GET", "/stats?filter=upstream_rq_retry&format=json")
    names = {s["name"] for s in r.json()["stats"]}
    assert "cluster.backend.upstream_rq_retry" in names
    assert all("upstream_rq_retry" in n for n in names)


async def test_prometheus_exposition_parses(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(
        upstream_ip(0),
        routes={"/teapot": Fixed(418), "/retry": Steps((Fixed(503), Fixed(200)))},
    )
    proxy = await start_with_admin(start_proxy, up)
    await traffic(proxy)
    r = await admin(proxy, "GET", "/stats/prometheus")
    assert r.status == 200 and (r.header("content-type") or "").startswith("text/plain")
    samples = {}
    kinds = {}
    # prometheus_client names counter families without "_total" (so Envoy's
    # envoy_cluster_upstream_rq_total and envoy_cluster_upstream_rq{code} share a family
    # name) and gives counter samples a "_total" suffix: labels tell them apart.
    for family in text_string_to_metric_families(r.text):
        kinds[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def sample(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    cluster_ = {"envoy_cluster_name": "backend"}
    assert sample("envoy_cluster_upstream_rq_total", **cluster_) == 6
    assert sample("envoy_cluster_upstream_rq_total", envoy_response_code="200", **cluster_) == 4
    assert (
        sample("envoy_cluster_upstream_rq_xx_total", envoy_response_code_class="2", **cluster_) == 4
    )
    assert (
        sample(
            "envoy_http_downstream_rq_xx_total",
            envoy_response_code_class="4",
            envoy_http_conn_manager_prefix="ingress",
        )
        == 1
    )
    assert sample("envoy_cluster_upstream_cx_active", **cluster_) == 1
    assert kinds["envoy_cluster_upstream_rq"] == "counter"
    assert kinds["envoy_cluster_upstream_cx_active"] == "gauge"
    assert kinds["envoy_cluster_upstream_rq_time"] == "histogram"
    assert sample("envoy_cluster_upstream_rq_time_count", **cluster_) == 5


async def test_clusters_and_config_dump(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_with_admin(start_proxy, up)
    await request(*proxy.address, host_header="svc")
    r = await admin(proxy, "GET", "/clusters")
    lines = set(r.text.splitlines())
    host = f"backend::{up.host}:{up.port}"
    assert f"{host}::health_flags::healthy" in lines
    assert f"{host}::cx_active::1" in lines
    assert f"{host}::rq_active::0" in lines
    assert "backend::default_priority::max_connections::1024" in lines
    r = await admin(proxy, "GET", "/clusters?format=json")
    statuses = r.json()["cluster_statuses"]
    assert [c["name"] for c in statuses] == ["backend"]
    addr = statuses[0]["host_statuses"][0]["address"]["socket_address"]
    assert (addr["address"], addr["port_value"]) == up.address
    r = await admin(proxy, "GET", "/config_dump")
    dump = json.loads(r.body)
    types = [c["@type"].rsplit(".", 1)[1] for c in dump["configs"]]
    assert types[:4] == [
        "BootstrapConfigDump",
        "ClustersConfigDump",
        "ListenersConfigDump",
        "RoutesConfigDump",
    ]
    clusters = dump["configs"][1]["clusters"]
    assert any("backend" in json.dumps(c) for c in clusters)
    assert "main" in json.dumps(dump["configs"][2])


async def test_healthcheck_fail_and_ok(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_with_admin(start_proxy, up)
    assert (await admin(proxy, "GET", "/healthcheck/fail")).status == 405  # POST only
    assert (await admin(proxy, "POST", "/healthcheck/fail")).status == 200
    r = await admin(proxy, "GET", "/ready")
    # Envoy reports a failed health check as the DRAINING server state.
    assert (r.status, r.body) == (503, b"DRAINING\n")
    # Traffic still flows: failing the health check only tells load balancers to go away.
    assert (await request(*proxy.address, host_header="svc")).status == 200
    assert (await admin(proxy, "POST", "/healthcheck/ok")).status == 200
    assert (await admin(proxy, "GET", "/ready")).status == 200


async def test_drain_listeners(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0), routes={"/slow": Held("drained")})
    proxy = await start_with_admin(start_proxy, up)
    idle = await AsyncConnection.open(*proxy.address)
    busy = await AsyncConnection.open(*proxy.address)
    try:
        assert (await idle.request("GET", "/", host="svc")).status == 200
        await busy.send(b"GET /slow HTTP/1.1\r\nHost: svc\r\n\r\n")
        await up.wait_for_request("/slow")  # in flight when the drain starts
        assert (await admin(proxy, "POST", "/drain_listeners")).status == 200
        assert await idle.wait_closed_by_peer(5.0)
        up.release("drained")
        r = await busy.read_response(timeout=10.0)
        assert r.status == 200 and r.header("connection") == "close"
        assert await busy.wait_closed_by_peer(5.0)
        assert not await asyncio.to_thread(port_accepts, *proxy.address, 0.5)
    finally:
        await idle.close()
        await busy.close()


async def test_drain_listeners_graceful(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_with_admin(start_proxy, up)
    idle = await AsyncConnection.open(*proxy.address)
    try:
        assert (await idle.request("GET", "/", host="svc")).status == 200
        assert (await admin(proxy, "POST", "/drain_listeners?graceful")).status == 200
        assert await idle.wait_closed_by_peer(5.0)
        r = await admin(proxy, "GET", "/ready")
        assert (r.status, r.body) == (503, b"DRAINING\n")
    finally:
        await idle.close()


async def test_unknown_admin_path_is_404(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_with_admin(start_proxy, up)
    assert (await admin(proxy, "GET", "/no/such/page")).status == 404
    r = await admin(proxy, "GET", "/")
    assert "/clusters" in r.text and "/quitquitquit" in r.text


async def test_admin_keeps_connections_alive(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """Pollers (the agent's Prometheus merge, readiness probes) reuse one connection, as
    Envoy's admin allows: a connection per poll leaves a TIME-WAIT socket behind each time."""
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_with_admin(start_proxy, up)
    host, port = proxy.config["admin"]["address"]["socket_address"].values()
    async with await AsyncConnection.open(host, port) as conn:
        for _ in range(3):
            r = await conn.request("GET", "/ready", host="admin")
            assert (r.status, r.body) == (200, b"LIVE\n")
        r = await conn.request("HEAD", "/ready", host="admin")
        assert (r.status, r.body) == (200, b"")
        assert (await conn.request("GET", "/stats/prometheus", host="admin")).status == 200
        r = await conn.request("GET", "/ready", [("connection", "close")], host="admin")
        assert r.status == 200
        assert await conn.wait_closed_by_peer()
    assert conn.responses == 6
