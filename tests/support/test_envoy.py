from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import yaml

from tests.support import SUPPORT_NET, address
from tests.support.differential import (
    DiffReport,
    Exchange,
    Observed,
    differential,
    normalize_echo,
)
from tests.support.envoy import (
    EnvoyProcess,
    PymeshProxyProcess,
    direct_response_bootstrap,
    router_bootstrap,
)
from tests.support.httpclient import build_request, request, request_sync
from tests.support.procs import ProcessExitedError, free_port, http_status
from tests.support.upstream import Fixed, Upstream

PROXY = address(SUPPORT_NET, 30)
UPSTREAM = address(SUPPORT_NET, 40)


@pytest.mark.envoy
def test_envoy_direct_response_start_stop(tmp_path: Path) -> None:
    port = free_port(PROXY)
    envoy = EnvoyProcess(direct_response_bootstrap((PROXY, port), body="hi\n"), workdir=tmp_path)
    envoy.start()
    try:
        assert http_status(*envoy.admin, "/ready") == 200
        assert envoy.admin_url.startswith(f"http://{PROXY}:")
        r = request_sync(PROXY, port, target="/anything")
        assert (r.status, r.body, r.header("server")) == (200, b"hi\n", "envoy")
        assert "--disable-hot-restart" in envoy.argv() and "--base-id" in envoy.argv()
    finally:
        assert envoy.stop() == 0
    assert http_status(*envoy.admin, "/ready") is None


@pytest.mark.envoy
def test_envoy_from_file_and_unique_base_ids(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(direct_response_bootstrap((PROXY, free_port(PROXY)))))
    a = EnvoyProcess(str(path), workdir=tmp_path / "a")
    b = EnvoyProcess(str(path), workdir=tmp_path / "b")
    assert a.base_id != b.base_id  # the admin port (injected, free) differs


@pytest.mark.envoy
def test_envoy_bad_bootstrap_fails_fast(tmp_path: Path) -> None:
    bad = direct_response_bootstrap((PROXY, free_port(PROXY)))
    bad["static_resources"]["listeners"][0]["no_such_field"] = 1
    with pytest.raises(ProcessExitedError, match="no_such_field"):
        EnvoyProcess(bad, workdir=tmp_path).start(timeout=10)


def test_pymesh_command_line(tmp_path: Path) -> None:
    boot = direct_response_bootstrap((PROXY, 1))
    proxy = PymeshProxyProcess(boot, workdir=tmp_path, log_level="debug")
    argv = proxy.argv()
    assert argv[1:] == ["--log-level", "debug", "proxy", "-c", str(proxy.config_path)]
    written = yaml.safe_load(proxy.config_path.read_text())
    assert written["admin"]["address"]["socket_address"]["port_value"] == proxy.admin[1]


async def test_proxy_kind_routes_to_upstream(
    proxy_kind: str,
    proxy_factory: Callable[..., Awaitable[EnvoyProcess]],
    upstream_factory: Callable[..., Awaitable[Upstream]],
) -> None:
    up = await upstream_factory(UPSTREAM, name="u", routes={"/teapot": Fixed(418)})
    listen = (PROXY, free_port(PROXY))
    await proxy_factory(proxy_kind, router_bootstrap(listen, [up.address]))
    r = await request(*listen, "POST", "/echo", body=b"abc")
    assert r.status == 200 and r.header("x-upstream-name") == "u"
    assert r.json()["body_length"] == 3
    assert (await request(*listen, target="/teapot")).status == 418


@pytest.mark.envoy
async def test_differential_machinery(
    tmp_path: Path, upstream_factory: Callable[..., Awaitable[Upstream]]
) -> None:
    # Envoy against itself: the harness must report no difference.
    up = await upstream_factory(UPSTREAM, routes={"/teapot": Fixed(418, b"short")})
    listen = (PROXY, free_port(PROXY))
    exchanges = [
        Exchange(build_request("GET", "/echo", host="svc"), name="echo"),
        Exchange(build_request("POST", "/teapot", body=b"x", host="svc")),
        Exchange(b"GET / HTTP/1.1\r\nHost: svc\r\nBad Header: x\r\n\r\n", name="bad header"),
    ]
    report = await differential(
        router_bootstrap(listen, [up.address]),
        exchanges,
        workdir=tmp_path,
        kinds=("envoy", "envoy"),
        body=normalize_echo,
        before_each=lambda kind: up.reset(),
    )
    report.assert_same()
    seen = report.observed["envoy"]
    assert seen[0].status == 200 and seen[1].status == 418 and seen[2].status == 400


def test_diff_report_lists_differences() -> None:
    ex = [Exchange(b"GET /a HTTP/1.1\r\n\r\n"), Exchange(b"GET /b HTTP/1.1\r\n\r\n", name="b")]
    report = DiffReport(ex)
    report.observed["envoy"] = [Observed(200), Observed(503, body=b"x")]
    report.observed["pymesh"] = [Observed(200), Observed(None, outcome="reset")]
    assert len(report.differences) == 1 and report.differences[0].startswith("[1] b:")
    with pytest.raises(AssertionError, match="proxies differ"):
        report.assert_same()


def test_normalize_echo_masks_volatile() -> None:
    a = b'{"headers": {"x-request-id": "1", "a": "b"}, "connection": 1}'
    b = b'{"headers": {"x-request-id": "2", "a": "b"}, "connection": 7}'
    assert normalize_echo(a) == normalize_echo(b)
