"""httpbin: the request-echo service Istio's traffic tasks use.

``python -m pymesh.samples.httpbin --host 127.0.0.N --port 8080 [--version v1]``

Answers like kennethreitz/httpbin (indented JSON, header names as Werkzeug spells them), with
go-httpbin's habit of echoing every header, so a test can see what the mesh added. Each request
is logged, which is how the mirroring task tells that v2 received a copy.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from pymesh import log as pymesh_log
from pymesh.samples.runtime import access_log, base_parser, serve

__all__ = ["MAX_DELAY_S", "HttpbinConfig", "delay_seconds", "main", "make_app", "pick_status"]

_log = structlog.get_logger(__name__)

MAX_DELAY_S = 10.0
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_TEAPOT = """
    -=[ teapot ]=-

       _...._
     .'  _ _ `.
    | ."` ^ `". _,
    \\_;`"---"`|//
      |       ;/
      \\_     _/
        `\"\"\"`
"""


@dataclass(frozen=True, slots=True)
class HttpbinConfig:
    """The version label for logs and the randomness behind ``/status/a,b``."""

    version: str = "v1"
    rng: random.Random = field(default_factory=random.Random)


_CONFIG: web.AppKey[HttpbinConfig] = web.AppKey("config", HttpbinConfig)


def pick_status(spec: str, rng: random.Random) -> int:
    """One code from ``"200"``, ``"200,503"`` or weighted ``"200:0.9,503:0.1"``."""
    codes: list[int] = []
    weights: list[float] = []
    for part in spec.split(","):
        code, _, weight = part.strip().partition(":")
        codes.append(int(code))
        weights.append(float(weight) if weight else 1.0)
    if not codes or any(not 100 <= c <= 599 for c in codes) or any(w < 0 for w in weights):
        raise ValueError(spec)
    if len(codes) == 1:
        return codes[0]
    return rng.choices(codes, weights=weights)[0]


def _json(body: object, status: int = 200) -> web.Response:
    text = json.dumps(body, indent=2, sort_keys=True) + "\n"
    return web.Response(text=text, status=status, content_type="application/json")


def _header_name(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def _echoed_headers(request: web.Request) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in request.headers.items():
        key = _header_name(name)
        merged[key] = f"{merged[key]},{value}" if key in merged else value
    return merged


def _args(request: web.Request) -> dict[str, str | list[str]]:
    args: dict[str, str | list[str]] = {}
    for key in request.query:
        values = request.query.getall(key)
        args[key] = values[0] if len(values) == 1 else list(values)
    return args


def _origin(request: web.Request) -> str:
    return request.headers.get("X-Forwarded-For") or request.remote or ""


def _text(raw: bytes, content_type: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return f"data:{content_type or 'application/octet-stream'};base64," + (
            base64.b64encode(raw).decode()
        )


async def _echo(request: web.Request, *, with_body: bool, method: bool) -> dict[str, object]:
    body: dict[str, object] = {
        "args": _args(request),
        "headers": _echoed_headers(request),
        "origin": _origin(request),
        "url": str(request.url),
    }
    if method:
        body["method"] = request.method
    if not with_body:
        return body
    form: dict[str, str] = {}
    files: dict[str, str] = {}
    data = ""
    parsed: object = None
    if request.content_type in _FORM_TYPES:
        for key, value in (await request.post()).items():
            if isinstance(value, str):
                form[key] = value
            elif isinstance(value, web.FileField):
                files[key] = _text(value.file.read(), value.content_type)
    else:
        raw = await request.read()
        data = _text(raw, request.content_type)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
    body.update(data=data, files=files, form=form, json=parsed)
    return body


async def _root(request: web.Request) -> web.Response:
    links = "".join(
        f'<li><a href="{path}">{path}</a></li>\n'
        for path in ("/get", "/headers", "/ip", "/status/418", "/delay/1", "/anything")
    )
    page = "<!DOCTYPE html>\n<html>\n<head><title>httpbin</title></head>\n<body>\n"
    page += f"<h1>httpbin</h1>\n<p>HTTP request and response service.</p>\n<ul>\n{links}"
    return web.Response(text=page + "</ul>\n</body>\n</html>\n", content_type="text/html")


async def _status(request: web.Request) -> web.Response:
    try:
        code = pick_status(request.match_info["codes"], request.app[_CONFIG].rng)
    except ValueError:
        return web.Response(text="Invalid status code", status=400)
    if code == 418:
        return web.Response(
            text=_TEAPOT, status=code, headers={"x-more-info": "http://tools.ietf.org/html/rfc2324"}
        )
    headers = {"Location": "/redirect/1"} if 300 <= code < 400 and code != 304 else {}
    return web.Response(status=code, headers=headers, content_type="text/html")


def delay_seconds(raw: str) -> float:
    """How long ``/delay/<raw>`` waits: httpbin caps it at 10 s."""
    seconds = float(raw)
    if math.isnan(seconds):
        raise ValueError(raw)
    return min(max(seconds, 0.0), MAX_DELAY_S)


async def _delay(request: web.Request) -> web.Response:
    try:
        seconds = delay_seconds(request.match_info["seconds"])
    except ValueError:
        return web.Response(text="Invalid delay", status=400)
    await asyncio.sleep(seconds)
    return _json(await _echo(request, with_body=True, method=False))


async def _headers(request: web.Request) -> web.Response:
    return _json({"headers": _echoed_headers(request)})


async def _ip(request: web.Request) -> web.Response:
    return _json({"origin": _origin(request)})


async def _user_agent(request: web.Request) -> web.Response:
    return _json({"user-agent": request.headers.get("User-Agent")})


async def _get(request: web.Request) -> web.Response:
    return _json(await _echo(request, with_body=False, method=False))


async def _post(request: web.Request) -> web.Response:
    return _json(await _echo(request, with_body=True, method=False))


async def _anything(request: web.Request) -> web.Response:
    return _json(await _echo(request, with_body=True, method=True))


async def _health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


def make_app(config: HttpbinConfig) -> web.Application:
    """The httpbin application."""
    app = web.Application(middlewares=[access_log(_log.bind(version=config.version))])
    app[_CONFIG] = config
    router = app.router
    router.add_get("/", _root)
    router.add_get("/health", _health)
    router.add_get("/headers", _headers)
    router.add_get("/ip", _ip)
    router.add_get("/user-agent", _user_agent)
    router.add_get("/get", _get)
    router.add_post("/post", _post)
    router.add_route("*", "/status/{codes}", _status)
    router.add_route("*", "/delay/{seconds}", _delay)
    router.add_route("*", "/anything", _anything)
    router.add_route("*", "/anything/{tail:.*}", _anything)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    env: Mapping[str, str] = os.environ
    parser = base_parser("httpbin", "httpbin request echo service", 8080)
    parser.add_argument("--version", default=env.get("SERVICE_VERSION", "v1"), help="log label")
    args = parser.parse_args(argv)
    pymesh_log.configure(args.log_level, args.log_format)
    return serve(make_app(HttpbinConfig(version=args.version)), args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
