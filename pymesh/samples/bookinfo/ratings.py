"""Bookinfo ratings: the stars each reviewer gave.

``python -m pymesh.samples.bookinfo.ratings --host 127.0.0.N --port 9080 [--version V]``

v1 keeps ratings in memory (POST replaces a product's ratings, as in the real app). The real
app's test versions are there too: ``v-faulty`` answers 503 half of the time and ``v-delayed``
answers after 7 s half of the time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from pymesh import log as pymesh_log
from pymesh.samples.bookinfo.constants import RATINGS, RATINGS_HEALTHY, SERVICE_PORT
from pymesh.samples.runtime import access_log, base_parser, serve

__all__ = ["VERSIONS", "RatingsConfig", "main", "make_app"]

_log = structlog.get_logger(__name__)

VERSIONS = ("v1", "v-faulty", "v-delayed")
_DELAY_S = 7.0


@dataclass(frozen=True, slots=True)
class RatingsConfig:
    """The version (which test behaviour, if any) and the randomness behind it."""

    version: str = "v1"
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.version not in VERSIONS:
            raise ValueError(f"unknown ratings version {self.version!r}")


_CONFIG: web.AppKey[RatingsConfig] = web.AppKey("config", RatingsConfig)
# Ratings added by POST, per product id; lives as long as the app, like the real process.
_ADDED: web.AppKey[dict[int, dict[str, object]]] = web.AppKey("added", dict)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def _product_id(request: web.Request) -> int | None:
    try:
        return int(request.match_info["product_id"])
    except ValueError:
        return None


def _local(request: web.Request, product_id: int) -> dict[str, object]:
    added = request.app[_ADDED].get(product_id)
    return added if added is not None else {"id": product_id, "ratings": dict(RATINGS)}


async def _get_ratings(request: web.Request) -> web.Response:
    product_id = _product_id(request)
    if product_id is None:
        return _json({"error": "please provide numeric product ID"}, 400)
    config = request.app[_CONFIG]
    if config.version == "v-faulty" and config.rng.random() <= 0.5:
        return _json({"error": "Service unavailable"}, 503)
    if config.version == "v-delayed" and config.rng.random() <= 0.5:
        await asyncio.sleep(_DELAY_S)
    return _json(_local(request, product_id))


async def _post_ratings(request: web.Request) -> web.Response:
    product_id = _product_id(request)
    if product_id is None:
        return _json({"error": "please provide numeric product ID"}, 400)
    try:
        ratings = json.loads(await request.read())
    except ValueError:
        return _json({"error": "please provide valid ratings JSON"}, 400)
    request.app[_ADDED][product_id] = {"id": product_id, "ratings": ratings}
    return _json(_local(request, product_id))


async def _health(request: web.Request) -> web.Response:
    return _json({"status": RATINGS_HEALTHY})


def make_app(config: RatingsConfig) -> web.Application:
    """The ratings application (it calls nobody)."""
    app = web.Application(middlewares=[access_log(_log.bind(version=config.version))])
    app[_CONFIG] = config
    app[_ADDED] = {}
    app.router.add_get("/health", _health)
    app.router.add_get("/ratings/{product_id}", _get_ratings)
    app.router.add_post("/ratings/{product_id}", _post_ratings)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    env: Mapping[str, str] = os.environ
    parser = base_parser("ratings", "Bookinfo ratings", SERVICE_PORT)
    parser.add_argument("--version", default=env.get("SERVICE_VERSION", "v1"))
    args = parser.parse_args(argv)
    if args.version not in VERSIONS:
        parser.error(f"unknown version {args.version!r}; one of {', '.join(VERSIONS)}")
    pymesh_log.configure(args.log_level, args.log_format)
    return serve(make_app(RatingsConfig(version=args.version)), args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
