"""Envoy 1.40 and pymesh with the same rate limit filter configs, talking to mixer's Rate Limit
Service: the same statuses and the same headers (127.0.9.1-9 proxies, .10-.99 upstreams,
.140-.149 the service). Each proxy starts against a fresh service, so both see the same
counters from zero."""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import RATELIMIT_NET, address
from tests.support.differential import VOLATILE_HEADERS, Exchange, differential, normalize_echo
from tests.support.envoy import PROXY_KINDS, router_bootstrap
from tests.support.procs import ManagedProcess, free_port, wait_for_port
from tests.support.redis import RedisServer

pytestmark = pytest.mark.envoy

# The seconds to the end of the window depend on when each proxy runs: compared for presence
# (the value is the service's duration_until_reset, tested with the service).
VOLATILE = VOLATILE_HEADERS | {"x-ratelimit-reset"}
PROXY = address(RATELIMIT_NET, 1)
UPSTREAM = address(RATELIMIT_NET, 10)
RLS = address(RATELIMIT_NET, 140)
TYPE = "type.googleapis.com/"
# pymesh joins once its envoy.filters.http.ratelimit is in (it needs the data path's seams).
KINDS = PROXY_KINDS

CONFIG = """
domain: ratelimit
descriptors:
  - key: PATH
    value: "/productpage"
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: PATH
    value: "api"
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: PATH
    rate_limit: {unit: minute, requests_per_unit: 100}
"""

PATH_ACTION = {"request_headers": {"header_name": ":path", "descriptor_key": "PATH"}}
API_ACTION = {
    "header_value_match": {
        "descriptor_key": "PATH",
        "descriptor_value": "api",
        "headers": [
            {
                "name": ":path",
                "safe_regex_match": {"google_re2": {}, "regex": "/api/v1/products/[1-9]{1,2}"},
            }
        ],
    }
}


def rate_limit_filter(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": TYPE + "envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "ratelimit",
            "timeout": "2s",
            "rate_limit_service": {
                "grpc_service": {"envoy_grpc": {"cluster_name": "rls"}},
                "transport_api_version": "V3",
            },
            **extra,
        },
    }


def bootstrap(
    upstream_port: int, rls_port: int, rls_host: str = RLS, **filter_extra: Any
) -> dict[str, Any]:
    """Istio's task on one listener: the virtual host's PATH action, the "api" route's own."""
    boot = router_bootstrap((PROXY, free_port(PROXY)), [(UPSTREAM, upstream_port)])
    listener = boot["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(0, rate_limit_filter(rls_port, **filter_extra))
    vhost = hcm["route_config"]["virtual_hosts"][0]
    vhost["rate_limits"] = [{"actions": [PATH_ACTION]}]
    default = vhost["routes"][0]
    vhost["routes"] = [
        {
            "name": "api",
            "match": {"prefix": "/api/v1/products"},
            "route": {**default["route"], "rate_limits": [{"actions": [API_ACTION]}]},
        },
        default,
    ]
    boot["static_resources"]["clusters"].append(
        {
            "name": "rls",
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": "rls",
                "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": rls_host, "port_value": rls_port}}}}]}
                ],
            },
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
        }
    )  # fmt: skip
    return boot


class Service:
    """``python -m mixer.ratelimit`` on RLS (and more replicas on the next addresses, sharing
    ``redis_url``), restarted fresh for each proxy."""

    def __init__(self, workdir: Path, replicas: int = 1, redis: RedisServer | None = None) -> None:
        self.workdir = workdir
        self.redis = redis
        self.hosts = [address(RATELIMIT_NET, 140 + i) for i in range(replicas)]
        self.ports = [free_port(host) for host in self.hosts]
        self.config = workdir / "ratelimit.yaml"
        self.config.write_text(CONFIG)
        self.procs: list[ManagedProcess] = []

    @property
    def port(self) -> int:
        return self.ports[0]

    def restart(self, _kind: str = "") -> None:
        self.stop()
        if self.redis is not None:
            self.redis.restart()  # fresh counters for each proxy
        for index, (host, port) in enumerate(zip(self.hosts, self.ports, strict=True)):
            argv = [sys.executable, "-m", "mixer.ratelimit", "--host", host,
                    "--grpc-port", str(port), "--ratelimit-config", str(self.config)]  # fmt: skip
            if self.redis is not None:
                argv += ["--redis-url", self.redis.url]
            log = self.workdir / f"rls-{index}.log"
            self.procs.append(ManagedProcess(argv, log_path=log, name="rls").start())
        for host, port, proc in zip(self.hosts, self.ports, self.procs, strict=True):
            wait_for_port(host, port, timeout=20, proc=proc)
        # Counters are per wall-clock minute: a run must not straddle two windows.
        into = time.time() % 60
        if into > 55:
            time.sleep(60.5 - into)

    def stop(self) -> None:
        while self.procs:
            self.procs.pop().stop()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path)
    yield svc
    svc.stop()


def get(path: str, name: str = "") -> Exchange:
    request = f"GET {path} HTTP/1.1\r\nHost: bookinfo\r\nConnection: close\r\n\r\n"
    return Exchange(request.encode(), name=name or path)


TASK = [
    get("/productpage", "first /productpage: 1 per minute"),
    get("/productpage", "second /productpage: 429"),
    get("/api/v1/products/1", "api 1 of 2"),
    get("/api/v1/products/2", "api 2 of 2"),
    get("/api/v1/products/3", "api 3: over"),
    get("/api/v1/products/0", "api without the api descriptor: no descriptor, no limit"),
    get("/reviews", "any other path: 100 per minute, counted per path"),
]


async def _run(tmp_path: Path, service: Service, upstream_factory, kinds, **filter_extra):
    upstream = await upstream_factory(UPSTREAM)
    boot = bootstrap(upstream.port, service.port, **filter_extra)
    return await differential(
        copy.deepcopy(boot), TASK, workdir=tmp_path, kinds=kinds, before_each=service.restart,
        volatile_headers=VOLATILE, body=normalize_echo,
    )  # fmt: skip


@pytest.mark.parametrize("kinds", [KINDS])
async def test_task_limits_statuses_and_headers(tmp_path, service, upstream_factory, kinds):
    report = await _run(
        tmp_path, service, upstream_factory, kinds, enable_x_ratelimit_headers="DRAFT_VERSION_03"
    )
    envoy = report.observed[kinds[0]]
    assert [o.status for o in envoy] == [200, 429, 200, 200, 429, 200, 200]
    limited = dict(envoy[1].headers)
    assert limited["x-envoy-ratelimited"] == "true"
    assert limited["x-ratelimit-limit"] == "1, 1;w=60"
    assert limited["x-ratelimit-remaining"] == "0"
    report.assert_same()


@pytest.mark.parametrize("deny", [True, False])
async def test_service_down_follows_failure_mode_deny(
    tmp_path, service, upstream_factory, deny
) -> None:
    upstream = await upstream_factory(UPSTREAM)
    boot = bootstrap(upstream.port, service.port, failure_mode_deny=deny, timeout="0.5s")
    report = await differential(
        boot, [get("/productpage")], workdir=tmp_path, kinds=KINDS, body=normalize_echo
    )
    for observed in report.observed.values():
        assert observed[0].status == (500 if deny else 200)
    report.assert_same()


def _local(value: dict[str, Any]) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
        "type_url": TYPE + "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "value": value,
    }


ALL = {"runtime_key": "k", "default_value": {"numerator": 100, "denominator": "HUNDRED"}}
LOCAL_ROUTE = {
    # Istio's local-rate-limit-service sample, per route: 100 per minute for everyone,
    # 10 per minute for /productpage, with the x-ratelimit headers
    "stat_prefix": "test_enabled",
    "token_bucket": {"max_tokens": 100, "tokens_per_fill": 100, "fill_interval": "60s"},
    "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
    "filter_enabled": ALL,
    "filter_enforced": ALL,
    "response_headers_to_add": [
        {"append": False, "header": {"key": "x-local-rate-limit", "value": "true"}}
    ],
    "descriptors": [
        {
            "entries": [{"key": "header_match", "value": "productpage"}],
            "token_bucket": {"max_tokens": 2, "tokens_per_fill": 2, "fill_interval": "60s"},
        }
    ],
}
PRODUCTPAGE_ACTION = {
    "header_value_match": {
        "descriptor_value": "productpage",
        "expect_match": True,
        "headers": [
            {"name": ":path", "string_match": {"prefix": "/productpage", "ignore_case": True}}
        ],
    }
}


def local_bootstrap(upstream_port: int) -> dict[str, Any]:
    """Task 7's shape: the filter with a stat prefix only, the limits per route."""
    boot = router_bootstrap((PROXY, free_port(PROXY)), [(UPSTREAM, upstream_port)])
    listener = boot["static_resources"]["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"].insert(
        0,
        {
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": _local({"stat_prefix": "http_local_rate_limiter"}),
        },
    )
    route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
    route["route"]["rate_limits"] = [
        {"actions": [{"remote_address": {}}]},
        {"actions": [PRODUCTPAGE_ACTION]},
    ]
    route["typed_per_filter_config"] = {"envoy.filters.http.local_ratelimit": _local(LOCAL_ROUTE)}
    return boot


async def test_local_limits_per_route_with_descriptors(tmp_path, upstream_factory) -> None:
    upstream = await upstream_factory(UPSTREAM)
    exchanges = [
        get("/productpage", "productpage 1 of 2"),
        get("/ProductPage", "productpage 2 of 2 (ignore_case)"),
        get("/productpage", "productpage 3: the descriptor's bucket is empty"),
        get("/reviews", "other paths: the route's own bucket"),
    ]
    report = await differential(
        local_bootstrap(upstream.port), exchanges, workdir=tmp_path, kinds=KINDS,
        body=normalize_echo,
    )  # fmt: skip
    envoy = report.observed[KINDS[0]]
    assert [o.status for o in envoy] == [200, 200, 429, 200]
    limited = dict(envoy[2].headers)
    assert limited["x-local-rate-limit"] == "true"
    assert limited["x-ratelimit-limit"] == "2"
    assert limited["x-ratelimit-remaining"] == "0"
    assert "x-local-rate-limit" not in dict(envoy[0].headers)
    # the default bucket paid for the requests the descriptor let through, not the refused one
    assert [dict(o.headers)["x-ratelimit-remaining"] for o in envoy] == ["1", "0", "0", "97"]
    assert dict(envoy[3].headers)["x-ratelimit-limit"] == "100"
    assert dict(envoy[2].headers)["x-ratelimit-reset"] == "30"  # 2 tokens a minute
    report.assert_same()


async def test_two_replicas_over_redis_hold_one_limit(tmp_path, upstream_factory) -> None:
    """The rate limit cluster has two mixer replicas sharing one Redis; requests alternate
    between them (round robin) and still meet one limit, through either proxy."""
    redis = RedisServer(address(RATELIMIT_NET, 105), tmp_path / "redis")
    service = Service(tmp_path, replicas=2, redis=redis)
    upstream = await upstream_factory(UPSTREAM)
    boot = bootstrap(upstream.port, service.ports[0], failure_mode_deny=True)
    rls = boot["static_resources"]["clusters"][-1]
    rls["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": h, "port_value": p}}}}
        for h, p in zip(service.hosts, service.ports, strict=True)
    ]
    exchanges = [get(f"/api/v1/products/{n}", f"api {n}") for n in (1, 2, 3, 4)]
    try:
        redis.start()
        report = await differential(
            boot, exchanges, workdir=tmp_path, kinds=KINDS, before_each=service.restart,
            volatile_headers=VOLATILE, body=normalize_echo,
        )  # fmt: skip
    finally:
        service.stop()
        redis.stop()
    for observed in report.observed.values():
        assert [o.status for o in observed] == [200, 200, 429, 429]
    report.assert_same()
