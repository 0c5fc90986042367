"""Mixer's Zipkin API with a real client, OpenTelemetry's Zipkin exporter (JSON v2), and with
bad input: every refusal has Zipkin's status and a reason, and the collector keeps serving."""

from __future__ import annotations

import asyncio
import gzip
import json
import urllib.request
from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from mixer.server import Mixer
from tests.mixer.harness import get_json, get_text, running_mixer, sample_value, url
from tests.support import TELEMETRY_NET, address

HOST = address(TELEMETRY_NET, 110)


@pytest.fixture
async def mixer() -> AsyncIterator[Mixer]:
    async with running_mixer(HOST) as m:
        yield m


def _export_two_services(endpoint: str) -> tuple[str, str, str]:
    """frontend's SERVER span calls backend (CLIENT span), backend answers (SERVER span)."""
    providers = {}
    for service in ("frontend", "backend"):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(ZipkinExporter(endpoint=endpoint)))
        providers[service] = provider
    tracer_f = providers["frontend"].get_tracer("test")
    tracer_b = providers["backend"].get_tracer("test")
    with (
        tracer_f.start_as_current_span("GET /page", kind=SpanKind.SERVER) as root,
        tracer_f.start_as_current_span("call backend", kind=SpanKind.CLIENT) as client,
    ):
        client.set_attribute("http.status_code", 500)
        ctx = trace.set_span_in_context(client)
        with tracer_b.start_as_current_span("GET /api", kind=SpanKind.SERVER, context=ctx):
            pass
    for p in providers.values():
        p.shutdown()
    return (
        format(root.get_span_context().trace_id, "032x"),
        format(root.get_span_context().span_id, "016x"),
        format(client.get_span_context().span_id, "016x"),
    )


async def test_opentelemetry_zipkin_exporter_traces_are_queryable(mixer: Mixer) -> None:
    endpoint = url(mixer, "zipkin", "/api/v2/spans")
    trace_id, root_id, client_id = await asyncio.to_thread(_export_two_services, endpoint)
    base = url(mixer, "zipkin", "/api/v2")
    assert await get_json(base + "/services") == ["backend", "frontend"]
    assert await get_json(base + "/spans?serviceName=frontend") == ["call backend", "get /page"]
    spans = await get_json(base + f"/trace/{trace_id}")
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"get /page", "call backend", "get /api"}
    assert "parentId" not in by_name["get /page"]
    assert by_name["call backend"]["parentId"] == root_id
    assert by_name["get /api"]["parentId"] == client_id
    assert by_name["get /api"]["kind"] == "SERVER"
    assert by_name["call backend"]["tags"]["http.status_code"] == "500"
    found = await get_json(base + "/traces?serviceName=backend&limit=5")
    assert [t[0]["traceId"] for t in found] == [trace_id]
    assert await get_json(base + "/traces?annotationQuery=http.status_code%3D500") == found
    assert await get_json(base + "/traces?annotationQuery=http.status_code%3D404") == []
    assert await get_json(base + "/traces?minDuration=600000000") == []
    # the same trace through the dashboard's read-only mount
    assert await get_json(url(mixer, "dashboard", f"/zipkin/api/v2/trace/{trace_id}")) == spans
    end = by_name["get /page"]["timestamp"] // 1000 + 1000
    deps = await get_json(base + f"/dependencies?endTs={end}&lookback=60000")
    assert deps == [{"parent": "frontend", "child": "backend", "callCount": 1}]


def _post(target: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(target, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


SPAN = {
    "traceId": "5af7183fb1d4cf5f",
    "id": "6b221d5bc9e6496c",
    "name": "get",
    "timestamp": 1_700_000_000_000_000,
    "duration": 1500,
    "localEndpoint": {"serviceName": "Web"},
}


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        (b"{not json", {}, 400, "Expecting"),
        (b'{"traceId": "1"}', {}, 400, "JSON_V2 encoded list"),
        (json.dumps([{**SPAN, "traceId": "xyz"}]).encode(), {}, 400, "span 0: traceId"),
        (json.dumps([SPAN, {**SPAN, "id": ""}]).encode(), {}, 400, "span 1: id"),
        (json.dumps([{**SPAN, "timestamp": "now"}]).encode(), {}, 400, "timestamp"),
        (json.dumps([{**SPAN, "kind": "SIDEWAYS"}]).encode(), {}, 400, "kind"),
        (b"\x0a\x01", {"Content-Type": "application/x-protobuf"}, 415, "JSON v2"),
        (b"not gzip", {"Content-Encoding": "gzip"}, 400, "gzip"),
    ],
)
async def test_bad_span_posts_are_refused_with_a_reason(
    mixer: Mixer, body: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    target = url(mixer, "zipkin", "/api/v2/spans")
    headers = {"Content-Type": "application/json", **headers}
    got, text = await asyncio.to_thread(_post, target, body, headers)
    assert (got, reason in text) == (status, True), text
    # nothing of a refused batch is kept, and the collector still takes good spans (gzip too)
    assert await get_json(url(mixer, "zipkin", "/api/v2/services")) == []
    good = gzip.compress(json.dumps([SPAN]).encode())
    got, text = await asyncio.to_thread(
        _post, target, good, {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    )
    assert got == 202, text
    assert await get_json(url(mixer, "zipkin", "/api/v2/services")) == ["web"]
    _, metrics = await get_text(url(mixer, "metrics", "/metrics"))
    assert sample_value(metrics, "mixer_zipkin_rejected_total") == 1
    assert sample_value(metrics, "mixer_zipkin_spans_total") == 1


async def test_query_parameters_are_checked(mixer: Mixer) -> None:
    base = url(mixer, "zipkin", "/api/v2")
    for path, reason in (
        ("/spans", "serviceName is required"),
        ("/traces?limit=ten", "limit: expected an integer"),
        ("/dependencies", "endTs is required"),
        ("/traceMany", "traceIds is required"),
    ):
        status, text = await get_text(base + path)
        assert (status, reason in text) == (400, True), (path, text)
