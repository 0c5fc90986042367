"""The router: timeouts, retries (policy and x-envoy-* request headers), mirroring."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.proxy.runtime.netutil import blackhole
from tests.support.httpclient import AsyncConnection, request
from tests.support.procs import free_port
from tests.support.upstream import Close, Delay, Echo, Fixed, Hang, Reset, Steps
from tests.support.waiting import wait_until

RESET_503 = b"upstream connect error or disconnect/reset before headers. "


def routed(
    listen: tuple[str, int],
    endpoints: list[tuple[str, int]],
    *,
    vhost_extra: dict[str, Any] | None = None,
    cluster_extra: dict[str, Any] | None = None,
    hcm_extra: dict[str, Any] | None = None,
    **action: Any,
) -> dict[str, Any]:
    vh = vhost([route("/", **action)], **(vhost_extra or {}))
    return bootstrap(
        [listener(listen, hcm([vh], **(hcm_extra or {})))],
        [cluster("backend", endpoints, **(cluster_extra or {}))],
    )


# Envoy obeys x-envoy-* request headers only from internal requests: here, those whose one
# X-Forwarded-For address is in 10.0.0.0/8 (the default internal_address_config is empty).
INTERNAL = {
    "internal_address_config": {"cidr_ranges": [{"address_prefix": "10.0.0.0", "prefix_len": 8}]}
}
FROM_INSIDE = [("x-forwarded-for", "10.1.2.3")]


def dead_endpoint(n: int) -> tuple[str, int]:
    """An address where nothing listens (connection refused)."""
    host = upstream_ip(n)
    return (host, free_port(host))


async def test_route_timeout_gives_504(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0), routes={"/slow": Delay(10)})
    proxy = await start_proxy(routed(listen_address(), [up.address], timeout="0.25s"))
    async with await AsyncConnection.open(*proxy.address) as conn:
        started = time.monotonic()
        r = await conn.request("GET", "/slow", host="svc")
        elapsed = time.monotonic() - started
        assert (r.status, r.body) == (504, b"upstream request timeout")
        assert r.header("content-type") == "text/plain"
        assert 0.2 <= elapsed < 5.0  # the route's timeout, not the upstream's 10 s
        assert not r.will_close
        assert (await conn.request("GET", "/fast", host="svc")).status == 200
    seen = up.received[0].headers
    assert seen["x-envoy-expected-rq-timeout-ms"] == "250"
    assert proxy.stat("cluster.backend.upstream_rq_timeout") == 1
    assert proxy.stat("cluster.backend.upstream_rq_504") == 1


async def test_route_timeout_on_a_reused_connection_fires_on_time(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    # The connection keeps one deadline timer across requests: a later deadline must not
    # fire at the earlier timer's time, and an earlier one must not wait for it.
    # Bounds are wide (a loaded machine is slow) but still tell the timers apart: the
    # earlier timer fires half a timeout into the second request, the later one a whole
    # timeout (1.5 s) into the fourth.
    up = await upstream_factory(upstream_ip(0), routes={"/slow": Delay(10)})
    proxy = await start_proxy(
        routed(listen_address(), [up.address], timeout="1.5s", hcm_extra=INTERNAL)
    )
    async with await AsyncConnection.open(*proxy.address) as conn:
        assert (await conn.request("GET", "/fast", host="svc")).status == 200
        await asyncio.sleep(0.75)  # time passing is the point here, not an event
        started = time.monotonic()
        r = await conn.request("GET", "/slow", host="svc")
        assert r.status == 504 and 1.4 <= time.monotonic() - started < 8.0
        assert (await conn.request("GET", "/fast", host="svc")).status == 200
        override = [("x-envoy-upstream-rq-timeout-ms", "100"), *FROM_INSIDE]
        started = time.monotonic()
        r = await conn.request("GET", "/slow", override, host="svc")
        assert r.status == 504 and time.monotonic() - started < 1.4
    assert proxy.stat("cluster.backend.upstream_rq_timeout") == 2


async def test_upstream_rq_timeout_ms_header_overrides_route(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    # The proxy arms its 200 ms timer before the upstream starts its 600 ms: a 504 (rather
    # than the upstream's 200) is the override at work, however slow the machine.
    up = await upstream_factory(upstream_ip(0), routes={"/slow": Delay(0.6)})
    proxy = await start_proxy(
        routed(listen_address(), [up.address], timeout="10s", hcm_extra=INTERNAL)
    )
    override = [("x-envoy-upstream-rq-timeout-ms", "200")]
    r = await request(
        *proxy.address, target="/slow", headers=[*override, *FROM_INSIDE], host_header="svc"
    )
    assert r.status == 504
    # The control header is consumed, never forwarded.
    seen = up.received[0].headers
    assert "x-envoy-upstream-rq-timeout-ms" not in seen
    assert seen["x-envoy-expected-rq-timeout-ms"] == "200"
    assert seen["x-envoy-internal"] == "true"
    # From outside, the header is dropped and the route's 10 s stand.
    r = await request(*proxy.address, target="/slow", headers=override, host_header="svc")
    assert r.status == 200
    seen = up.received[1].headers
    assert seen["x-envoy-expected-rq-timeout-ms"] == "10000" and "x-envoy-internal" not in seen


RETRY_CASES = {
    # name: (retry_policy, upstream steps, expected final status, expected upstream requests)
    "5xx retried": (
        {"retry_on": "5xx", "num_retries": 2},
        (Fixed(500), Fixed(503), Echo()),
        200,
        3,
    ),
    "5xx exhausted": (
        {"retry_on": "5xx", "num_retries": 1},
        (Fixed(503), Fixed(502), Echo()),
        502,
        2,
    ),
    "gateway-error retried": (
        {"retry_on": "gateway-error", "num_retries": 1},
        (Fixed(504), Echo()),
        200,
        2,
    ),
    "gateway-error ignores 500": (
        {"retry_on": "gateway-error", "num_retries": 1},
        (Fixed(500), Echo()),
        500,
        1,
    ),
    "retriable-4xx": (
        {"retry_on": "retriable-4xx", "num_retries": 1},
        (Fixed(409), Echo()),
        200,
        2,
    ),
    "retriable-4xx ignores 404": (
        {"retry_on": "retriable-4xx", "num_retries": 1},
        (Fixed(404), Echo()),
        404,
        1,
    ),
    "retriable-status-codes": (
        {"retry_on": "retriable-status-codes", "num_retries": 1, "retriable_status_codes": [418]},
        (Fixed(418), Echo()),
        200,
        2,
    ),
    "reset": ({"retry_on": "reset", "num_retries": 1}, (Reset(), Echo()), 200, 2),
    "close before headers": ({"retry_on": "reset", "num_retries": 1}, (Close(), Echo()), 200, 2),
    "no retry on success": ({"retry_on": "5xx", "num_retries": 3}, (Echo(),), 200, 1),
}


@pytest.mark.parametrize("name", list(RETRY_CASES))
async def test_retry_policy(name: str, upstream_factory: Any, start_proxy: StartProxy) -> None:
    policy, steps, status, tries = RETRY_CASES[name]
    up = await upstream_factory(upstream_ip(0), routes={"/r": Steps(steps)})
    policy = {**policy, "retry_back_off": {"base_interval": "0.001s"}}
    proxy = await start_proxy(
        routed(
            listen_address(),
            [up.address],
            retry_policy=policy,
            vhost_extra={"include_request_attempt_count": True},
        )
    )
    r = await request(*proxy.address, target="/r", host_header="svc")
    assert r.status == status
    assert up.stats.requests == tries
    attempts = [rec.headers.get("x-envoy-attempt-count") for rec in up.received]
    assert attempts == [str(i + 1) for i in range(tries)]
    assert proxy.stat("cluster.backend.upstream_rq_retry") == tries - 1
    if tries > 1 and status == 200:
        assert proxy.stat("cluster.backend.upstream_rq_retry_success") == 1


async def test_retry_with_request_headers_only(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(
        upstream_ip(0), routes={"/r": Steps((Fixed(503), Fixed(503), Fixed(503), Echo()))}
    )
    proxy = await start_proxy(routed(listen_address(), [up.address], hcm_extra=INTERNAL))
    hs = [("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "3")]
    r = await request(*proxy.address, target="/r", headers=[*hs, *FROM_INSIDE], host_header="svc")
    assert r.status == 200 and up.stats.requests == 4
    for rec in up.received:
        assert "x-envoy-retry-on" not in rec.headers and "x-envoy-max-retries" not in rec.headers
    up.reset()
    up.route("/r", Fixed(503))
    # From outside the headers are ignored; without them (and no policy) nothing is retried.
    for headers in (hs, [*hs, ("x-forwarded-for", "10.1.2.3, 10.0.0.1")], FROM_INSIDE):
        r = await request(*proxy.address, target="/r", headers=headers, host_header="svc")
        assert r.status == 503
    assert up.stats.requests == 3


async def test_attempt_count_in_response(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0), routes={"/r": Steps((Fixed(503), Echo()))})
    proxy = await start_proxy(
        routed(
            listen_address(),
            [up.address],
            retry_policy={"retry_on": "5xx", "num_retries": 1},
            vhost_extra={"include_attempt_count_in_response": True},
        )
    )
    r = await request(*proxy.address, target="/r", host_header="svc")
    assert (r.status, r.header("x-envoy-attempt-count")) == (200, "2")


async def test_per_try_timeout_retries_then_succeeds(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0), routes={"/r": Steps((Hang(), Echo()))})
    # The second try must answer within its own per-try timeout, on a loaded machine too:
    # a second is plenty, and far from the route's 30 s.
    policy = {"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "1s"}
    proxy = await start_proxy(
        routed(listen_address(), [up.address], timeout="30s", retry_policy=policy)
    )
    started = time.monotonic()
    r = await request(*proxy.address, target="/r", host_header="svc")
    assert r.status == 200 and time.monotonic() - started < 15.0
    assert up.stats.requests == 2
    assert up.received[0].headers["x-envoy-expected-rq-timeout-ms"] == "1000"
    assert proxy.stat("cluster.backend.upstream_rq_per_try_timeout") == 1


async def test_per_try_timeout_without_retries_left_gives_504(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0), routes={"/r": Hang()})
    policy = {"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.15s"}
    proxy = await start_proxy(
        routed(listen_address(), [up.address], timeout="5s", retry_policy=policy)
    )
    r = await request(*proxy.address, target="/r", host_header="svc")
    assert (r.status, r.body) == (504, b"upstream request timeout")
    assert up.stats.requests == 2


async def test_connect_failure_retried_to_another_host(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(1))
    proxy = await start_proxy(
        routed(
            listen_address(),
            [dead_endpoint(0), up.address],
            retry_policy={"retry_on": "connect-failure", "num_retries": 2},
        )
    )
    async with await AsyncConnection.open(*proxy.address) as conn:
        for _ in range(6):
            assert (await conn.request("GET", "/", host="svc")).status == 200
    assert up.stats.requests == 6
    assert proxy.stat("cluster.backend.upstream_cx_connect_fail") >= 1


@pytest.mark.parametrize("previous_hosts", [True, False])
async def test_previous_hosts_predicate(
    previous_hosts: bool, upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """A hash policy pins every try to one host; only previous_hosts moves the retry off it."""
    up = await upstream_factory(upstream_ip(1), name="live")
    dead = dead_endpoint(0)
    policy: dict[str, Any] = {"retry_on": "connect-failure", "num_retries": 1}
    if previous_hosts:
        policy["retry_host_predicate"] = [
            {
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                },
            }
        ]
        policy["host_selection_retry_max_attempts"] = 50
    proxy = await start_proxy(
        routed(
            listen_address(),
            [dead, up.address],
            retry_policy=policy,
            hash_policy=[{"header": {"header_name": "x-user"}}],
            cluster_extra={"lb_policy": "RING_HASH"},
        )
    )
    # Find users that hash to the dead host: without the predicate they get 503 each time.
    statuses = []
    for i in range(20):
        r = await request(
            *proxy.address, target="/", headers=[("x-user", f"u{i}")], host_header="svc"
        )
        statuses.append(r.status)
    failures = proxy.stat("cluster.backend.upstream_cx_connect_fail")
    assert failures >= 1, "no user hashed to the dead host; change the names"
    if previous_hosts:
        assert statuses == [200] * 20
    else:
        assert statuses.count(503) >= 1


async def test_connect_failure_without_retry_is_503_uf(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(routed(listen_address(), [dead_endpoint(0)]))
    r = await request(*proxy.address, target="/", host_header="svc")
    assert r.status == 503
    assert r.body == RESET_503 + b"reset reason: remote connection failure"
    assert proxy.stat("cluster.backend.upstream_cx_connect_fail") == 1


async def test_retries_exhausted_on_connect_failure(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(
        routed(
            listen_address(),
            [dead_endpoint(0)],
            retry_policy={"retry_on": "connect-failure", "num_retries": 2},
        )
    )
    r = await request(*proxy.address, target="/", host_header="svc")
    assert r.status == 503
    assert r.body == RESET_503 + b"retried and the latest reset reason: remote connection failure"
    assert proxy.stat("cluster.backend.upstream_cx_connect_fail") == 3
    assert proxy.stat("cluster.backend.upstream_rq_retry_limit_exceeded") == 1


@pytest.fixture
def blackholed() -> Iterator[tuple[str, int]]:
    with blackhole(upstream_ip(5)) as address:
        yield address


async def test_connect_timeout(start_proxy: StartProxy, blackholed: tuple[str, int]) -> None:
    proxy = await start_proxy(
        bootstrap(
            [listener(listen_address(), hcm([vhost([route("/")])]))],
            [cluster("backend", [blackholed], connect_timeout="0.25s")],
        )
    )
    started = time.monotonic()
    r = await request(*proxy.address, target="/", host_header="svc")
    elapsed = time.monotonic() - started
    assert (r.status, r.body) == (503, RESET_503 + b"reset reason: connection timeout")
    assert 0.2 <= elapsed < 4.0  # the cluster's 0.25 s, not the 5 s default
    assert proxy.stat("cluster.backend.upstream_cx_connect_timeout") == 1


# -- mirroring ------------------------------------------------------------------------------
def mirrored(
    listen: tuple[str, int], primary: tuple[str, int], mirror: tuple[str, int], **action: Any
) -> dict[str, Any]:
    vh = vhost(
        [route("/", request_mirror_policies=[{"cluster": "mirror"}], timeout="10s", **action)]
    )
    return bootstrap(
        [listener(listen, hcm([vh]))],
        [cluster("backend", [primary]), cluster("mirror", [mirror])],
    )


async def test_mirror_gets_a_shadow_copy(upstream_factory: Any, start_proxy: StartProxy) -> None:
    primary = await upstream_factory(upstream_ip(0), name="primary")
    shadow = await upstream_factory(
        upstream_ip(1), name="shadow", default=Fixed(500, b"mirror answer")
    )
    proxy = await start_proxy(mirrored(listen_address(), primary.address, shadow.address))
    r = await request(
        *proxy.address, "POST", "/m?x=1", [("x-custom", "c")], b"payload", host_header="svc:8080"
    )
    assert r.status == 200 and r.header("x-upstream-name") == "primary"
    await wait_until(lambda: shadow.stats.requests == 1, "the mirror got its copy")
    copy = shadow.received[0]
    assert (copy.method, copy.target, copy.body) == ("POST", "/m?x=1", b"payload")
    assert copy.headers["host"] == "svc-shadow:8080"
    assert copy.headers["x-custom"] == "c"
    assert primary.received[0].headers["host"] == "svc:8080"


async def test_dead_or_slow_mirror_never_affects_the_caller(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    primary = await upstream_factory(upstream_ip(0), name="primary")
    slow = await upstream_factory(upstream_ip(1), name="slow", default=Hang())
    proxy_slow = await start_proxy(mirrored(listen_address(), primary.address, slow.address))
    proxy_dead = await start_proxy(mirrored(listen_address(), primary.address, dead_endpoint(2)))
    for proxy in (proxy_slow, proxy_dead):
        async with await AsyncConnection.open(*proxy.address) as conn:
            for _ in range(5):
                started = time.monotonic()
                r = await conn.request("GET", "/", host="svc")
                assert r.status == 200 and r.header("x-upstream-name") == "primary"
                assert time.monotonic() - started < 5.0  # not the mirror's 10 s
    await wait_until(lambda: slow.stats.requests == 5, "the slow mirror got five copies")
    assert primary.stats.requests == 10
