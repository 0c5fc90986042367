"""The JSON access log on stdout: Envoy's fields, and every response flag produced for real.

:func:`flagged_config` and :func:`produce_flags` are shared with the differential test, which
runs the same scenario through Envoy and compares the two logs.
"""

from __future__ import annotations

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
from tests.support.upstream import Close, CloseMidResponse, Delay, Fixed, Hang, Upstream
from tests.support.waiting import wait_until

PERCENT_100 = {"numerator": 100, "denominator": "HUNDRED"}
ONE_TOKEN = {
    "envoy.filters.http.local_ratelimit": {
        **local_ratelimit_filter(1, "3600s")["typed_config"],
        "stat_prefix": "one",
    }
}
UPSTREAM_ROUTES = {
    "/urx": Fixed(503),
    "/ut": Delay(2),
    "/uc": Close(),
    "/upe": CloseMidResponse(body_bytes=10, content_length=100),
    "/dc": Hang(),
}
# path -> (status, flags, response code details) that Envoy logs.
EXPECTED = {
    "/uh": (503, "UH", "no_healthy_upstream"),
    "/uf": (503, "UF", "upstream_reset_before_response_started{remote_connection_failure}"),
    "/uo": (503, "UO", "upstream_reset_before_response_started{overflow}"),
    "/urx": (503, "URX", "via_upstream"),
    "/ut": (504, "UT", "response_timeout"),
    "/uc": (503, "UC", "upstream_reset_before_response_started{connection_termination}"),
    # The head had gone out when the upstream closed mid-body.
    "/upe": (200, "UPE", "upstream_reset_after_response_started{protocol_error}"),
    "/di": (200, "DI", "via_upstream"),
    "/fi": (503, "FI", "fault_filter_abort"),
    "/rl": (429, "RL", "local_rate_limited"),
    "/dc": (0, "DC", "downstream_remote_disconnect"),
    "/ok": (200, "-", "via_upstream"),
}


def flagged_config(listen: tuple[str, int], up: Upstream, dead_host: str) -> dict[str, Any]:
    delay = fault_per_route(delay={"fixed_delay": "0.05s", "percentage": PERCENT_100})
    abort = fault_per_route(abort={"http_status": 503, "percentage": PERCENT_100})
    routes = [
        route("/uh", cluster="empty", name="uh"),
        route("/uf", cluster="dead", name="uf"),
        route("/uo", cluster="full", name="uo"),
        route("/urx", name="urx", retry_policy={"retry_on": "5xx", "num_retries": 1}),
        route("/ut", name="ut", timeout="0.1s"),
        route("/di", name="di", typed_per_filter_config=delay),
        route("/fi", name="fi", typed_per_filter_config=abort),
        route("/rl", name="rl", typed_per_filter_config=ONE_TOKEN),
        route("/", name="other"),
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
            cluster("dead", [(dead_host, free_port(dead_host))]),
            cluster("full", [up.address], circuit_breakers={"thresholds": [{"max_requests": 0}]}),
        ],
    )


async def produce_flags(address: tuple[str, int], up: Upstream) -> None:
    """One request per entry of :data:`EXPECTED` (and one more /rl, to empty its bucket)."""
    assert (await request(*address, target="/rl", host_header="svc")).status == 200
    for path, (status, _, _) in EXPECTED.items():
        if path in ("/upe", "/dc"):
            continue
        r = await request(
            *address,
            target=path,
            headers=[("user-agent", "flag-test"), ("x-request-id", f"id{path}")],
            host_header="svc",
        )
        assert r.status == status, path
    with pytest.raises(IncompleteResponse):
        await request(
            *address,
            target="/upe",
            headers=[("user-agent", "flag-test"), ("x-request-id", "id/upe")],
            host_header="svc",
        )
    conn = await AsyncConnection.open(*address)
    await conn.send(
        b"GET /dc HTTP/1.1\r\nHost: svc\r\nUser-Agent: flag-test\r\nX-Request-Id: id/dc\r\n\r\n"
    )
    await up.wait_for_request("/dc")  # the request reached the upstream: now hang up on it
    open_before = up.stats.open_connections
    await conn.close()
    # The proxy resets the upstream side of the stream it logs as DC, in the same callback:
    # once the upstream sees its connection go, the stream is over and logged.
    await wait_until(
        lambda: up.stats.open_connections < open_before, "the proxy dropped the /dc upstream"
    )


def access_lines(out: str) -> dict[str, dict[str, Any]]:
    """The JSON access-log lines in ``out`` (other output skipped), by path."""
    lines = {}
    for line in out.splitlines():
        if line.startswith("{") and '"response_code"' in line:
            entry = json.loads(line)
            lines[entry["path"]] = entry
    return lines


async def test_response_flags_in_json_access_log(
    upstream_factory: Any, start_proxy: StartProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    up = await upstream_factory(upstream_ip(0), routes=UPSTREAM_ROUTES)
    proxy = await start_proxy(flagged_config(listen_address(), up, upstream_ip(9)))
    await produce_flags(proxy.address, up)
    # The route's bucket held one token: the first /rl went through, the second did not.
    assert up.stats.by_path["/rl"] == 1
    await proxy.stop()  # flushes the access log, as at exit
    logged = access_lines(capsys.readouterr().out)
    for path, expected in EXPECTED.items():
        entry = logged[path]
        got = (entry["response_code"], entry["response_flags"], entry["response_code_details"])
        assert got == expected, path
    ok = logged["/ok"]
    assert ok["method"] == "GET" and ok["protocol"] == "HTTP/1.1"
    assert ok["authority"] == "svc" and ok["user_agent"] == "flag-test"
    assert ok["request_id"] == "id/ok"
    assert ok["upstream_cluster"] == "backend"
    assert ok["upstream_host"] == f"{up.host}:{up.port}"
    assert ok["route_name"] == "other"
    assert isinstance(ok["duration"], int) and ok["upstream_service_time"].isdigit()
    assert ok["bytes_sent"] > 100 and ok["bytes_received"] == 0
    assert logged["/uh"]["upstream_cluster"] == "empty"
    # A filter that answers before the router still logs the route's cluster (as Envoy).
    assert logged["/fi"]["upstream_cluster"] == "backend"
    assert logged["/fi"]["bytes_sent"] == len(b"fault filter abort")
