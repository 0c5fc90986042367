"""Bookinfo wired behind the test proxy, the way a process-mode mesh wires it."""

from __future__ import annotations

from pymesh.samples.bookinfo import details, productpage, ratings, reviews
from tests.pymesh.samples.conftest import Mesh


async def start_bookinfo(
    mesh: Mesh,
    version: str = "v1",
    *,
    with_details: bool = True,
    with_reviews: bool = True,
    with_ratings: bool = True,
) -> str:
    """Start the apps (leaving out any asked for), route their names; productpage's URL."""
    if with_details:
        await mesh.add("details:9080", details.make_app(details.DetailsConfig(), mesh.env))
    if with_reviews:
        config = reviews.ReviewsConfig(version=version, podname=f"reviews-{version}-test")
        await mesh.add("reviews:9080", reviews.make_app(config, mesh.env))
    if with_ratings:
        await mesh.add("ratings:9080", ratings.make_app(ratings.RatingsConfig()))
    app = productpage.make_app(productpage.ProductPageConfig(), mesh.env)
    return await mesh.add("productpage:9080", app)
