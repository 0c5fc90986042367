"""The product page in a real browser (headless Chromium): styled, two columns, and stars
that show — none for reviews v1, five black for v2, five red for v3.

The apps run behind the test proxy on 127.0.12.100-119 (the sample-page part of the
first-ten-minutes range); one productpage, and ``reviews:9080`` pointed at each version in
turn. A screenshot of each version is kept in the test artifacts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pymesh.samples.bookinfo import details, productpage, ratings, reviews
from tests.pymesh.samples.conftest import Mesh
from tests.support.browser import artifact_path, chromium, star_colours

pytestmark = pytest.mark.timeout(120)

BLACK, RED = "rgb(0, 0, 0)", "rgb(255, 0, 0)"


@pytest.fixture
async def bookinfo() -> AsyncIterator[tuple[Mesh, dict[str, tuple[str, int]], str]]:
    mesh = Mesh("127.0.12.100", [f"127.0.12.{n}" for n in range(101, 120)])
    await mesh.start()
    try:
        await mesh.add("details:9080", details.make_app(details.DetailsConfig(), mesh.env))
        await mesh.add("ratings:9080", ratings.make_app(ratings.RatingsConfig()))
        versions = {}
        for version in ("v1", "v2", "v3"):
            config = reviews.ReviewsConfig(version=version, podname=f"reviews-{version}")
            versions[version] = await mesh.serve(reviews.make_app(config, mesh.env))
        app = productpage.make_app(productpage.ProductPageConfig(), mesh.env)
        url = await mesh.add("productpage:9080", app)
        yield mesh, versions, url
    finally:
        await mesh.close()


async def test_each_reviews_version_in_chromium(bookinfo) -> None:
    mesh, versions, url = bookinfo
    expected = {"v1": None, "v2": BLACK, "v3": RED}
    async with chromium() as browser:
        page = await browser.new_page()
        for version, colour in expected.items():
            mesh.proxy.routes["reviews:9080"] = versions[version]
            response = await page.goto(f"{url}/productpage")
            assert response is not None and response.status == 200
            await page.screenshot(path=artifact_path(f"productpage-{version}.png"), full_page=True)

            # The stylesheet arrived and applies: a dark navbar, two columns side by side.
            navbar = await page.eval_on_selector(
                "nav.navbar", "e => getComputedStyle(e).backgroundColor"
            )
            assert navbar == "rgb(34, 34, 34)", navbar
            left = await page.locator(".col.details").bounding_box()
            right = await page.locator(".col.reviews").bounding_box()
            assert left is not None and right is not None
            assert right["x"] >= left["x"] + left["width"], (left, right)
            assert abs(right["y"] - left["y"]) < 5, (left, right)
            assert await page.locator("form[name=login_form] button").inner_text() == "Sign in"
            served = await page.locator(".served-by").first.inner_text()
            assert served == f"Reviews served by: reviews-{version}"

            stars = await star_colours(page)
            if colour is None:
                assert stars == [], stars
                continue
            # Two reviews, rated 5 and 4: ten glyphs, one of them empty, all in the colour.
            assert len(stars) == 10, stars
            assert [kind for kind, _, _ in stars].count("glyphicon-star-empty") == 1
            assert {c for _, c, _ in stars} == {colour}, stars
            assert all(width > 5 for _, _, width in stars), "a star glyph was not drawn"
            body = await page.eval_on_selector("body", "e => getComputedStyle(e).color")
            assert body != colour  # the stars' colour is theirs, not the text's
