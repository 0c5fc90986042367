from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web

from pymesh.samples.bookinfo import constants, ratings, reviews
from pymesh.samples.bookinfo.constants import RATINGS_UNAVAILABLE, REVIEWS


async def _reviews(mesh, version: str, ratings_authority: str = "ratings:9080") -> str:
    config = reviews.ReviewsConfig(
        version=version,
        podname=f"reviews-{version}-abc",
        ratings_url=f"http://{ratings_authority}",
    )
    url: str = await mesh.add(f"reviews-{version}:9080", reviews.make_app(config, mesh.env))
    return url


@pytest.mark.parametrize("version", ["v1", "v2", "v3"])
async def test_json_per_version(mesh, client, version):
    await mesh.add("ratings:9080", ratings.make_app(ratings.RatingsConfig()))
    url = await _reviews(mesh, version)
    async with client.get(url + "/reviews/0") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["id"] == "0"
    assert body["podname"] == f"reviews-{version}-abc"
    assert body["clustername"] == "null"
    assert [(r["reviewer"], r["text"]) for r in body["reviews"]] == list(REVIEWS)
    color = {"v2": "black", "v3": "red"}.get(version)
    if color is None:
        assert all("rating" not in r for r in body["reviews"])
        assert not mesh.proxy.to("ratings:9080")
    else:
        assert [r["rating"] for r in body["reviews"]] == [
            {"stars": 5, "color": color},
            {"stars": 4, "color": color},
        ]
        assert mesh.proxy.to("ratings:9080")[0].target == "http://ratings:9080/ratings/0"


@pytest.mark.parametrize("version", ["v2", "v3"])
async def test_ratings_down_degrades_with_the_real_text(mesh, client, version):
    url = await _reviews(mesh, version)  # nothing serves ratings: the proxy answers 503
    async with client.get(url + "/reviews/7") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["id"] == "7"
    assert [r["rating"] for r in body["reviews"]] == [{"error": RATINGS_UNAVAILABLE}] * 2


async def test_ratings_errors_and_junk_count_as_unavailable(mesh, client):
    async def junk(request: web.Request) -> web.Response:
        return web.Response(text="not json")

    app = web.Application()
    app.router.add_get("/ratings/{id}", junk)
    await mesh.add("junk-ratings:9080", app)
    url = await _reviews(mesh, "v3", "junk-ratings:9080")
    async with client.get(url + "/reviews/0") as resp:
        assert (await resp.json())["reviews"][0]["rating"] == {"error": RATINGS_UNAVAILABLE}


async def test_headers_are_propagated_to_ratings(mesh, client):
    await mesh.add("ratings:9080", ratings.make_app(ratings.RatingsConfig()))
    url = await _reviews(mesh, "v2")
    sent = {"end-user": "jason", "x-request-id": "r1", "x-b3-sampled": "1", "cookie": "a=b"}
    async with client.get(url + "/reviews/0", headers={**sent, "x-other": "1"}) as resp:
        assert resp.status == 200
    seen = mesh.proxy.to("ratings:9080")[0].headers
    assert {k: seen[k] for k in sent} == sent
    assert "x-other" not in seen


async def test_real_ratings_timeouts_v3_gives_up_v2_waits(mesh, client):
    """Ratings 3 s late: v3 (2.5 s) shows the error, v2 (10 s) still shows stars."""
    assert constants.REVIEW_RATINGS_TIMEOUT_S == {"v2": 10.0, "v3": 2.5}
    await mesh.add("ratings:9080", ratings.make_app(ratings.RatingsConfig()))
    mesh.proxy.delays["ratings:9080"] = 3.0
    v2 = await _reviews(mesh, "v2")
    v3 = await _reviews(mesh, "v3")

    async def timed(url: str) -> tuple[float, dict[str, Any]]:
        start = time.monotonic()
        async with client.get(url + "/reviews/0") as resp:
            return time.monotonic() - start, await resp.json()

    (t2, b2), (t3, b3) = await asyncio.gather(timed(v2), timed(v3))
    assert b3["reviews"][0]["rating"] == {"error": RATINGS_UNAVAILABLE}
    assert 2.4 <= t3 < 2.9
    assert b2["reviews"][0]["rating"] == {"stars": 5, "color": "black"}
    assert 3.0 <= t2 < 3.5


async def test_health_and_bad_ids(mesh, client):
    url = await _reviews(mesh, "v1")
    async with client.get(url + "/health") as resp:
        assert await resp.json() == {"status": "Reviews is healthy"}
    async with client.get(url + "/reviews/abc") as resp:
        assert resp.status == 404


def test_config():
    with pytest.raises(ValueError):
        reviews.ReviewsConfig(version="v4")
    env = {"CLUSTER_NAME": "east", "RATINGS_HOSTNAME": "r", "SERVICES_DOMAIN": "ns"}
    config = reviews.ReviewsConfig.from_env("v3", env, "reviews-v3-x")
    assert (config.clustername, config.ratings_url) == ("east", "http://r.ns:9080")
