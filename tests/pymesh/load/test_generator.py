"""The shared load generator against real servers on 127.0.12.0/24: the schedule, counts,
failures, keep-alive, and latency measured from each request's scheduled start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from pymesh.errors import ConfigError
from pymesh.load import ERROR_CODE, MISMATCH_CODE, LoadSpec, parse_target, plan, run_load
from tests.support.procs import free_port

HOST = "127.0.12.120"


@pytest.fixture
async def server() -> AsyncIterator[Callable[..., object]]:
    runners: list[web.AppRunner] = []

    async def start(handler, host: str = HOST) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        port = free_port(host)
        await web.TCPSite(runner, host, port).start()
        runners.append(runner)
        return f"http://{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def test_plan_spreads_requests_and_interleaves_schedules() -> None:
    target = parse_target("http://h:1/")
    shares = plan(LoadSpec(target, connections=3, qps=30, requests=10))
    assert [s.calls for s in shares] == [4, 3, 3]
    assert [s.period for s in shares] == [0.1, 0.1, 0.1]
    assert [round(s.first, 4) for s in shares] == [0.0, 0.0333, 0.0667]
    closed = plan(LoadSpec(target, connections=2, qps=0, duration=1.0))
    assert [(s.calls, s.first, s.period) for s in closed] == [(None, 0.0, 0.0)] * 2


def test_specs_and_urls_are_checked() -> None:
    target = parse_target("h:8000/get")
    assert target.request_head.startswith(b"GET /get HTTP/1.1\r\nHost: h:8000\r\n")
    proxied = parse_target("http://httpbin:8000/get?x=1", proxy="http://127.0.0.5:15001")
    assert (proxied.host, proxied.port) == ("127.0.0.5", 15001)
    assert proxied.request_head.startswith(b"GET http://httpbin:8000/get?x=1 HTTP/1.1\r\n")
    for bad in ("https://h/", "http://:80/", "http://h:port/"):
        with pytest.raises(ConfigError):
            parse_target(bad)
    for kwargs in ({"connections": 0}, {"qps": -1.0}, {"requests": 0}, {"duration": 0.0}):
        with pytest.raises(ConfigError):
            LoadSpec(target, **kwargs)  # type: ignore[arg-type]


async def test_exact_count_codes_sizes_and_keepalive(server) -> None:
    seen = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        status = 503 if len(seen) % 4 == 0 else 200
        return web.Response(status=status, body=b"x" * 100)

    url = await server(handler)
    logged: list[str] = []
    spec = LoadSpec(parse_target(url + "/get"), connections=2, qps=0, requests=20)
    result = await run_load(spec, logged.append)
    assert result.count == 20 == len(seen) == result.histogram.get_total_count()
    assert result.codes == {200: 15, 503: 5}
    assert result.error_histogram.get_total_count() == 5
    assert logged == ["Parsed non ok code 503 (HTTP/1.1 503)"] * 5
    assert result.sockets == 2  # kept alive: one connection each
    assert result.body_sizes.minimum == result.header_sizes.minimum + 100


async def test_no_server_is_code_minus_one(server) -> None:
    port = free_port(HOST)
    spec = LoadSpec(parse_target(f"http://{HOST}:{port}/"), connections=1, qps=0, requests=3)
    result = await run_load(spec)
    assert result.codes == {ERROR_CODE: 3}
    assert result.errors and any(w in result.errors[0] for w in ("Connect", "refused"))


async def test_connection_close_opens_a_new_socket(server) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"Connection": "close"})

    url = await server(handler)
    result = await run_load(LoadSpec(parse_target(url), connections=1, qps=0, requests=4))
    assert result.codes == {200: 4} and result.sockets == 4


async def test_latency_counts_from_the_scheduled_start(server) -> None:
    """One stall of 300 ms at 50 req/s on one connection: the requests scheduled during the
    stall wait, and their latency includes the wait. A closed loop would report one slow
    request; here the 90th percentile shows the queue too."""
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 5:
            await asyncio.sleep(0.3)
        return web.Response(text="ok")

    url = await server(handler)
    spec = LoadSpec(parse_target(url), connections=1, qps=50, requests=40)
    result = await run_load(spec)
    assert result.codes == {200: 40}
    # Requests 5..19 were due while request 5 was held: about 15 of 40 took >= 20 ms.
    slow = sum(
        item.count_at_value_iterated_to
        for item in result.histogram.get_recorded_iterator()
        if item.value_iterated_to >= 20_000
    )
    assert slow >= 8, slow
    assert result.percentile_ms(90) >= 100
    assert result.elapsed >= 0.78  # 40 requests, 20 ms apart: the rate was kept


async def test_benchmarks_run_the_same_generator(server) -> None:
    """benchmarks/ measures fixed-rate latency with this generator (in its own process)."""
    from benchmarks import loadgen

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="x" * 100)

    url = await server(handler)
    result = await asyncio.to_thread(
        loadgen.run_open_loop, url, rate=200, connections=4, seconds=1.0, cpus=None
    )
    assert 150 <= result.requests <= 201 and result.errors == 0
    assert 0 < result.p50_ms <= result.p90_ms <= result.p99_ms


async def test_benchmarks_send_through_a_sidecar_as_an_app_does(server) -> None:
    """The two-sidecar benchmark's client sends through sidecar A as an ``HTTP_PROXY``: the
    request goes to the proxy's address, in absolute form, naming the service."""
    from benchmarks import loadgen

    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(f"{request.headers['Host']} {request.raw_path}")
        return web.Response(text="x" * 1024)

    proxy = await server(handler)
    doc = await asyncio.to_thread(
        loadgen.open_loop_document, "http://server-pymesh:8080/1k", rate=100, connections=2,
        seconds=0.5, cpus=None, proxy=proxy.rstrip("/"),
    )  # fmt: skip
    assert sum(doc["RetCodes"].values()) >= 40 and set(doc["RetCodes"]) == {"200"}
    assert set(seen) == {"server-pymesh:8080 http://server-pymesh:8080/1k"}
    assert [p["Percentile"] for p in doc["DurationHistogram"]["Percentiles"]][-1] == 99.9


async def test_a_200_without_the_expected_text_is_code_minus_two(server) -> None:
    n = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal n
        n += 1
        # The text split over two chunks must still be found; every third answer lacks it.
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"a" * 5000 + b"<title>Simple Book")
        await asyncio.sleep(0)
        await resp.write(b"store App</title>" if n % 3 else b"error</title>")
        await resp.write_eof()
        return resp

    url = await server(handler)
    target = parse_target(url + "/productpage", expect=b"Simple Bookstore App")
    result = await run_load(LoadSpec(target, connections=1, qps=0, requests=9))
    assert result.codes == {200: 6, MISMATCH_CODE: 3}
    assert result.error_histogram.get_total_count() == 3
