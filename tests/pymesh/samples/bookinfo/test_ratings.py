from __future__ import annotations

import random

import pytest

from pymesh.samples.bookinfo import ratings


async def test_get_post_and_health(mesh, client):
    url = await mesh.add("ratings:9080", ratings.make_app(ratings.RatingsConfig()))
    async with client.get(url + "/ratings/0") as resp:
        assert await resp.json() == {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
    async with client.post(url + "/ratings/1", json={"Reviewer1": 1}) as resp:
        assert await resp.json() == {"id": 1, "ratings": {"Reviewer1": 1}}
    async with client.get(url + "/ratings/1") as resp:
        assert await resp.json() == {"id": 1, "ratings": {"Reviewer1": 1}}
    async with client.post(url + "/ratings/1", data=b"{nope") as resp:
        assert resp.status == 400
    async with client.get(url + "/ratings/x") as resp:
        assert resp.status == 400
        assert await resp.json() == {"error": "please provide numeric product ID"}
    async with client.get(url + "/health") as resp:
        assert await resp.json() == {"status": "Ratings is healthy"}


class _Always(random.Random):
    def random(self) -> float:
        return 0.1


async def test_faulty_version(mesh, client):
    app = ratings.make_app(ratings.RatingsConfig(version="v-faulty", rng=_Always()))
    url = await mesh.add("ratings:9080", app)
    async with client.get(url + "/ratings/0") as resp:
        assert resp.status == 503
        assert await resp.json() == {"error": "Service unavailable"}


def test_unknown_version():
    with pytest.raises(ValueError):
        ratings.RatingsConfig(version="v2")
