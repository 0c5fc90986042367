"""What Istio's Bookinfo hard-codes, in one place.

Istio's tasks are written against these exact values: the fault-injection task relies on
productpage giving up on reviews after 3 s with one retry (about 6 s in total) while reviews v2
waits 10 s for ratings, and the request-timeouts task on the unavailable texts. Changing any of
them changes what the documented tasks show.

Timeouts follow the real clients' semantics: Python ``requests`` (productpage) and the JAX-RS
client (reviews) apply the value to connecting and to every socket read, not to the whole
exchange.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = [
    "BOOKS_API_HOST",
    "BOOKS_API_ISBN",
    "BOOKS_API_TIMEOUT_S",
    "CLUSTER_NAME_UNSET",
    "DETAILS_ERROR",
    "DETAILS_HEALTHY",
    "DETAILS_TIMEOUT_S",
    "PAGE_TITLE",
    "PRODUCTPAGE_HEALTHY",
    "PRODUCTS",
    "PROPAGATED_HEADERS",
    "RATINGS",
    "RATINGS_ERROR",
    "RATINGS_HEALTHY",
    "RATINGS_TIMEOUT_S",
    "RATINGS_UNAVAILABLE",
    "REVIEWS",
    "REVIEWS_ATTEMPTS",
    "REVIEWS_ERROR",
    "REVIEWS_HEALTHY",
    "REVIEWS_TIMEOUT_S",
    "REVIEW_RATINGS_TIMEOUT_S",
    "SERVICE_PORT",
    "STAR_COLORS",
    "book_details",
]

SERVICE_PORT: Final = 9080

PAGE_TITLE: Final = "Simple Bookstore App"

# productpage -> details / reviews / ratings
DETAILS_TIMEOUT_S: Final = 3.0
REVIEWS_TIMEOUT_S: Final = 3.0
# The real productpage tries reviews twice on purpose ("bug introduced explicitly for
# illustration in fault injection task"), so a 3 s timeout costs the page about 6 s.
REVIEWS_ATTEMPTS: Final = 2
RATINGS_TIMEOUT_S: Final = 3.0

DETAILS_ERROR: Final = "Sorry, product details are currently unavailable for this book."
REVIEWS_ERROR: Final = "Sorry, product reviews are currently unavailable for this book."
RATINGS_ERROR: Final = "Sorry, product ratings are currently unavailable for this book."

# reviews -> ratings: the JAX-RS client uses 10 s for black stars (v2), 2.5 s otherwise (v3).
REVIEW_RATINGS_TIMEOUT_S: Final[Mapping[str, float]] = MappingProxyType({"v2": 10.0, "v3": 2.5})
STAR_COLORS: Final[Mapping[str, str]] = MappingProxyType({"v2": "black", "v3": "red"})
RATINGS_UNAVAILABLE: Final = "Ratings service is currently unavailable"
# Java string concatenation of an unset CLUSTER_NAME gives the text "null"; the page hides it.
CLUSTER_NAME_UNSET: Final = "null"

PRODUCTPAGE_HEALTHY: Final = "Product page is healthy"
DETAILS_HEALTHY: Final = "Details is healthy"
REVIEWS_HEALTHY: Final = "Reviews is healthy"
RATINGS_HEALTHY: Final = "Ratings is healthy"

# Header propagation list shared by details and reviews ("keep this in sync" in the real
# apps). productpage forwards the same list except ``end-user``, which it sets from the
# signed-in session instead of copying it from the request.
PROPAGATED_HEADERS: Final = (
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "sw8",
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
)

PRODUCTS: Final[tuple[Mapping[str, object], ...]] = (
    MappingProxyType(
        {
            "id": 0,
            "title": "The Comedy of Errors",
            "descriptionHtml": (
                '<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia'
                " Summary</a>: The Comedy of Errors is one of <b>William Shakespeare's</b> early"
                " plays. It is his shortest and one of his most farcical comedies, with a major"
                " part of the humour coming from slapstick and mistaken identity, in addition to"
                " puns and word play."
            ),
        }
    ),
)

REVIEWS: Final = (
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to"
        " other plays by Shakespeare.",
    ),
)

RATINGS: Final[Mapping[str, int]] = MappingProxyType({"Reviewer1": 5, "Reviewer2": 4})

# details v2 looks the book up in the Google Books API (the egress task).
BOOKS_API_HOST: Final = "www.googleapis.com"
BOOKS_API_ISBN: Final = "0486424618"
BOOKS_API_TIMEOUT_S: Final = 5.0


def book_details(product_id: int) -> dict[str, object]:
    """The record details v1 serves for every product id."""
    return {
        "id": product_id,
        "author": "William Shakespeare",
        "year": 1595,
        "type": "paperback",
        "pages": 200,
        "publisher": "PublisherA",
        "language": "English",
        "ISBN-10": "1234567890",
        "ISBN-13": "123-1234567890",
    }
