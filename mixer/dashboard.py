"""Mixer's dashboard site (port 20001): the service graph page, and the JSON it reads.

* ``/`` — the page (``mixer/web/``): the graph drawn by Cytoscape.js with its dagre layout,
  refreshed live, per-edge metrics on click, recent traces and a trace waterfall.
* ``/api/graph?window=60`` — :meth:`mixer.graph.Graph.snapshot`.
* ``/api/logs?workload=&status=&since=&limit=`` — the recent access log, newest first.
* ``/zipkin/api/v2/...`` — Zipkin's read API over the same span store, so the page needs no
  cross-origin calls.
* ``/vendor/...`` — the drawing library, installed from npm by ``make web`` (never committed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from mixer.logstore import LogQuery, report_json
from mixer.zipkin_api import add_zipkin_routes

if TYPE_CHECKING:
    from mixer.telemetry import Telemetry

__all__ = ["VENDOR_FILES", "WEB_DIR", "dashboard_app", "vendor_missing"]

WEB_DIR = Path(__file__).parent / "web"
#: URL name -> file under mixer/web/node_modules (package.json pins the versions)
VENDOR_FILES = {
    "cytoscape.min.js": "cytoscape/dist/cytoscape.min.js",
    "cytoscape-dagre.min.js": "cytoscape-dagre/dist/cytoscape-dagre.min.js",
}
_MAX_WINDOW = 900.0


def vendor_missing(web_dir: Path = WEB_DIR) -> list[str]:
    return [f for f in VENDOR_FILES.values() if not (web_dir / "node_modules" / f).is_file()]


def _float(request: web.Request, name: str, default: float | None) -> float | None:
    text = request.query.get(name)
    if not text:
        return default
    multiplier = 60.0 if text.endswith("m") else 1.0
    number = text[:-1] if text[-1] in "sm" else text
    try:
        value = float(number) * multiplier
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: expected seconds (or 5m), got {text!r}\n") from None
    if value <= 0:
        raise web.HTTPBadRequest(text=f"{name}: must be positive\n")
    return value


def dashboard_app(telemetry: Telemetry, *, prometheus_url: str = "") -> web.Application:
    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "index.html")

    async def graph(request: web.Request) -> web.Response:
        window = _float(request, "window", 60.0)
        assert window is not None
        return web.json_response(telemetry.graph.snapshot(min(window, _MAX_WINDOW)))

    async def logs(request: web.Request) -> web.Response:
        limit_text = request.query.get("limit", "100")
        if not limit_text.isdigit():
            raise web.HTTPBadRequest(text=f"limit: expected a number, got {limit_text!r}\n")
        query = LogQuery(
            workload=request.query.get("workload", ""),
            status=request.query.get("status", ""),
            since=_float(request, "since", None),
            limit=min(int(limit_text), 10_000),
        )
        try:
            found = telemetry.recent.search(query)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        return web.json_response([report_json(r) for r in found])

    async def config(request: web.Request) -> web.Response:
        return web.json_response({"prometheus_url": prometheus_url})

    async def vendor(request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        rel = VENDOR_FILES.get(name)
        path = WEB_DIR / "node_modules" / rel if rel else None
        if path is None or not path.is_file():
            raise web.HTTPNotFound(text=f"{name}: not installed (run `make web`)\n")
        return web.FileResponse(path)

    async def asset(request: web.Request) -> web.FileResponse:
        name = request.match_info["name"]
        if name not in ("app.js", "style.css"):
            raise web.HTTPNotFound()
        return web.FileResponse(WEB_DIR / name)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/api/graph", graph)
    app.router.add_get("/api/logs", logs)
    app.router.add_get("/api/config", config)
    app.router.add_get("/vendor/{name}", vendor)
    app.router.add_get("/static/{name}", asset)
    add_zipkin_routes(app, telemetry.traces, None, prefix="/zipkin")
    return app
