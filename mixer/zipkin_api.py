"""Zipkin's HTTP API v2 over :class:`~mixer.traces.TraceStore` (aiohttp): the collector
(``POST /api/v2/spans``, JSON v2, optionally gzip) and the query endpoints the Zipkin UI and
clients use. Errors are plain text with Zipkin's status codes (400 bad input, 404 unknown
trace, 413 too large, 415 an encoding mixer does not read).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CollectorRegistry, Counter

from mixer.traces import SpanError, TraceQuery, TraceStore, validate_span

__all__ = ["ZipkinStats", "add_zipkin_routes", "zipkin_app"]

_MAX_BODY = 16 << 20


class ZipkinStats:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.spans = Counter("mixer_zipkin_spans", "Spans accepted.", registry=registry)
        self.rejected = Counter(
            "mixer_zipkin_rejected",
            "POSTs to /api/v2/spans refused, by reason.",
            ["reason"],
            registry=registry,
        )


def _int_param(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: expected an integer, got {value!r}\n") from None


def add_zipkin_routes(
    app: web.Application,
    store: TraceStore,
    stats: ZipkinStats | None,
    prefix: str = "",
) -> None:
    async def post_spans(request: web.Request) -> web.Response:
        if stats is None:
            raise web.HTTPNotFound()
        ctype = request.content_type
        if ctype not in ("application/json", "text/plain", "application/octet-stream", ""):
            stats.rejected.labels("encoding").inc()
            return web.Response(status=415, text=f"{ctype}: only JSON v2 spans are accepted\n")
        try:
            body = await request.read()  # aiohttp inflates Content-Encoding: gzip itself
        except web.HTTPRequestEntityTooLarge:
            stats.rejected.labels("too_large").inc()
            raise
        except (RequestPayloadError, ValueError, OSError) as exc:
            stats.rejected.labels("malformed").inc()
            return web.Response(status=400, text=f"cannot read the body: {exc}\n")
        if len(body) > _MAX_BODY:
            stats.rejected.labels("too_large").inc()
            return web.Response(status=413, text="span batch too large\n")
        try:
            payload = json.loads(body or b"[]")
            if not isinstance(payload, list):
                raise SpanError("Expected a JSON_V2 encoded list")
            spans = [validate_span(s, i) for i, s in enumerate(payload)]
        except (ValueError, UnicodeDecodeError) as exc:
            stats.rejected.labels("malformed").inc()
            return web.Response(status=400, text=f"{exc}\n")
        stats.spans.inc(store.add(spans))
        return web.Response(status=202)

    async def services(request: web.Request) -> web.Response:
        return web.json_response(store.services())

    def _service_param(request: web.Request) -> str:
        service = request.query.get("serviceName", "")
        if not service:
            raise web.HTTPBadRequest(text="serviceName is required\n")
        return service

    async def span_names(request: web.Request) -> web.Response:
        return web.json_response(store.span_names(_service_param(request)))

    async def remote_services(request: web.Request) -> web.Response:
        return web.json_response(store.remote_services(_service_param(request)))

    async def traces(request: web.Request) -> web.Response:
        q = request.query
        query = TraceQuery(
            service=q.get("serviceName", ""),
            span_name="" if q.get("spanName") in (None, "all") else q["spanName"],
            remote_service=q.get("remoteServiceName", ""),
            annotation_query=q.get("annotationQuery", ""),
            min_duration=_int_param(request, "minDuration"),
            max_duration=_int_param(request, "maxDuration"),
            end_ts=_int_param(request, "endTs"),
            lookback=_int_param(request, "lookback"),
            limit=_int_param(request, "limit") or 10,
        )
        return web.json_response(store.traces(query))

    async def trace(request: web.Request) -> web.Response:
        trace_id = request.match_info["trace_id"]
        spans = store.trace(trace_id)
        if spans is None:
            return web.Response(status=404, text=f"Cannot find trace {trace_id}\n")
        return web.json_response(spans)

    async def trace_many(request: web.Request) -> web.Response:
        ids = [t for t in request.query.get("traceIds", "").split(",") if t]
        if not ids:
            raise web.HTTPBadRequest(text="traceIds is required\n")
        found: list[Any] = [s for t in ids if (s := store.trace(t)) is not None]
        return web.json_response(found)

    async def dependencies(request: web.Request) -> web.Response:
        end_ts = _int_param(request, "endTs")
        if end_ts is None:
            raise web.HTTPBadRequest(text="endTs is required\n")
        lookback = _int_param(request, "lookback") or 86_400_000
        return web.json_response(store.dependencies(end_ts, lookback))

    p = prefix + "/api/v2"
    if stats is not None:
        app.router.add_post(p + "/spans", post_spans)
    app.router.add_get(p + "/services", services)
    app.router.add_get(p + "/spans", span_names)
    app.router.add_get(p + "/remoteServices", remote_services)
    app.router.add_get(p + "/traces", traces)
    app.router.add_get(p + "/trace/{trace_id}", trace)
    app.router.add_get(p + "/traceMany", trace_many)
    app.router.add_get(p + "/dependencies", dependencies)


def zipkin_app(store: TraceStore, stats: ZipkinStats) -> web.Application:
    app = web.Application(client_max_size=_MAX_BODY)
    add_zipkin_routes(app, store, stats)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "UP", "zipkin": {"status": "UP"}})

    app.router.add_get("/health", health)
    return app
