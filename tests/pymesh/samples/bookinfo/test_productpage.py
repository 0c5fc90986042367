from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from pymesh.samples.bookinfo import constants, productpage, session
from pymesh.samples.bookinfo.constants import DETAILS_ERROR, PAGE_TITLE, REVIEWS, REVIEWS_ERROR
from tests.pymesh.samples.bookinfo.conftest import start_bookinfo
from tests.pymesh.samples.conftest import Mesh

FULL = '"glyphicon glyphicon-star"'
EMPTY = '"glyphicon glyphicon-star-empty"'


async def _get(client: aiohttp.ClientSession, url: str, **kw: object) -> tuple[int, str]:
    async with client.get(url, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.text()


@pytest.mark.parametrize(
    ("version", "color", "full", "empty"),
    [("v1", None, 0, 0), ("v2", "black", 9, 1), ("v3", "red", 9, 1)],
)
async def test_page_shows_each_reviews_version(mesh, client, version, color, full, empty):
    url = await start_bookinfo(mesh, version)
    status, page = await _get(client, url + "/productpage")
    assert status == 200
    assert f"<title>{PAGE_TITLE}</title>" in page
    assert "The Comedy of Errors" in page
    assert "PublisherA" in page and "1234567890" in page and "paperback" in page
    for reviewer, text in REVIEWS:
        assert reviewer in page
        assert text in page
    assert f"Reviews served by: reviews-{version}-test" in page
    assert page.count(FULL) == full
    assert page.count(EMPTY) == empty
    for other in ("black", "red"):
        assert (f'color="{other}"' in page) == (other == color)


async def test_calls_go_through_the_proxy_in_absolute_form(mesh, client):
    url = await start_bookinfo(mesh, "v2")
    await _get(client, url + "/productpage")
    details = mesh.proxy.to("details:9080")
    reviews = mesh.proxy.to("reviews:9080")
    ratings = mesh.proxy.to("ratings:9080")
    assert [s.target for s in details] == ["http://details:9080/details/0"]
    assert [s.target for s in reviews] == ["http://reviews:9080/reviews/0"]
    assert [s.target for s in ratings] == ["http://ratings:9080/ratings/0"]


async def test_login_sets_end_user_on_every_hop_and_logout_clears_it(mesh, client):
    url = await start_bookinfo(mesh, "v2")
    async with client.post(
        url + "/login",
        data={"username": "jason", "passwd": "x"},
        headers={"Referer": url + "/productpage"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] == url + "/productpage"
        cookie = resp.cookies[session.COOKIE_NAME].value
    assert session.decode(cookie, session.DEFAULT_SECRET) == "jason"

    status, page = await _get(client, url + "/productpage")
    assert status == 200 and "jason" in page and "Sign out" in page
    for authority in ("details:9080", "reviews:9080", "ratings:9080"):
        seen = mesh.proxy.to(authority)[-1]
        assert seen.headers["end-user"] == "jason"
        assert f"session={cookie}" in seen.headers["cookie"]

    async with client.get(url + "/logout", allow_redirects=False) as resp:
        assert resp.status == 302
    mesh.proxy.seen.clear()
    status, page = await _get(client, url + "/productpage")
    assert "jason" not in page
    assert all("end-user" not in s.headers for s in mesh.proxy.seen)


async def test_end_user_only_comes_from_a_valid_session(mesh, client):
    url = await start_bookinfo(mesh, "v1")
    forged = session.encode("jason", b"some other secret")
    await _get(
        client,
        url + "/productpage",
        headers={"end-user": "jason", "Cookie": f"session={forged}"},
    )
    assert mesh.proxy.seen and all("end-user" not in s.headers for s in mesh.proxy.seen)


async def test_trace_headers_propagate_to_every_hop(mesh, client):
    url = await start_bookinfo(mesh, "v3")
    incoming = {
        "x-request-id": "req-1",
        "x-b3-traceid": "463ac35c9f6413ad48485a3953bb6124",
        "x-b3-spanid": "a2fb4a1d1a96d312",
        "x-b3-parentspanid": "0020000000000001",
        "x-b3-sampled": "1",
        "x-b3-flags": "1",
        "x-ot-span-context": "ot",
        "traceparent": "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01",
        "tracestate": "congo=t61rcWkgMzE",
        "user-agent": "tester/1.0",
        "x-not-propagated": "nope",
    }
    await _get(client, url + "/productpage", headers=incoming)
    for authority in ("details:9080", "reviews:9080", "ratings:9080"):
        seen = mesh.proxy.to(authority)[-1].headers
        for name, value in incoming.items():
            if name == "x-not-propagated":
                assert name not in seen
            else:
                assert seen[name] == value, (authority, name)


async def test_details_down_shows_the_real_text(mesh, client):
    url = await start_bookinfo(mesh, "v1", with_details=False)
    status, page = await _get(client, url + "/productpage")
    assert status == 200
    assert "Error fetching product details" in page
    assert DETAILS_ERROR in page
    assert REVIEWS[0][1] in page
    async with client.get(url + "/api/v1/products/0") as resp:
        assert resp.status == 503  # the proxy's status comes through, as in the real app
        assert await resp.json() == {"error": DETAILS_ERROR}


async def test_reviews_down_shows_the_real_text_after_two_attempts(mesh, client):
    url = await start_bookinfo(mesh, "v1", with_reviews=False)
    status, page = await _get(client, url + "/productpage")
    assert status == 200
    assert "Error fetching product reviews" in page
    assert REVIEWS_ERROR in page
    assert "PublisherA" in page
    assert len(mesh.proxy.to("reviews:9080")) == 2
    async with client.get(url + "/api/v1/products/0/reviews") as resp:
        assert resp.status == 503
        assert await resp.json() == {"error": REVIEWS_ERROR}


async def test_reviews_is_retried_once(mesh, client):
    url = await start_bookinfo(mesh, "v1")
    mesh.proxy.aborts["reviews:9080"] = [503]
    status, page = await _get(client, url + "/productpage")
    assert status == 200
    assert REVIEWS_ERROR not in page and REVIEWS[0][1] in page
    assert len(mesh.proxy.to("reviews:9080")) == 2
    mesh.proxy.aborts["reviews:9080"] = [500, 500, 500]
    _, page = await _get(client, url + "/productpage")
    assert REVIEWS_ERROR in page
    assert mesh.proxy.aborts["reviews:9080"] == [500]  # a third attempt was never made


async def _timed(client: aiohttp.ClientSession, url: str) -> tuple[float, int, object]:
    start = time.monotonic()
    async with client.get(url) as resp:
        body = await resp.json()
        return time.monotonic() - start, resp.status, body


async def test_real_timeouts_details_3s_reviews_3s_twice(mesh, client):
    await start_bookinfo(mesh, "v1")
    base = productpage.ProductPageConfig(
        details_url="http://slow-details:9080", reviews_url="http://slow-reviews:9080"
    )
    page_url = await mesh.add("slow-page:9080", productpage.make_app(base, mesh.env))
    mesh.proxy.routes["slow-details:9080"] = mesh.proxy.routes["details:9080"]
    mesh.proxy.routes["slow-reviews:9080"] = mesh.proxy.routes["reviews:9080"]
    mesh.proxy.delays["slow-details:9080"] = 3.3
    mesh.proxy.delays["slow-reviews:9080"] = 3.3
    # The same delay, shorter than the timeout, is waited out.
    ok = productpage.ProductPageConfig(reviews_url="http://patient-reviews:9080")
    ok_url = await mesh.add("ok-page:9080", productpage.make_app(ok, mesh.env))
    mesh.proxy.routes["patient-reviews:9080"] = mesh.proxy.routes["reviews:9080"]
    mesh.proxy.delays["patient-reviews:9080"] = 2.6

    details, reviews, patient = await asyncio.gather(
        _timed(client, page_url + "/api/v1/products/0"),
        _timed(client, page_url + "/api/v1/products/0/reviews"),
        _timed(client, ok_url + "/api/v1/products/0/reviews"),
    )
    assert constants.DETAILS_TIMEOUT_S == constants.REVIEWS_TIMEOUT_S == 3.0
    assert details[1:] == (500, {"error": DETAILS_ERROR})
    assert 2.9 <= details[0] < 3.3
    assert reviews[1:] == (500, {"error": REVIEWS_ERROR})
    assert 5.9 <= reviews[0] < 6.6
    assert len(mesh.proxy.to("slow-reviews:9080")) == 2
    assert patient[1] == 200 and 2.6 <= patient[0] < 3.0


async def test_other_pages_and_api(mesh, client):
    url = await start_bookinfo(mesh, "v2")
    status, text = await _get(client, url + "/health")
    assert (status, text) == (200, "Product page is healthy")
    status, text = await _get(client, url + "/")
    assert status == 200 and "simple bookstore application" in text and "/productpage" in text
    async with client.get(url + "/api/v1/products") as resp:
        products = await resp.json()
        assert products[0]["id"] == 0 and products[0]["title"] == "The Comedy of Errors"
    async with client.get(url + "/api/v1/products/0") as resp:
        assert (await resp.json())["author"] == "William Shakespeare"
    async with client.get(url + "/api/v1/products/0/reviews") as resp:
        assert (await resp.json())["reviews"][0]["rating"] == {"stars": 5, "color": "black"}
    async with client.get(url + "/api/v1/products/0/ratings") as resp:
        assert await resp.json() == {"id": 0, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}
    status, text = await _get(client, url + "/metrics")
    assert 'request_result_total{destination_app="details",response_code="200"}' in text


def test_config_from_env_uses_the_real_variables():
    env = {"SERVICES_DOMAIN": "bookinfo.svc", "DETAILS_HOSTNAME": "d", "REVIEWS_SERVICE_PORT": "1"}
    config = productpage.ProductPageConfig.from_env(env)
    assert config.details_url == "http://d.bookinfo.svc:9080"
    assert config.reviews_url == "http://reviews.bookinfo.svc:1"
    assert productpage.ProductPageConfig.from_env({}).ratings_url == "http://ratings:9080"


async def test_direct_without_a_proxy(mesh: Mesh, client):
    from pymesh.samples.bookinfo import details

    details_url = await mesh.add("unused:1", details.make_app(details.DetailsConfig(), {}))
    config = productpage.ProductPageConfig(details_url=details_url, reviews_url=details_url)
    url = await mesh.add("direct-page:9080", productpage.make_app(config, {}))
    _, page = await _get(client, url + "/productpage")
    assert "PublisherA" in page and REVIEWS_ERROR in page  # details answers /reviews with 404
    assert not mesh.proxy.seen
