"""Route matching, weighted clusters, rewrites, redirects, direct responses, header mutations."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.proxy.runtime.bootstrap import (
    bootstrap,
    cluster,
    direct,
    hcm,
    listener,
    route,
    vhost,
)
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support.httpclient import AsyncConnection, concurrent_requests, request
from tests.support.upstream import Fixed


def tagged(name: str, **kw: Any) -> dict[str, Any]:
    """A route that tells the upstream (through a request header) that it matched."""
    return route(
        cluster="backend",
        name=name,
        request_headers_to_add=[{"header": {"key": "x-route", "value": name}}],
        **kw,
    )


MATCH_VHOSTS = [
    vhost(
        [
            tagged("prefix", match={"prefix": "/p/"}),
            tagged("path", match={"path": "/exact"}),
            tagged("regex", match={"safe_regex": {"regex": "/re/[0-9]+"}}),
            tagged("separated", match={"path_separated_prefix": "/sep"}),
            tagged("nocase", match={"prefix": "/case", "case_sensitive": False}),
            tagged(
                "hdr-exact",
                match={
                    "prefix": "/h",
                    "headers": [{"name": "x-a", "string_match": {"exact": "1"}}],
                },
            ),
            tagged(
                "hdr-present",
                match={"prefix": "/h", "headers": [{"name": "x-b", "present_match": True}]},
            ),
            tagged(
                "hdr-invert",
                match={
                    "prefix": "/h",
                    "headers": [
                        {"name": "x-c", "string_match": {"exact": "no"}, "invert_match": True}
                    ],
                },
            ),
            tagged(
                "query",
                match={
                    "prefix": "/q",
                    "query_parameters": [{"name": "v", "string_match": {"exact": "1"}}],
                },
            ),
            tagged(
                "query-present",
                match={"prefix": "/q", "query_parameters": [{"name": "w", "present_match": True}]},
            ),
            tagged("fallback", match={"prefix": "/"}),
        ],
        domains=["exact.test"],
        name="exact",
    ),
    vhost([tagged("suffix-wild")], domains=["*.wild.test"], name="suffix"),
    vhost([tagged("prefix-wild")], domains=["pre.*"], name="prefixwild"),
    vhost([tagged("ported")], domains=["ported.test:8080"], name="ported"),
    vhost([tagged("default")], domains=["*"], name="default"),
]

MATCH_CASES = [
    # (host, path, headers, expected route)
    ("exact.test", "/p/x", (), "prefix"),
    ("exact.test", "/p", (), "fallback"),
    ("exact.test", "/exact", (), "path"),
    ("exact.test", "/exact?q=1", (), "path"),
    ("exact.test", "/exact/more", (), "fallback"),
    ("exact.test", "/re/123", (), "regex"),
    ("exact.test", "/re/12a", (), "fallback"),
    ("exact.test", "/sep", (), "separated"),
    ("exact.test", "/sep/x", (), "separated"),
    ("exact.test", "/separate", (), "fallback"),
    ("exact.test", "/CASE/x", (), "nocase"),
    ("exact.test", "/Exact", (), "fallback"),
    ("exact.test", "/h", (("x-a", "1"),), "hdr-exact"),
    ("exact.test", "/h", (("x-a", "2"), ("x-b", "")), "hdr-present"),
    ("exact.test", "/h", (("x-c", "yes"),), "hdr-invert"),
    ("exact.test", "/h", (("x-c", "no"),), "fallback"),
    ("exact.test", "/h", (), "fallback"),
    ("exact.test", "/q?v=1", (), "query"),
    ("exact.test", "/q?v=2", (), "fallback"),
    ("exact.test", "/q?a=b&w", (), "query-present"),
    ("EXACT.test", "/p/x", (), "prefix"),
    ("a.wild.test", "/", (), "suffix-wild"),
    ("a.b.wild.test", "/", (), "suffix-wild"),
    ("wild.test", "/", (), "default"),
    ("pre.anything", "/", (), "prefix-wild"),
    ("ported.test:8080", "/", (), "ported"),
    ("ported.test", "/", (), "default"),
    ("other.test", "/", (), "default"),
]


async def test_route_matching_end_to_end(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    proxy = await start_proxy(
        bootstrap(
            [listener(listen_address(), hcm(MATCH_VHOSTS))], [cluster("backend", [up.address])]
        )
    )
    got = []
    async with await AsyncConnection.open(*proxy.address) as conn:
        for host, path, headers, _ in MATCH_CASES:
            r = await conn.request("GET", path, headers, host=host)
            assert r.status == 200, (host, path)
            got.append(r.json()["headers"].get("x-route"))
    assert got == [case[3] for case in MATCH_CASES]


async def test_no_route_is_404_and_never_reaches_upstream(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(upstream_ip(0))
    vhosts = [vhost([route("/api/")], domains=["only.test"])]
    proxy = await start_proxy(
        bootstrap([listener(listen_address(), hcm(vhosts))], [cluster("backend", [up.address])])
    )
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("GET", "/other", host="only.test")
        assert (r.status, r.body, r.will_close) == (404, b"", False)
        r = await conn.request("GET", "/api/x", host="unknown.test")
        assert r.status == 404
        assert (await conn.request("GET", "/api/x", host="only.test")).status == 200
    assert up.stats.requests == 1
    assert proxy.stat("http.ingress.no_route") == 2


async def test_weighted_clusters_split_traffic(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    a = await upstream_factory(upstream_ip(0), name="a")
    b = await upstream_factory(upstream_ip(1), name="b")
    weighted = {"clusters": [{"name": "a", "weight": 75}, {"name": "b", "weight": 25}]}
    proxy = await start_proxy(
        bootstrap(
            [listener(listen_address(), hcm([vhost([route("/", weighted_clusters=weighted)])]))],
            [cluster("a", [a.address]), cluster("b", [b.address])],
        ),
        seed=7,
    )
    # Client, proxy and upstreams share one event loop: on a busy machine a request can wait
    # far longer than the helper's 5 s, which would drop it from the count.
    results = await concurrent_requests(
        *proxy.address, 400, connections=8, host_header="svc", timeout=60.0
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    names = Counter(r.header("x-upstream-name") for r in results if not isinstance(r, Exception))
    assert sum(names.values()) == 400
    assert 260 <= names["a"] <= 340 and names["a"] + names["b"] == 400


async def test_path_and_host_rewrites(upstream_factory: Any, start_proxy: StartProxy) -> None:
    up = await upstream_factory(upstream_ip(0))
    routes = [
        route("/api/", prefix_rewrite="/v2/"),
        route(
            "/r/",
            regex_rewrite={
                "pattern": {"regex": "^/r/([0-9]+)/(.*)$"},
                "substitution": "/items/\\2/\\1",
            },
        ),
        route("/host/", host_rewrite_literal="rewritten.internal"),
        route("/strip/", prefix_rewrite="/"),
    ]
    proxy = await start_proxy(
        bootstrap(
            [listener(listen_address(), hcm([vhost(routes)]))], [cluster("backend", [up.address])]
        )
    )
    async with await AsyncConnection.open(*proxy.address) as conn:
        doc = (await conn.request("GET", "/api/users?x=1", host="svc")).json()
        assert doc["path"] == "/v2/users?x=1"
        assert doc["headers"]["x-envoy-original-path"] == "/api/users?x=1"
        doc = (await conn.request("GET", "/r/42/detail", host="svc")).json()
        assert doc["path"] == "/items/detail/42"
        doc = (await conn.request("GET", "/host/x", host="svc:1234")).json()
        assert doc["headers"]["host"] == "rewritten.internal" and doc["path"] == "/host/x"
        doc = (await conn.request("GET", "/strip/a/b", host="svc")).json()
        assert doc["path"] == "/a/b"


async def test_redirects(start_proxy: StartProxy) -> None:
    routes = [
        route(
            match={"prefix": "/old"}, redirect={"path_redirect": "/new", "response_code": "FOUND"}
        ),
        route(match={"prefix": "/secure"}, redirect={"https_redirect": True}),
        route(
            match={"prefix": "/elsewhere"},
            redirect={"host_redirect": "other.test", "port_redirect": 8443, "strip_query": True},
        ),
        route(match={"prefix": "/pre/"}, redirect={"prefix_rewrite": "/post/"}),
    ]
    proxy = await start_proxy(bootstrap([listener(listen_address(), hcm([vhost(routes)]))]))
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("GET", "/old?a=1", host="svc.test")
        assert (r.status, r.header("location")) == (302, "http://svc.test/new?a=1")
        r = await conn.request("GET", "/secure/x", host="svc.test")
        assert (r.status, r.header("location")) == (301, "https://svc.test/secure/x")
        r = await conn.request("GET", "/elsewhere/p?q=1", host="svc.test")
        assert (r.status, r.header("location")) == (301, "http://other.test:8443/elsewhere/p")
        r = await conn.request("GET", "/pre/rest", host="svc.test")
        assert (r.status, r.header("location")) == (301, "http://svc.test/post/rest")
        assert r.body == b"" and not r.will_close


async def test_direct_responses(start_proxy: StartProxy) -> None:
    routes = [
        direct(200, "hello direct\n", match={"path": "/hello"}),
        direct(503, "down for maintenance", match={"path": "/down"}),
        direct(204, match={"path": "/empty"}),
    ]
    proxy = await start_proxy(bootstrap([listener(listen_address(), hcm([vhost(routes)]))]))
    async with await AsyncConnection.open(*proxy.address) as conn:
        r = await conn.request("GET", "/hello", host="svc")
        assert (r.status, r.body, r.header("content-type")) == (
            200,
            b"hello direct\n",
            "text/plain",
        )
        assert r.header("server") == "envoy"
        r = await conn.request("GET", "/empty", host="svc")
        assert (r.status, r.body, r.header("content-length")) == (204, b"", None)
        r = await conn.request("HEAD", "/hello", host="svc")
        assert (r.status, r.body, r.header("content-length")) == (200, b"", "13")
        # Answered before the request body was read: as in Envoy, the connection closes.
        r = await conn.request("POST", "/down", body=b"ignored", host="svc")
        assert (r.status, r.body) == (503, b"down for maintenance")
        assert r.header("connection") == "close" and await conn.wait_closed_by_peer(2.0)
    assert proxy.stat("http.ingress.rq_direct_response") == 4


async def test_header_mutations_at_every_level(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    up = await upstream_factory(
        upstream_ip(0),
        routes={"/*": Fixed(200, b"ok", (("x-secret", "s"), ("x-upstream-only", "u")))},
    )
    r_route = route(
        "/",
        request_headers_to_add=[
            {"header": {"key": "x-route-add", "value": "r"}},
            {
                "header": {"key": "x-multi", "value": "route"},
                "append_action": "APPEND_IF_EXISTS_OR_ADD",
            },
            {
                "header": {"key": "x-over", "value": "route"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            },
            {"header": {"key": "x-absent", "value": "route"}, "append_action": "ADD_IF_ABSENT"},
        ],
        request_headers_to_remove=["x-drop-me"],
        response_headers_to_add=[{"header": {"key": "x-resp-route", "value": "r"}}],
        response_headers_to_remove=["x-secret"],
    )
    vh = vhost(
        [r_route],
        request_headers_to_add=[{"header": {"key": "x-vhost-add", "value": "v"}}],
        response_headers_to_add=[{"header": {"key": "x-resp-vhost", "value": "v"}}],
    )
    rc_extra = {
        "request_headers_to_add": [{"header": {"key": "x-rc-add", "value": "c"}}],
        "response_headers_to_add": [{"header": {"key": "x-resp-rc", "value": "c"}}],
        "response_headers_to_remove": ["x-upstream-only"],
    }
    proxy = await start_proxy(
        bootstrap(
            [listener(listen_address(), hcm([vh], route_config_extra=rc_extra))],
            [cluster("backend", [up.address])],
        )
    )
    sent = [("X-Drop-Me", "1"), ("X-Multi", "client"), ("X-Over", "client"), ("X-Absent", "c")]
    r = await request(*proxy.address, target="/x", headers=sent, host_header="svc")
    assert r.status == 200 and r.body == b"ok"
    seen = up.received[-1].headers
    assert "x-drop-me" not in seen
    assert seen["x-route-add"] == "r" and seen["x-vhost-add"] == "v" and seen["x-rc-add"] == "c"
    assert seen["x-multi"] == "client, route"
    assert seen["x-over"] == "route"
    assert seen["x-absent"] == "c"
    assert r.header("x-secret") is None and r.header("x-upstream-only") is None
    assert (r.header("x-resp-route"), r.header("x-resp-vhost"), r.header("x-resp-rc")) == (
        "r",
        "v",
        "c",
    )


async def test_header_values_with_envoy_commands_are_rendered(
    upstream_factory: Any, start_proxy: StartProxy
) -> None:
    """``%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%`` and ``%REQ(...)%`` in headers_to_add are
    Envoy's substitution commands: they are rendered per request, not sent literally."""
    up = await upstream_factory(upstream_ip(0))
    add = [
        {
            "header": {"key": "x-client", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        },
        {"header": {"key": "x-agent", "value": "ua=%REQ(user-agent)%"}},
    ]
    proxy = await start_proxy(
        bootstrap(
            [listener(listen_address(), hcm([vhost([route("/", request_headers_to_add=add)])]))],
            [cluster("backend", [up.address])],
        )
    )
    r = await request(
        *proxy.address, target="/", host_header="svc", headers=[("user-agent", "probe/1")]
    )
    seen = r.json()["headers"]
    assert seen["x-client"].startswith("127.")
    assert seen["x-agent"] == "ua=probe/1"


async def test_an_unknown_command_in_a_header_value_is_refused(start_proxy: StartProxy) -> None:
    from pymesh.errors import UnsupportedError

    add = [{"header": {"key": "x-bad", "value": "%NOT_A_COMMAND%"}}]
    config = bootstrap(
        [listener(listen_address(), hcm([vhost([route("/", request_headers_to_add=add)])]))],
        [cluster("backend", [(upstream_ip(0), 9)])],
    )
    with pytest.raises(UnsupportedError, match="NOT_A_COMMAND"):
        await start_proxy(config)
