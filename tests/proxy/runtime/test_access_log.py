"""The JSON access log on stdout: Envoy's fields, and every response flag produced for real."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.proxy.runtime.bootstrap import (
    bootstrap,
    cluster,
    fault_filter,
    fault_per_route,
    hcm,
    listener,
    local_ratelimit_filter,
    route,
    stdout_access_log,
    vhost,
)
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support.httpclient import AsyncConnection, IncompleteResponse, request
from tests.support.procs import free_port
from tests.support.upstream import CloseMidResponse, Delay, Fixed, Hang

PERCENT_100 = {"numerator": 100, "denominator": "HUNDRED"}
ONE_TOKEN = {
    "envoy.filters.http.local_ratelimit": {
        **local_ratelimit_filter(1, "3600s")["typed_config"],
        "stat_prefix": "one",
    }
}


def flagged_config(listen: tuple[str, int], up: Any) -> dict[str, Any]:
    dead = upstream_ip(9)
    delay = fault_per_route(delay={"fixed_delay": "0.05s", "percentage": PERCENT_100})
    abort = fault_per_route(abort={"http_status": 503, "percentage": PERCENT_100})
    routes = [
        route("/uh", cluster="empty", name="uh"),
        route("/uf", cluster="dead", name="uf"),
        route("/uo", cluster="full", name="uo"),
        route("/urx", name="urx", retry_policy={"retry_on": "5xx", "num_retries": 1}),
        route("/ut", name="ut", timeout="0.1s"),
        route("/uc", name="uc"),
        route("/di", name="di", typed_per_filter_config=delay),
        route("/fi", name="fi", typed_per_filter_config=abort),
        route("/rl", name="rl", typed_per_filter_config=ONE_TOKEN),
        route("/dc", name="dc"),
        route("/ok", name="ok"),
    ]
    filters = [fault_filter(), local_ratelimit_filter(1_000_000)]
    return bootstrap(
        [
            listener(
                listen,
                hcm([vhost(routes)], http_filters=filters, access_log=stdout_access_log()),
            )
        ],
        [
            cluster("backend", [up.address]),
            cluster("empty", []),
            cluster("dead", [(dead, free_port(dead))]),
            cluster(
                "full",
                [up.address],
                circuit_breakers={"thresholds": [{"max_requests": 0}]},
            ),
        ],
    )


def access_lines(out: str) -> list[dict[str, Any]]:
    lines = []
    for line in out.splitlines():
        if line.startswith("{") and '"response_code"' in line:
            lines.append(json.loads(line))
    return lines


async def test_response_flags_in_json_access_log(
    upstream_factory: Any, start_proxy: StartProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    up = await upstream_factory(
        upstream_ip(0),
        routes={
            "/urx": Fixed(503),
            "/ut": Delay(2),
            "/uc": CloseMidResponse(body_bytes=10, content_length=100),
            "/dc": Hang(),
        },
    )
    proxy = await start_proxy(flagged_config(listen_address(), up))
    expected = {
        "/uh": (503, "UH"),
        "/uf": (503, "UF"),
        "/uo": (503, "UO"),
        "/urx": (503, "URX"),
        "/ut": (504, "UT"),
        "/di": (200, "DI"),
        "/fi": (503, "FI"),
        "/rl": (429, "RL"),
        "/ok": (200, "-"),
    }
    await request(*proxy.address, target="/rl", host_header="svc")
    for path, (status, _) in expected.items():
        r = await request(
            *proxy.address,
            target=path,
            headers=[("user-agent", "flag-test"), ("x-request-id", f"id{path}")],
            host_header="svc",
        )
        assert r.status == status, path
    # The route's bucket held one token: the first /rl went through, the one above did not.
    assert up.stats.by_path["/rl"] == 1
    with pytest.raises(IncompleteResponse):
        await request(*proxy.address, target="/uc", host_header="svc")
    conn = await AsyncConnection.open(*proxy.address)
    await conn.send(b"GET /dc HTTP/1.1\r\nHost: svc\r\n\r\n")
    for _ in range(100):  # the request reached the upstream: now hang up on it
        if up.stats.by_path["/dc"]:
            break
        await asyncio.sleep(0.01)
    await conn.close()
    await asyncio.sleep(0.1)
    await proxy.stop()  # flushes the access log, as at exit
    out = capsys.readouterr().out
    logged = {line["path"]: line for line in access_lines(out)}
    for path, (status, flag) in expected.items():
        assert (logged[path]["response_code"], logged[path]["response_flags"]) == (status, flag)
    assert logged["/uc"]["response_flags"] == "UC"
    assert logged["/uc"]["response_code"] == 200  # the head had gone out
    assert logged["/dc"]["response_flags"] == "DC"
    assert logged["/dc"]["response_code"] == 0
    ok = logged["/ok"]
    assert ok["method"] == "GET" and ok["protocol"] == "HTTP/1.1"
    assert ok["authority"] == "svc" and ok["user_agent"] == "flag-test"
    assert ok["request_id"] == "id/ok"
    assert ok["upstream_cluster"] == "backend"
    assert ok["upstream_host"] == f"{up.host}:{up.port}"
    assert ok["route_name"] == "ok"
    assert ok["response_code_details"] == "via_upstream"
    assert isinstance(ok["duration"], int) and isinstance(ok["bytes_sent"], int)
    assert ok["bytes_sent"] > 0 and ok["upstream_service_time"].isdigit()
    assert logged["/urx"]["response_code_details"] == "via_upstream"
    assert logged["/ut"]["response_code_details"] == "upstream_response_timeout"
    assert logged["/fi"]["response_code_details"] == "fault_filter_abort"
    assert logged["/uh"]["response_code_details"] == "no_healthy_upstream"
    assert logged["/uh"]["upstream_cluster"] == "empty"
