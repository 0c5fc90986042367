"""productpage's HTML, laid out like the real templates: a navbar with the sign-in form, the
book, then its details and its reviews in two columns, styled by ``productpage.css``
(served at :data:`STYLESHEET`).

Stars keep the classic markup, ``<font color="black|red">`` around ``glyphicon-star`` spans,
because that is what people grep for to tell reviews v2 from v3; the stylesheet draws them as
text glyphs in that colour. Everything that came from another service is escaped; only the
product description is trusted HTML, as in the real page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from importlib import resources

from pymesh.samples.bookinfo.constants import CLUSTER_NAME_UNSET, PAGE_TITLE

__all__ = ["STYLESHEET", "render_index", "render_product_page", "stylesheet"]

#: Where productpage serves its stylesheet (under ``/static``, which the Bookinfo gateway's
#: VirtualService routes to productpage).
STYLESHEET = "/static/bookinfo.css"

_HEAD = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>{PAGE_TITLE}</title>
<link rel="stylesheet" href="{STYLESHEET}">
</head>
<body>
"""
_TAIL = "</body>\n</html>\n"


def _text(value: object) -> str:
    return escape("" if value is None else str(value))


def stylesheet() -> bytes:
    """The contents of ``productpage.css``."""
    return resources.files("pymesh.samples.bookinfo").joinpath("productpage.css").read_bytes()


def _nav(user: str) -> str:
    if user:
        who = (
            f'<div><span class="user">{_text(user)}</span>'
            '<a class="btn" href="logout">Sign out</a></div>'
        )
    else:
        who = (
            '<form method="post" action="login" name="login_form">\n'
            '<input id="username" name="username" placeholder="User Name" required>\n'
            '<input id="password" name="passwd" type="password" placeholder="Password"'
            " required>\n"
            '<button class="btn" type="submit">Sign in</button>\n</form>'
        )
    return f'<nav class="navbar">\n<a class="brand" href="#">BookInfo Sample</a>\n{who}\n</nav>\n'


_DETAILS = (
    ("Type", "type"),
    ("Pages", "pages"),
    ("Publisher", "publisher"),
    ("Language", "language"),
    ("ISBN-10", "ISBN-10"),
    ("ISBN-13", "ISBN-13"),
)


def _details(status: int, details: Mapping[str, object]) -> str:
    if status != 200:
        return (
            '<p class="text-red-500">Error fetching product details</p>\n'
            f"<p>{_text(details.get('error'))}</p>\n"
        )
    rows = "".join(
        f"<dt>{label}:</dt><dd>{_text(details.get(key))}</dd>\n"
        for label, key in _DETAILS
        if details.get(key) is not None
    )
    return f"<h4>Book Details</h4>\n<dl>\n{rows}</dl>\n"


def _rating(rating: object) -> str:
    if not isinstance(rating, Mapping):
        return ""
    stars = rating.get("stars")
    if isinstance(stars, int) and stars > 0:
        full = '<span class="glyphicon glyphicon-star"></span>\n' * min(stars, 5)
        empty = '<span class="glyphicon glyphicon-star-empty"></span>\n' * max(5 - stars, 0)
        return f'<font color="{_text(rating.get("color"))}">\n{full}{empty}</font>\n'
    if rating.get("error"):
        return f'<p class="text-red-500"><i>{_text(rating.get("error"))}</i></p>\n'
    return ""


def _served_by(reviews: Mapping[str, object]) -> str:
    served = f"Reviews served by: {_text(reviews.get('podname'))}"
    cluster = reviews.get("clustername")
    if cluster and cluster != CLUSTER_NAME_UNSET:
        served += f" on cluster <div>{_text(cluster)}</div>"
    return f'<div class="served-by">{served}</div>\n'


def _reviews(status: int, reviews: Mapping[str, object]) -> str:
    if status != 200:
        return (
            '<p class="text-red-500">Error fetching product reviews</p>\n'
            f"<p>{_text(reviews.get('error'))}</p>\n"
        )
    items = reviews.get("reviews")
    sections = []
    for review in items if isinstance(items, Sequence) else ():
        if not isinstance(review, Mapping):
            continue
        sections.append(
            "<blockquote>\n"
            f'<p>"{_text(review.get("text"))}"</p>\n'
            f'<div class="reviewer">{_text(review.get("reviewer"))}</div>\n'
            f"{_rating(review.get('rating'))}"
            f"{_served_by(reviews)}"
            "</blockquote>\n"
        )
    return "<h4>Book Reviews</h4>\n" + "".join(sections)


def render_product_page(
    product: Mapping[str, object],
    details_status: int,
    details: Mapping[str, object],
    reviews_status: int,
    reviews: Mapping[str, object],
    user: str,
) -> str:
    """The ``/productpage`` document."""
    return (
        _HEAD
        + _nav(user)
        + '<main class="container">\n'
        + f'<div class="book">\n<h1>{_text(product.get("title"))}</h1>\n'
        + f"<p>{product.get('descriptionHtml', '')}</p>\n</div>\n"
        + '<div class="row">\n'
        + f'<div class="col details">\n{_details(details_status, details)}</div>\n'
        + f'<div class="col reviews">\n{_reviews(reviews_status, reviews)}</div>\n'
        + "</div>\n</main>\n"
        + _TAIL
    )


def render_index(services: Mapping[str, Sequence[str]]) -> str:
    """The ``/`` document: the services productpage calls, and links to the page."""
    rows = "".join(
        f"<tr><td>{_text(name)}</td><td>{_text(', '.join(children))}</td></tr>\n"
        for name, children in services.items()
    )
    return (
        _HEAD
        + '<main class="container">\n'
        + (
            "<h3>Hello! This is a simple bookstore application consisting of three services"
            " as shown below</h3>\n"
        )
        + f"<table>\n<tr><th>service</th><th>calls</th></tr>\n{rows}</table>\n"
        + (
            "<p>Click on one of the links below to auto generate a request to the backend as"
            " a real user or a tester</p>\n"
        )
        + '<ul>\n<li><a href="/productpage?u=normal">Normal user</a></li>\n'
        + '<li><a href="/productpage?u=test">Test user</a></li>\n</ul>\n</main>\n'
        + _TAIL
    )
