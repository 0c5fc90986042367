"""Bookinfo productpage: the page, the product API and the sign-in that sets ``end-user``.

``python -m pymesh.samples.bookinfo.productpage --host 127.0.0.N --port 9080``

Calls details and reviews one after the other, with the real app's hard-coded client
behaviour: 3 s per call, reviews tried twice. A failed call becomes the real "Sorry, ...
currently unavailable" text on the page and in the API, never an error of the page itself.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from pymesh import log as pymesh_log
from pymesh.samples.bookinfo import session
from pymesh.samples.bookinfo.constants import (
    DETAILS_ERROR,
    DETAILS_TIMEOUT_S,
    PRODUCTPAGE_HEALTHY,
    PRODUCTS,
    PROPAGATED_HEADERS,
    RATINGS_ERROR,
    RATINGS_TIMEOUT_S,
    REVIEWS_ATTEMPTS,
    REVIEWS_ERROR,
    REVIEWS_TIMEOUT_S,
    SERVICE_PORT,
)
from pymesh.samples.bookinfo.page import (
    STYLESHEET,
    render_index,
    render_product_page,
    stylesheet,
)
from pymesh.samples.runtime import (
    OUTBOUND,
    Reply,
    access_log,
    base_parser,
    forward_headers,
    outbound_context,
    serve,
)

__all__ = ["ProductPageConfig", "main", "make_app"]

_log = structlog.get_logger(__name__)

# end-user comes from the signed-in session, never from the caller.
_FORWARDED = tuple(name for name in PROPAGATED_HEADERS if name != "end-user")


@dataclass(frozen=True, slots=True)
class ProductPageConfig:
    """Where the upstream services are, and the session secret."""

    details_url: str = "http://details:9080"
    reviews_url: str = "http://reviews:9080"
    ratings_url: str = "http://ratings:9080"
    secret: bytes = session.DEFAULT_SECRET

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProductPageConfig:
        """Honours the real app's ``SERVICES_DOMAIN``, ``<NAME>_HOSTNAME`` and
        ``<NAME>_SERVICE_PORT`` variables."""
        domain = f".{env['SERVICES_DOMAIN']}" if env.get("SERVICES_DOMAIN") else ""

        def url(name: str) -> str:
            host = env.get(f"{name.upper()}_HOSTNAME", name)
            port = env.get(f"{name.upper()}_SERVICE_PORT", str(SERVICE_PORT))
            return f"http://{host}{domain}:{port}"

        return cls(
            details_url=url("details"), reviews_url=url("reviews"), ratings_url=url("ratings")
        )


_CONFIG: web.AppKey[ProductPageConfig] = web.AppKey("config", ProductPageConfig)
_RESULTS: web.AppKey[Counter] = web.AppKey("results", Counter)
_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)


def _user(request: web.Request) -> str | None:
    return session.decode(request.cookies.get(session.COOKIE_NAME), request.app[_CONFIG].secret)


def _outgoing_headers(request: web.Request) -> dict[str, str]:
    headers = forward_headers(request, _FORWARDED)
    user = _user(request)
    if user:
        headers["end-user"] = user
    return headers


def _outcome(
    request: web.Request, app_name: str, reply: Reply | None, error: str
) -> tuple[int, dict[str, object]]:
    body = reply.json() if reply is not None and reply.status == 200 else None
    if reply is not None and isinstance(body, dict):
        status, result = 200, body
    else:
        status = reply.status if reply is not None and reply.status != 200 else 500
        result = {"error": error}
    request.app[_RESULTS].labels(destination_app=app_name, response_code=str(status)).inc()
    return status, result


async def _details(request: web.Request, product_id: str) -> tuple[int, dict[str, object]]:
    url = f"{request.app[_CONFIG].details_url}/details/{product_id}"
    reply = await request.app[OUTBOUND].get(url, _outgoing_headers(request), DETAILS_TIMEOUT_S)
    return _outcome(request, "details", reply, DETAILS_ERROR)


async def _reviews(request: web.Request, product_id: str) -> tuple[int, dict[str, object]]:
    url = f"{request.app[_CONFIG].reviews_url}/reviews/{product_id}"
    headers = _outgoing_headers(request)
    reply: Reply | None = None
    for _ in range(REVIEWS_ATTEMPTS):
        reply = await request.app[OUTBOUND].get(url, headers, REVIEWS_TIMEOUT_S)
        if reply is not None and reply.status == 200:
            break
    return _outcome(request, "reviews", reply, REVIEWS_ERROR)


async def _ratings(request: web.Request, product_id: str) -> tuple[int, dict[str, object]]:
    url = f"{request.app[_CONFIG].ratings_url}/ratings/{product_id}"
    reply = await request.app[OUTBOUND].get(url, _outgoing_headers(request), RATINGS_TIMEOUT_S)
    return _outcome(request, "ratings", reply, RATINGS_ERROR)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


async def _index(request: web.Request) -> web.Response:
    services: dict[str, Sequence[str]] = {
        "productpage": ("details", "reviews"),
        "reviews": ("ratings",),
        "details": (),
        "ratings": (),
    }
    return web.Response(text=render_index(services), content_type="text/html")


async def _health(request: web.Request) -> web.Response:
    return web.Response(text=PRODUCTPAGE_HEALTHY)


async def _product_page(request: web.Request) -> web.Response:
    product_id = "0"
    details_status, details = await _details(request, product_id)
    reviews_status, reviews = await _reviews(request, product_id)
    document = render_product_page(
        PRODUCTS[0], details_status, details, reviews_status, reviews, _user(request) or ""
    )
    return web.Response(text=document, content_type="text/html")


def _back(request: web.Request) -> web.Response:
    """A redirect to where the user came from, as the real app answers sign-in/out."""
    location = request.headers.get("Referer") or "/productpage"
    return web.Response(status=302, headers={"Location": location})


async def _login(request: web.Request) -> web.Response:
    form = await request.post()
    user = form.get("username") or request.query.get("username")
    response = _back(request)
    if isinstance(user, str) and user:
        value = session.encode(user, request.app[_CONFIG].secret)
        response.set_cookie(session.COOKIE_NAME, value, path="/", httponly=True)
        _log.info("login", user=user)
    return response


async def _logout(request: web.Request) -> web.Response:
    response = _back(request)
    response.del_cookie(session.COOKIE_NAME, path="/")
    return response


async def _products(request: web.Request) -> web.Response:
    return _json([dict(p) for p in PRODUCTS])


async def _product(request: web.Request) -> web.Response:
    status, body = await _details(request, request.match_info["product_id"])
    return _json(body, status)


async def _product_reviews(request: web.Request) -> web.Response:
    status, body = await _reviews(request, request.match_info["product_id"])
    return _json(body, status)


async def _product_ratings(request: web.Request) -> web.Response:
    status, body = await _ratings(request, request.match_info["product_id"])
    return _json(body, status)


def _static(body: bytes, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(
            body=body, content_type=content_type, headers={"Cache-Control": "max-age=300"}
        )

    return handle


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(request.app[_REGISTRY]),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


def make_app(config: ProductPageConfig, env: Mapping[str, str]) -> web.Application:
    """The productpage application; ``env`` supplies ``HTTP_PROXY``/``NO_PROXY``."""
    app = web.Application(middlewares=[access_log(_log)])
    registry = CollectorRegistry()
    app[_CONFIG] = config
    app[_REGISTRY] = registry
    app[_RESULTS] = Counter(
        "request_result",
        "Results of requests",
        ["destination_app", "response_code"],
        registry=registry,
    )
    app.cleanup_ctx.append(outbound_context(env))
    app.router.add_get("/", _index)
    app.router.add_get("/index.html", _index)
    app.router.add_get("/health", _health)
    app.router.add_get("/productpage", _product_page)
    app.router.add_post("/login", _login)
    app.router.add_get("/logout", _logout)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get(STYLESHEET, _static(stylesheet(), "text/css"))
    app.router.add_get("/api/v1/products", _products)
    app.router.add_get("/api/v1/products/{product_id}", _product)
    app.router.add_get("/api/v1/products/{product_id}/reviews", _product_reviews)
    app.router.add_get("/api/v1/products/{product_id}/ratings", _product_ratings)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = base_parser("productpage", "Bookinfo productpage", SERVICE_PORT)
    args = parser.parse_args(argv)
    pymesh_log.configure(args.log_level, args.log_format)
    env = dict(os.environ)
    return serve(make_app(ProductPageConfig.from_env(env), env), args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
