"""Clusters end to end: discovery types, load balancers, circuit breakers, outlier detection."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support import PROXY_NET, address
from tests.support.httpclient import AsyncConnection, request, run_concurrently
from tests.support.upstream import Delay, Echo, Fixed, Steps, Upstream
from tests.support.waiting import wait_until

OVERFLOW_503 = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


def one_route(
    listen: tuple[str, int], clusters: list[dict[str, Any]], **action: Any
) -> dict[str, Any]:
    return bootstrap([listener(listen, hcm([vhost([route("/", **action)])]))], clusters)


async def spread(proxy: Any, n: int, headers: Any = (), path: str = "/") -> Counter[str]:
    names: Counter[str] = Counter()
    async with await AsyncConnection.open(*proxy.address) as conn:
        for _ in range(n):
            r = await conn.request("GET", path, headers, host="svc")
            assert r.status == 200
            names[r.header("x-upstream-name") or "?"] += 1
    return names


async def upstreams(factory: Any, n: int, **kw: Any) -> list[Upstream]:
    return [await factory(upstream_ip(i), name=f"u{i}", **kw) for i in range(n)]


# -- discovery types ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["STRICT_DNS", "LOGICAL_DNS"])
async def test_dns_clusters_resolve_localhost(
    kind: str, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    # `localhost` only resolves to 127.0.0.1: the one upstream of the suite bound there
    # (on a port picked at run time).
    up = await upstream_factory("127.0.0.1", name="local")
    proxy = await start_proxy(
        one_route(
            listen_address(),
            [cluster("backend", [("localhost", up.port)], type=kind, dns_lookup_family="V4_ONLY")],
        )
    )
    # Resolution runs in the background right after start.
    await wait_until(lambda: proxy.stat("cluster.backend.membership_total"), "DNS resolved")
    assert proxy.stat("cluster.backend.membership_total") == 1
    names = await spread(proxy, 3)
    assert names == {"local": 3}


async def test_original_dst_from_http_header(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    a, b = await upstreams(upstream_factory, 2)
    proxy = await start_proxy(
        one_route(
            listen_address(),
            [
                cluster(
                    "backend",
                    [],
                    type="ORIGINAL_DST",
                    lb_policy="CLUSTER_PROVIDED",
                    original_dst_lb_config={"use_http_header": True},
                )
            ],
        )
    )
    for up in (a, b, a):
        target = f"{up.host}:{up.port}"
        r = await request(
            *proxy.address, headers=[("x-envoy-original-dst-host", target)], host_header="svc"
        )
        assert (r.status, r.header("x-upstream-name")) == (200, up.name)
    assert proxy.stat("cluster.backend.upstream_cx_total") == 2
    # Without the header there is no destination to go to.
    r = await request(*proxy.address, host_header="svc")
    assert r.status == 503


# -- load balancers -------------------------------------------------------------------------
async def test_round_robin_spreads_evenly(upstream_factory: Any, start_proxy: StartProxy) -> None:
    ups = await upstreams(upstream_factory, 3)
    proxy = await start_proxy(
        one_route(listen_address(), [cluster("backend", [u.address for u in ups])])
    )
    assert await spread(proxy, 30) == {"u0": 10, "u1": 10, "u2": 10}


async def test_random_reaches_every_host(upstream_factory: Any, start_proxy: StartProxy) -> None:
    ups = await upstreams(upstream_factory, 3)
    proxy = await start_proxy(
        one_route(
            listen_address(), [cluster("backend", [u.address for u in ups], lb_policy="RANDOM")]
        ),
        seed=11,
    )
    names = await spread(proxy, 150)
    assert set(names) == {"u0", "u1", "u2"} and min(names.values()) >= 25


async def test_least_request_prefers_idle_hosts(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    ups = await upstreams(upstream_factory, 2, routes={"/busy": Delay(1.0)})
    proxy = await start_proxy(
        one_route(
            listen_address(),
            [
                cluster(
                    "backend",
                    [u.address for u in ups],
                    lb_policy="LEAST_REQUEST",
                    least_request_lb_config={"choice_count": 20},
                )
            ],
        ),
        seed=5,
    )
    busy = await AsyncConnection.open(*proxy.address)
    try:
        await busy.send(b"GET /busy HTTP/1.1\r\nHost: svc\r\n\r\n")
        await wait_until(lambda: sum(u.stats.requests for u in ups) == 1, "/busy arrived")
        busy_host = next(u.name for u in ups if u.stats.requests == 1)
        names = await spread(proxy, 10)
        assert busy_host not in names and sum(names.values()) == 10
        assert (await busy.read_response()).status == 200
    finally:
        await busy.close()


HASH_POLICIES = {
    "header": ([{"header": {"header_name": "x-user"}}], lambda k: ([("x-user", k)], "/")),
    "cookie": (
        [{"cookie": {"name": "session"}}],
        lambda k: ([("cookie", f"a=1; session={k}")], "/"),
    ),
    "query": ([{"query_parameter": {"name": "user"}}], lambda k: ([], f"/?user={k}&x=1")),
}


@pytest.mark.parametrize("lb", ["RING_HASH", "MAGLEV"])
@pytest.mark.parametrize("policy", list(HASH_POLICIES))
async def test_hash_policies_are_sticky(
    lb: str, policy: str, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    hash_policy, request_for = HASH_POLICIES[policy]
    ups = await upstreams(upstream_factory, 3)
    proxy = await start_proxy(
        one_route(
            listen_address(),
            [cluster("backend", [u.address for u in ups], lb_policy=lb)],
            hash_policy=hash_policy,
        )
    )
    owners = {}
    for key in (f"user-{i}" for i in range(12)):
        headers, path = request_for(key)
        names = await spread(proxy, 4, headers, path)
        assert len(names) == 1, f"{key} was not sticky: {names}"
        owners[key] = next(iter(names))
    assert len(set(owners.values())) >= 2, "every key hashed to one host"


@pytest.mark.parametrize("lb", ["RING_HASH", "MAGLEV"])
async def test_source_ip_hash_is_sticky(
    lb: str, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    ups = await upstreams(upstream_factory, 3)
    proxy = await start_proxy(
        one_route(
            listen_address(),
            [cluster("backend", [u.address for u in ups], lb_policy=lb)],
            hash_policy=[{"connection_properties": {"source_ip": True}}],
        )
    )
    owners = set()
    for n in range(100, 112):
        seen = set()
        for _ in range(3):  # a new connection each time, from the same address
            conn = await AsyncConnection.open(*proxy.address, source=address(PROXY_NET, n))
            async with conn:
                seen.add((await conn.request("GET", "/", host="svc")).header("x-upstream-name"))
        assert len(seen) == 1
        owners |= seen
    assert len(owners) >= 2


# -- circuit breakers -----------------------------------------------------------------------
async def test_max_connections_and_pending_overflow_is_503_not_retried(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0), default=Delay(0.4))
    thresholds = {"max_connections": 1, "max_pending_requests": 1}
    proxy = await start_proxy(
        one_route(
            listen_address(),
            [cluster("backend", [up.address], circuit_breakers={"thresholds": [thresholds]})],
            retry_policy={"retry_on": "5xx,reset,connect-failure", "num_retries": 3},
        )
    )
    # Open the one allowed connection first: a request waiting for a connection that is still
    # being opened is pending too (as in Envoy), which would make the split timing-dependent.
    assert (await request(*proxy.address, target="/warm", host_header="svc")).status == 200
    results = await run_concurrently(
        3, lambda i: request(*proxy.address, target=f"/{i}", host_header="svc")
    )
    statuses = sorted(r.status for r in results)  # type: ignore[union-attr]
    # One on the connection, one pending for it, one over max_pending_requests.
    assert statuses == [200, 200, 503]
    overflow = next(r for r in results if r.status == 503)  # type: ignore[union-attr]
    assert overflow.header("x-envoy-overloaded") == "true"  # type: ignore[union-attr]
    assert overflow.body == OVERFLOW_503  # type: ignore[union-attr]
    assert up.stats.connections == 1 and up.stats.requests == 3
    assert proxy.stat("cluster.backend.upstream_rq_pending_overflow") == 1
    assert proxy.stat("cluster.backend.upstream_rq_retry") == 0


async def test_max_requests_overflow(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0), default=Delay(0.5))
    thresholds = {"max_requests": 2}
    proxy = await start_proxy(
        one_route(
            listen_address(),
            [cluster("backend", [up.address], circuit_breakers={"thresholds": [thresholds]})],
        )
    )
    results = await run_concurrently(
        4, lambda i: request(*proxy.address, target=f"/{i}", host_header="svc")
    )
    statuses = sorted(r.status for r in results)  # type: ignore[union-attr]
    assert statuses == [200, 200, 503, 503]
    assert up.stats.requests == 2
    assert proxy.stat("cluster.backend.upstream_rq_active_overflow") == 2


async def test_max_retries_overflow(upstream_factory: Any, start_proxy: StartProxy) -> None:
    failing = Delay(0.2, Fixed(503))
    # The one retry allowed holds the retry slot while its (slow) try runs: the other request's
    # 503 comes back meanwhile and finds the breaker full.
    up = await upstream_factory(
        upstream_ip(0), routes={"/r": Steps((failing, failing, Delay(0.5, Echo())))}
    )
    thresholds = {"max_retries": 1}
    proxy = await start_proxy(
        one_route(
            listen_address(),
            [cluster("backend", [up.address], circuit_breakers={"thresholds": [thresholds]})],
            retry_policy={
                "retry_on": "5xx",
                "num_retries": 3,
                "retry_back_off": {"base_interval": "0.05s"},
            },
        )
    )
    results = await run_concurrently(
        2, lambda i: request(*proxy.address, target="/r", host_header="svc")
    )
    assert sorted(r.status for r in results) == [200, 503]  # type: ignore[union-attr]
    assert proxy.stat("cluster.backend.upstream_rq_retry_overflow") == 1
    assert proxy.stat("cluster.backend.upstream_rq_retry") == 1


# -- outlier detection -----------------------------------------------------------------------
async def test_consecutive_5xx_ejects_and_host_returns(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    bad = await upstream_factory(upstream_ip(0), name="bad", default=Fixed(500))
    good = await upstream_factory(upstream_ip(1), name="good")
    outlier = {
        "consecutive_5xx": 3,
        "interval": "0.1s",
        # Long enough for the 16 requests below on a busy machine (0.5 s was not).
        "base_ejection_time": "3s",
        "max_ejection_percent": 100,
    }
    proxy = await start_proxy(
        one_route(
            listen_address(),
            [cluster("backend", [bad.address, good.address], outlier_detection=outlier)],
        )
    )
    statuses = []
    async with await AsyncConnection.open(*proxy.address) as conn:
        for _ in range(16):
            statuses.append((await conn.request("GET", "/", host="svc")).status)
        assert bad.stats.requests == 3, "the bad host got traffic after its third 5xx"
        assert statuses.count(500) == 3
        assert proxy.stat("cluster.backend.outlier_detection.ejections_active") == 1
        # Back after base_ejection_time, at the next interval tick.
        await wait_until(
            lambda: proxy.stat("cluster.backend.outlier_detection.ejections_active") == 0,
            "the ejection ended",
        )
        for _ in range(4):
            await conn.request("GET", "/", host="svc")
        assert bad.stats.requests > 3, "the ejected host never came back"


async def test_max_ejection_percent_is_respected(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    ups = await upstreams(upstream_factory, 3, default=Fixed(500))
    good = await upstream_factory(upstream_ip(3), name="good")
    outlier = {
        "consecutive_5xx": 2,
        "interval": "1s",
        "base_ejection_time": "30s",
        "max_ejection_percent": 50,
    }
    proxy = await start_proxy(
        one_route(
            listen_address(),
            [
                cluster(
                    "backend",
                    [*(u.address for u in ups), good.address],
                    outlier_detection=outlier,
                )
            ],
        )
    )
    async with await AsyncConnection.open(*proxy.address) as conn:
        for _ in range(40):
            await conn.request("GET", "/", host="svc")
    assert proxy.stat("cluster.backend.outlier_detection.ejections_active") == 2
    assert sum(1 for u in ups if u.stats.requests > 2) == 1  # the one left in rotation


async def test_no_healthy_upstream(upstream_factory: Any, start_proxy: StartProxy) -> None:
    empty = cluster("empty", [])
    unhealthy = {
        "name": "sick",
        "type": "STATIC",
        "connect_timeout": "1s",
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "load_assignment": {
            "cluster_name": "sick",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": upstream_ip(0), "port_value": 9}
                                }
                            },
                            "health_status": "UNHEALTHY",
                        }
                    ]
                }
            ],
        },
    }
    routes = [route("/empty", cluster="empty"), route("/sick", cluster="sick")]
    proxy = await start_proxy(
        bootstrap([listener(listen_address(), hcm([vhost(routes)]))], [empty, unhealthy])
    )
    async with await AsyncConnection.open(*proxy.address) as conn:
        for path in ("/empty", "/sick"):
            r = await conn.request("GET", path, host="svc")
            assert (r.status, r.body) == (503, b"no healthy upstream")
            assert not r.will_close
    assert proxy.stat("cluster.empty.upstream_cx_none_healthy") == 1
    assert proxy.stat("cluster.sick.upstream_cx_none_healthy") == 1


async def test_cookie_hash_policy_with_ttl_sets_the_cookie(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """Istio's ``consistentHash.httpCookie`` with a TTL: the proxy makes the cookie up."""
    ups = await upstreams(upstream_factory, 3)
    proxy = await start_proxy(
        one_route(
            listen_address(),
            [cluster("backend", [u.address for u in ups], lb_policy="RING_HASH")],
            hash_policy=[{"cookie": {"name": "sticky", "ttl": "60s", "path": "/"}}],
        )
    )
    for _ in range(4):  # four clients, each on its own connection
        r = await request(*proxy.address, host_header="svc")
        cookie = r.header("set-cookie")
        assert cookie is not None and cookie.startswith('sticky="')
        assert cookie.endswith('"; Max-Age=60; Path=/; HttpOnly')
        value = cookie.split('"')[1]
        first = r.header("x-upstream-name")
        names = await spread(proxy, 5, [("cookie", f"sticky={value}")])
        assert names == {first: 5}
    r = await request(*proxy.address, headers=[("cookie", "sticky=mine")], host_header="svc")
    assert r.header("set-cookie") is None
