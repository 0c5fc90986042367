from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.support import SUPPORT_NET, address
from tests.support.behaviours import behaviour_from_json, behaviour_to_json
from tests.support.httpclient import (
    AsyncConnection,
    IncompleteResponse,
    ResponseTimeout,
    build_request,
    request,
)
from tests.support.upstream import (
    Chunked,
    Close,
    CloseMidResponse,
    Delay,
    Echo,
    Expect100,
    Fixed,
    Hang,
    Held,
    RawResponse,
    Reset,
    Steps,
    Stream,
    Upstream,
    UpstreamProcess,
    stream_body,
)

HOST = address(SUPPORT_NET, 10)
Factory = Callable[..., Awaitable[Upstream]]


async def test_echo_describes_the_request(upstream_factory: Factory) -> None:
    up = await upstream_factory(HOST, name="alpha")
    r = await request(HOST, up.port, "POST", "/a/b?x=1", [("X-Test", "1")], b"payload")
    assert r.status == 200
    assert r.header("x-upstream-name") == "alpha"
    doc = r.json()
    assert doc["method"] == "POST" and doc["path"] == "/a/b?x=1"
    assert doc["headers"]["x-test"] == "1"
    assert doc["body_length"] == 7
    assert doc["body_sha256"] == hashlib.sha256(b"payload").hexdigest()
    assert up.received[0].body == b"payload" and up.received[0].path == "/a/b"


async def test_keep_alive_counts_and_chunked_body(upstream_factory: Factory) -> None:
    up = await upstream_factory(HOST)
    async with await AsyncConnection.open(HOST, up.port) as conn:
        for i in range(3):
            r = await conn.request("POST", f"/r{i}", body=[b"ab", b"cde"])
            assert r.json()["index_on_connection"] == i + 1
            assert r.json()["body_length"] == 5
    assert (up.stats.connections, up.stats.requests) == (1, 3)
    assert up.received[2].body == b"abcde"


async def test_pipelined_requests(upstream_factory: Factory) -> None:
    up = await upstream_factory(HOST)
    async with await AsyncConnection.open(HOST, up.port) as conn:
        await conn.send(build_request("GET", "/1") + build_request("GET", "/2"))
        paths = [(await conn.read_response()).json()["path"] for _ in range(2)]
    assert paths == ["/1", "/2"]


async def test_fixed_prefix_and_steps(upstream_factory: Factory) -> None:
    routes = {
        "/fixed*": Fixed(503, b"down", (("retry-after", "1"),)),
        "/flaky": Steps((Fixed(503), Fixed(503), Echo())),
    }
    up = await upstream_factory(HOST, routes=routes)
    r = await request(HOST, up.port, target="/fixed/x")
    assert (r.status, r.body, r.header("retry-after")) == (503, b"down", "1")
    statuses = [(await request(HOST, up.port, target="/flaky")).status for _ in range(4)]
    assert statuses == [503, 503, 200, 200]
    assert up.stats.by_path["/flaky"] == 4


async def test_delay_and_chunked_with_trailers(upstream_factory: Factory) -> None:
    routes = {
        "/slow": Delay(0.2, Fixed(204)),
        "/chunks": Chunked((b"a", b"bc"), interval=0.01, trailers=(("x-sum", "3"),)),
    }
    up = await upstream_factory(HOST, routes=routes)
    t0 = time.monotonic()
    assert (await request(HOST, up.port, target="/slow")).status == 204
    assert time.monotonic() - t0 >= 0.2
    r = await request(HOST, up.port, target="/chunks")
    assert r.body == b"abc" and r.trailers == (("x-sum", "3"),)
    assert r.header("transfer-encoding") == "chunked"


@pytest.mark.parametrize("chunked", [False, True])
async def test_large_stream(upstream_factory: Factory, chunked: bool) -> None:
    size = 3 * 65536 + 123
    up = await upstream_factory(HOST, routes={"/big": Stream(size, chunked=chunked)})
    r = await request(HOST, up.port, target="/big")
    assert r.body == stream_body(size)


async def test_close_mid_response(upstream_factory: Factory) -> None:
    routes = {
        "/after-headers": CloseMidResponse(0, 100),
        "/mid-body": CloseMidResponse(40, 100),
        "/close": Close(),
    }
    up = await upstream_factory(HOST, routes=routes)
    with pytest.raises(IncompleteResponse) as e1:
        await request(HOST, up.port, target="/after-headers")
    assert (e1.value.status, e1.value.body, e1.value.reset) == (200, b"", False)
    with pytest.raises(IncompleteResponse) as e2:
        await request(HOST, up.port, target="/mid-body")
    assert e2.value.body == stream_body(40)
    with pytest.raises(IncompleteResponse) as e3:
        await request(HOST, up.port, target="/close")
    assert e3.value.status is None


async def test_reset(upstream_factory: Factory) -> None:
    routes = {"/rst": Reset(), "/rst-late": Reset(after_headers=True, body_bytes=10)}
    up = await upstream_factory(HOST, routes=routes)
    with pytest.raises(IncompleteResponse) as e1:
        await request(HOST, up.port, target="/rst")
    assert e1.value.reset and e1.value.status is None
    with pytest.raises(IncompleteResponse) as e2:
        await request(HOST, up.port, target="/rst-late")
    assert e2.value.reset and e2.value.status == 200 and e2.value.body == stream_body(10)


async def test_hang_never_answers(upstream_factory: Factory) -> None:
    up = await upstream_factory(HOST, routes={"/hang": Hang()})
    with pytest.raises(ResponseTimeout) as exc:
        await request(HOST, up.port, target="/hang", timeout=0.3)
    assert exc.value.status is None
    for _ in range(50):  # the server notices the client left
        if up.stats.open_connections == 0:
            break
        await asyncio.sleep(0.02)
    assert up.stats.open_connections == 0 and up.stats.requests == 1


async def test_held_answers_once_released(upstream_factory: Factory) -> None:
    up = await upstream_factory(HOST, routes={"/held": Held("go", then=Fixed(201))})
    async with await AsyncConnection.open(HOST, up.port) as conn:
        await conn.send(build_request("GET", "/held"))
        await up.wait_for_request("/held")
        with pytest.raises(ResponseTimeout):  # held: nothing comes until the release
            await conn.read_response(timeout=0.2)
    async with await AsyncConnection.open(HOST, up.port) as conn:
        await conn.send(build_request("GET", "/held"))
        await up.wait_for_request("/held", count=2)
        up.release("go")
        assert (await conn.read_response()).status == 201
    with pytest.raises(TimeoutError):
        await up.wait_for_request("/never", timeout=0.1)


async def test_expect_100_continue(upstream_factory: Factory) -> None:
    routes = {
        "/reject": Expect100("reject", 417),
        "/quiet": Expect100("ignore"),
    }
    up = await upstream_factory(HOST, routes=routes)
    hdrs = [("Expect", "100-continue"), ("Content-Length", "4")]
    async with await AsyncConnection.open(HOST, up.port) as conn:
        await conn.send(build_request("PUT", "/ok", hdrs))
        await asyncio.sleep(0.05)
        await conn.send(b"data")
        r = await conn.read_response()
        assert r.informational == (100,) and r.json()["body_length"] == 4
    async with await AsyncConnection.open(HOST, up.port) as conn:
        await conn.send(build_request("PUT", "/reject", hdrs))
        r = await conn.read_response()
        assert r.status == 417 and r.will_close
    r = await request(HOST, up.port, "PUT", "/quiet", hdrs, b"data")
    assert r.informational == () and r.json()["body_length"] == 4


async def test_head_http10_and_bad_request(upstream_factory: Factory) -> None:
    up = await upstream_factory(HOST)
    async with await AsyncConnection.open(HOST, up.port) as conn:
        r = await conn.request("HEAD", "/h")
        assert r.body == b"" and int(r.header("content-length") or 0) > 0
        await conn.send(b"GET /old HTTP/1.0\r\n\r\n")
        r = await conn.read_response()
        assert r.status == 200 and r.will_close
    async with await AsyncConnection.open(HOST, up.port) as conn:
        await conn.send(b"NONSENSE\r\n\r\n")
        r = await conn.read_response()
        assert r.status == 400


async def test_raw_response(upstream_factory: Factory) -> None:
    raw = b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\nread until close"
    up = await upstream_factory(HOST, routes={"/raw": RawResponse(raw, close=True)})
    r = await request(HOST, up.port, target="/raw")
    assert r.body == b"read until close" and r.will_close


def test_behaviour_json_roundtrip() -> None:
    b = Steps((Delay(0.1, Fixed(503, b"\x00\xff", (("a", "b"),))), Chunked((b"x",)), Reset()))
    assert behaviour_from_json(behaviour_to_json(b)) == b


async def test_subprocess_upstream(tmp_path, upstream_process_factory) -> None:
    host = address(SUPPORT_NET, 11)
    up: UpstreamProcess = upstream_process_factory(host, name="sub", routes={"/f": Fixed(418)})
    assert (await request(host, up.port, target="/f")).status == 418
    r = await request(host, up.port, "POST", "/e", body=b"xyz")
    assert r.header("x-upstream-name") == "sub"
    up.route("/f", Fixed(201))
    assert (await request(host, up.port, target="/f")).status == 201
    stats = up.stats()
    assert stats.requests == 3 and stats.by_path["/f"] == 2
    assert [rec.body for rec in up.received()] == [b"", b"xyz", b""]
    up.reset()
    assert up.stats().requests == 0
