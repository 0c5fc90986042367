from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from pymesh.samples import httpbin


@pytest.fixture
async def bin_url(mesh):
    config = httpbin.HttpbinConfig(rng=random.Random(7))
    return await mesh.add("httpbin:8000", httpbin.make_app(config))


async def test_status(bin_url, client):
    for code in (200, 201, 404, 503):
        async with client.get(f"{bin_url}/status/{code}") as resp:
            assert resp.status == code
    async with client.post(f"{bin_url}/status/418") as resp:
        assert resp.status == 418 and "teapot" in await resp.text()
    async with client.get(f"{bin_url}/status/302", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/redirect/1"
    async with client.get(f"{bin_url}/status/nope") as resp:
        assert resp.status == 400
    seen = set()
    for _ in range(30):
        async with client.get(f"{bin_url}/status/200,503") as resp:
            seen.add(resp.status)
    assert seen == {200, 503}


def test_pick_status_weights():
    rng = random.Random(1)
    counts = Counter(httpbin.pick_status("200:0.9, 500:0.1", rng) for _ in range(2000))
    assert set(counts) == {200, 500} and 1600 < counts[200] < 1990
    assert httpbin.pick_status("204", rng) == 204
    for bad in ("", "abc", "99", "200:-1", "600"):
        with pytest.raises(ValueError):
            httpbin.pick_status(bad, rng)


def test_delay_is_capped_at_ten_seconds():
    assert httpbin.delay_seconds("2.5") == 2.5
    assert httpbin.delay_seconds("100") == httpbin.MAX_DELAY_S == 10.0
    assert httpbin.delay_seconds("-3") == 0.0
    with pytest.raises(ValueError):
        httpbin.delay_seconds("nan")


async def test_delay(bin_url, client):
    start = time.monotonic()
    async with client.get(f"{bin_url}/delay/0.3?a=1") as resp:
        body = await resp.json()
    assert 0.3 <= time.monotonic() - start < 2
    assert body["args"] == {"a": "1"}
    async with client.get(f"{bin_url}/delay/x") as resp:
        assert resp.status == 400


async def test_echo_endpoints(bin_url, client):
    headers = {"x-b3-sampled": "1", "X-Forwarded-For": "10.1.2.3"}
    async with client.get(f"{bin_url}/headers", headers=headers) as resp:
        echoed = (await resp.json())["headers"]
    assert echoed["X-B3-Sampled"] == "1"
    assert echoed["Host"].startswith("127.0.0.")
    async with client.get(f"{bin_url}/ip", headers=headers) as resp:
        assert await resp.json() == {"origin": "10.1.2.3"}
    async with client.get(f"{bin_url}/ip") as resp:
        assert await resp.json() == {"origin": "127.0.0.1"}
    async with client.get(f"{bin_url}/get?x=1&x=2&y=3") as resp:
        body = await resp.json()
    assert body["args"] == {"x": ["1", "2"], "y": "3"}
    assert body["url"] == f"{bin_url}/get?x=1&x=2&y=3"
    assert set(body) == {"args", "headers", "origin", "url"}
    async with client.post(f"{bin_url}/post", json={"k": [1]}) as resp:
        body = await resp.json()
    assert body["json"] == {"k": [1]} and body["data"] == '{"k": [1]}' and body["form"] == {}
    async with client.post(f"{bin_url}/post", data={"a": "b"}) as resp:
        body = await resp.json()
    assert body["form"] == {"a": "b"} and body["data"] == "" and body["json"] is None
    async with client.get(f"{bin_url}/post") as resp:
        assert resp.status == 405
    async with client.put(f"{bin_url}/anything/some/path", data=b"\xff") as resp:
        body = await resp.json()
    assert body["method"] == "PUT"
    assert body["url"].endswith("/anything/some/path")
    assert body["data"].startswith("data:application/octet-stream;base64,")
    async with client.get(f"{bin_url}/") as resp:
        assert resp.status == 200 and "httpbin" in await resp.text()
    async with client.get(f"{bin_url}/health") as resp:
        assert resp.status == 200
    async with client.get(f"{bin_url}/user-agent", headers={"User-Agent": "ua/1"}) as resp:
        assert await resp.json() == {"user-agent": "ua/1"}
