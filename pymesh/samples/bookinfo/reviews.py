"""Bookinfo reviews, all three versions in one program.

``python -m pymesh.samples.bookinfo.reviews --host 127.0.0.N --port 9080 --version v1|v2|v3``

v1 does not call ratings. v2 (black stars) and v3 (red stars) do, with the real app's client
timeouts: 10 s for v2, 2.5 s for v3. When ratings fails, both reviews carry the real
"Ratings service is currently unavailable" error instead of stars; reviews itself still answers.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog
from aiohttp import web

from pymesh import log as pymesh_log
from pymesh.samples.bookinfo.constants import (
    CLUSTER_NAME_UNSET,
    PROPAGATED_HEADERS,
    RATINGS_UNAVAILABLE,
    REVIEW_RATINGS_TIMEOUT_S,
    REVIEWS,
    REVIEWS_HEALTHY,
    SERVICE_PORT,
    STAR_COLORS,
)
from pymesh.samples.runtime import (
    OUTBOUND,
    access_log,
    base_parser,
    forward_headers,
    outbound_context,
    serve,
)

__all__ = ["VERSIONS", "ReviewsConfig", "main", "make_app"]

_log = structlog.get_logger(__name__)

VERSIONS = ("v1", "v2", "v3")


@dataclass(frozen=True, slots=True)
class ReviewsConfig:
    """Which version this is, the names it reports and where ratings is."""

    version: str = "v1"
    podname: str = "reviews-v1"
    clustername: str = CLUSTER_NAME_UNSET
    ratings_url: str = "http://ratings:9080"

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"unknown reviews version {self.version!r}")

    @classmethod
    def from_env(cls, version: str, env: Mapping[str, str], podname: str) -> ReviewsConfig:
        """Honours the real app's ``CLUSTER_NAME``, ``SERVICES_DOMAIN``, ``RATINGS_HOSTNAME``
        and ``RATINGS_SERVICE_PORT``."""
        domain = f".{env['SERVICES_DOMAIN']}" if env.get("SERVICES_DOMAIN") else ""
        host = env.get("RATINGS_HOSTNAME", "ratings")
        port = env.get("RATINGS_SERVICE_PORT", str(SERVICE_PORT))
        return cls(
            version=version,
            podname=podname,
            clustername=env.get("CLUSTER_NAME", CLUSTER_NAME_UNSET),
            ratings_url=f"http://{host}{domain}:{port}",
        )


_CONFIG: web.AppKey[ReviewsConfig] = web.AppKey("config", ReviewsConfig)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


async def _stars(request: web.Request, product_id: int) -> dict[str, int]:
    """Each reviewer's stars; empty when ratings could not be had."""
    config = request.app[_CONFIG]
    url = f"{config.ratings_url}/ratings/{product_id}"
    headers = forward_headers(request, PROPAGATED_HEADERS)
    timeout = REVIEW_RATINGS_TIMEOUT_S[config.version]
    reply = await request.app[OUTBOUND].get(url, headers, timeout)
    body = reply.json() if reply is not None and reply.status == 200 else None
    ratings = body.get("ratings") if isinstance(body, dict) else None
    if not isinstance(ratings, dict):
        return {}
    return {
        name: stars
        for name, stars in ratings.items()
        if isinstance(stars, int) and not isinstance(stars, bool)
    }


async def _reviews(request: web.Request) -> web.Response:
    try:
        product_id = int(request.match_info["product_id"])
    except ValueError as exc:
        raise web.HTTPNotFound() from exc
    config = request.app[_CONFIG]
    with_ratings = config.version != "v1"
    stars = await _stars(request, product_id) if with_ratings else {}
    items: list[dict[str, object]] = []
    for reviewer, text in REVIEWS:
        item: dict[str, object] = {"reviewer": reviewer, "text": text}
        if with_ratings:
            item["rating"] = (
                {"stars": stars[reviewer], "color": STAR_COLORS[config.version]}
                if reviewer in stars
                else {"error": RATINGS_UNAVAILABLE}
            )
        items.append(item)
    return _json(
        {
            "id": str(product_id),
            "podname": config.podname,
            "clustername": config.clustername,
            "reviews": items,
        }
    )


async def _health(request: web.Request) -> web.Response:
    return _json({"status": REVIEWS_HEALTHY})


def make_app(config: ReviewsConfig, env: Mapping[str, str]) -> web.Application:
    """The reviews application; ``env`` supplies ``HTTP_PROXY``/``NO_PROXY``."""
    app = web.Application(middlewares=[access_log(_log.bind(version=config.version))])
    app[_CONFIG] = config
    app.cleanup_ctx.append(outbound_context(env))
    app.router.add_get("/health", _health)
    app.router.add_get("/reviews/{product_id}", _reviews)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    env = dict(os.environ)
    parser = base_parser("reviews", "Bookinfo reviews", SERVICE_PORT)
    parser.add_argument("--version", default=env.get("SERVICE_VERSION", "v1"), choices=VERSIONS)
    parser.add_argument("--podname", default=env.get("POD_NAME"), help="reported as podname")
    args = parser.parse_args(argv)
    if args.version not in VERSIONS:
        parser.error(f"unknown version {args.version!r} (SERVICE_VERSION)")
    pymesh_log.configure(args.log_level, args.log_format)
    # The real app reports its Kubernetes pod name; the default keeps the version visible.
    podname = args.podname or f"reviews-{args.version}-{os.getpid()}"
    config = ReviewsConfig.from_env(args.version, env, podname)
    return serve(make_app(config, env), args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
