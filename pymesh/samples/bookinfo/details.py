"""Bookinfo details: the book's publication record.

``python -m pymesh.samples.bookinfo.details --host 127.0.0.N --port 9080 [--version v1|v2]``

v1 serves a fixed record. v2 (the real ``details-v2`` image, or
``ENABLE_EXTERNAL_BOOK_SERVICE=true``) looks the book up in the Google Books API, over plain
HTTP on port 80 when ``DO_NOT_ENCRYPT=true`` so the sidecar can originate TLS (the egress task).
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
    BOOKS_API_HOST,
    BOOKS_API_ISBN,
    BOOKS_API_TIMEOUT_S,
    DETAILS_HEALTHY,
    PROPAGATED_HEADERS,
    SERVICE_PORT,
    book_details,
)
from pymesh.samples.runtime import (
    OUTBOUND,
    access_log,
    base_parser,
    forward_headers,
    outbound_context,
    serve,
)

__all__ = ["DetailsConfig", "main", "make_app"]

_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DetailsConfig:
    """Whether details asks the external book service, and how."""

    external: bool = False
    encrypt: bool = True

    @classmethod
    def from_env(cls, version: str, env: Mapping[str, str]) -> DetailsConfig:
        external = version == "v2" or env.get("ENABLE_EXTERNAL_BOOK_SERVICE") == "true"
        return cls(external=external, encrypt=env.get("DO_NOT_ENCRYPT") != "true")


_CONFIG: web.AppKey[DetailsConfig] = web.AppKey("config", DetailsConfig)


class _LookupError(Exception):
    pass


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


def _isbn(book: Mapping[str, object], kind: str) -> object:
    identifiers = book.get("industryIdentifiers")
    for item in identifiers if isinstance(identifiers, list) else ():
        if isinstance(item, dict) and item.get("type") == kind:
            return item.get("identifier")
    return None


def _volume(data: object) -> dict[str, object] | None:
    if not isinstance(data, dict):
        return None
    items = data.get("items")
    if not isinstance(items, list) or not items or not isinstance(items[0], dict):
        return None
    book = items[0].get("volumeInfo")
    return book if isinstance(book, dict) else None


async def _external_details(request: web.Request, product_id: int) -> dict[str, object]:
    scheme = "https" if request.app[_CONFIG].encrypt else "http"
    url = f"{scheme}://{BOOKS_API_HOST}/books/v1/volumes?q=isbn:{BOOKS_API_ISBN}"
    headers = forward_headers(request, PROPAGATED_HEADERS)
    reply = await request.app[OUTBOUND].get(url, headers, BOOKS_API_TIMEOUT_S)
    book = _volume(reply.json()) if reply is not None and reply.status == 200 else None
    if book is None:
        status = None if reply is None else reply.status
        raise _LookupError(f"cannot read the book service's answer (status {status})")
    authors = book.get("authors")
    return {
        "id": product_id,
        "author": authors[0] if isinstance(authors, list) and authors else None,
        "year": book.get("publishedDate"),
        "type": "paperback" if book.get("printType") == "BOOK" else "unknown",
        "pages": book.get("pageCount"),
        "publisher": book.get("publisher"),
        "language": "English" if book.get("language") == "en" else "unknown",
        "ISBN-10": _isbn(book, "ISBN_10"),
        "ISBN-13": _isbn(book, "ISBN_13"),
    }


async def _details(request: web.Request) -> web.Response:
    try:
        product_id = int(request.match_info.get("product_id", ""))
    except ValueError:
        return _json({"error": "please provide numeric product id"}, 400)
    if not request.app[_CONFIG].external:
        return _json(book_details(product_id))
    try:
        return _json(await _external_details(request, product_id))
    except _LookupError as exc:
        return _json({"error": str(exc)}, 400)


async def _health(request: web.Request) -> web.Response:
    return _json({"status": DETAILS_HEALTHY})


def make_app(config: DetailsConfig, env: Mapping[str, str]) -> web.Application:
    """The details application; ``env`` supplies ``HTTP_PROXY``/``NO_PROXY``."""
    app = web.Application(middlewares=[access_log(_log)])
    app[_CONFIG] = config
    app.cleanup_ctx.append(outbound_context(env))
    app.router.add_get("/health", _health)
    app.router.add_get("/details", _details)
    app.router.add_get("/details/{product_id}", _details)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    env = dict(os.environ)
    parser = base_parser("details", "Bookinfo details", SERVICE_PORT)
    parser.add_argument("--version", default=env.get("SERVICE_VERSION", "v1"), help="v1 or v2")
    args = parser.parse_args(argv)
    pymesh_log.configure(args.log_level, args.log_format)
    return serve(make_app(DetailsConfig.from_env(args.version, env), env), args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
