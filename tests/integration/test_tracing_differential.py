"""Trace-context propagation and Zipkin spans, the real Envoy 1.40 against ``pymesh proxy``:
the same bootstrap (an HTTP listener traced with ``envoy.tracers.zipkin`` in front of an echo
upstream), the same requests, and the same trace headers reaching the upstream and the same
spans reaching the collector, once ids are replaced by the order they first appear in.

Scenarios are Istio's sidecar shapes (an OUTBOUND listener's CLIENT spans, an INBOUND one's
SERVER spans, 128-bit trace ids, ``shared_span_context: false``) at 100% and 0% sampling,
and an inbound listener with W3C propagation and shared span contexts. The inbound scenario
also sets custom tags of every kind pymesh evaluates (literal, environment, request header,
cluster metadata).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.support.envoy import make_proxy
from tests.support.httpclient import request
from tests.support.procs import free_port
from tests.support.upstream import Upstream
from tests.support.waiting import wait_until
from tests.support.zipkin_collector import ZipkinCollector

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.timeout(180),
]

HOST = "127.0.0.231"
ZIPKIN = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"
NODE = {"id": "sidecar~127.0.0.231~p-1.default~default.svc.cluster.local", "cluster": "p.default"}
TRACE = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
PARENT = "0020000000000001"
W3C = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
CASES: tuple[tuple[tuple[str, str], ...], ...] = (
    (),
    (("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-sampled", "1")),
    (("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-parentspanid", PARENT)),
    (("x-b3-traceid", TRACE[:16]), ("x-b3-spanid", SPAN), ("x-b3-sampled", "0")),
    (("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-flags", "1")),
    (("x-b3-sampled", "0"),),
    (("x-b3-sampled", "1"),),
    (("b3", f"{TRACE}-{SPAN}-1"),),
    (("b3", f"{TRACE}-{SPAN}-0-{PARENT}"),),
    (("b3", f"{TRACE}-{SPAN}"),),
    (("b3", "0"),),
    (("traceparent", W3C), ("tracestate", "k=v")),
    (("traceparent", W3C), ("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)),
    (("x-b3-traceid", "not-hex"), ("x-b3-spanid", SPAN)),
    (("x-client-trace-id", "client-1"),),
    (("x-envoy-force-trace", "true"),),
    (("x-request-id", "11111111-2222-4333-8444-555555555555"),),
    (("x-request-id", "ffffffff-2222-4333-8444-555555555555"),),
    (("x-request-id", "11111111-2222-b333-8444-555555555555"),),
    (("x-request-id", "not-a-uuid"),),
    (("x-envoy-decorator-operation", "from-caller"),),
)
DEAD = (
    ("x-request-id", "22222222-2222-9333-8444-555555555555"),  # already sampled: kept
    ("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-sampled", "1"),
)  # fmt: skip
#: headers of the upstream request that carry or steer the trace
TRACE_HEADERS = (
    "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3",
    "traceparent", "tracestate", "x-envoy-decorator-operation", "x-client-trace-id",
)  # fmt: skip
_ID = re.compile(r"[0-9a-f]{16}")
# Istio's Telemetry customTags (literal, environment, header) and what a cluster's metadata
# holds, as the spans of one scenario carry them
CUSTOM_TAGS = (
    {"tag": "mesh", "literal": {"value": "pymesh-test"}},
    {"tag": "home", "environment": {"name": "HOME"}},
    {"tag": "cluster_id",
     "environment": {"name": "PYMESH_TEST_UNSET", "default_value": "Kubernetes"}},
    {"tag": "client", "request_header": {"name": "X-Client-Trace-Id", "default_value": "none"}},
    {"tag": "sampled", "request_header": {"name": "x-b3-sampled"}},
    *(
        {"tag": tag, "metadata": {
            "kind": {"cluster": {}},
            "metadata_key": {"key": "istio", "path": [{"key": key}]},
            "default_value": "-",
        }}
        for tag, key in (("services", "services"), ("port", "default_original_port"),
                         ("weight", "weight"), ("canary", "canary"), ("absent", "absent"))
    ),
)  # fmt: skip
APP_METADATA = {
    "filter_metadata": {
        "istio": {
            "services": [{"host": "app.default.svc.cluster.local"}],
            "default_original_port": 9080,
            "weight": 0.25,
            "canary": False,
        }
    }
}


@dataclass(frozen=True)
class Scenario:
    name: str
    direction: str
    sampling: float
    w3c: bool = False
    shared: bool = False
    custom_tags: bool = False

    def bootstrap(self, port: int, upstream: int, collector: int, dead: int) -> dict[str, Any]:
        zipkin: dict[str, Any] = {
            "@type": ZIPKIN,
            "collector_cluster": "zipkin",
            "collector_endpoint": "/api/v2/spans",
            "collector_endpoint_version": "HTTP_JSON",
            "trace_id_128bit": True,
            "shared_span_context": self.shared,
        }
        if self.w3c:
            zipkin["trace_context_option"] = "USE_B3_WITH_W3C_PROPAGATION"
        tracing = {
            "random_sampling": {"value": self.sampling},
            "provider": {"name": "envoy.tracers.zipkin", "typed_config": zipkin},
        }
        if self.custom_tags:
            tracing["custom_tags"] = list(CUSTOM_TAGS)
        decorated = route(cluster="app")
        decorated["decorator"] = {"operation": "app.default.svc.cluster.local:9080/*"}
        routes = [route("/plain", cluster="app"), route("/dead", cluster="dead"), decorated]
        main = listener((HOST, port), hcm([vhost(routes=routes)], tracing=tracing))
        main["traffic_direction"] = self.direction
        config = bootstrap(
            [main],
            [
                cluster("app", [(HOST, upstream)], metadata=APP_METADATA),
                cluster("dead", [(HOST, dead)]),  # nothing listens: 503 UF, an error span
                cluster("zipkin", [(HOST, collector)]),
            ],
        )
        config["node"] = NODE
        return config


SCENARIOS = (
    Scenario("sidecar-outbound", "OUTBOUND", 100.0),
    Scenario("sidecar-inbound", "INBOUND", 100.0, custom_tags=True),
    Scenario("outbound-unsampled", "OUTBOUND", 0.0),
    Scenario("inbound-w3c-shared", "INBOUND", 0.0, w3c=True, shared=True),
)


class Tokens:
    """Ids replaced by their order of first appearance: ``#0``, ``#1``..."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        return _ID.sub(self._token, text)

    def _token(self, m: re.Match[str]) -> str:
        return self._seen.setdefault(m.group(0), f"#{len(self._seen)}")


def _reason(request_id: str, sent: dict[str, str]) -> str:
    """What a test can compare of an x-request-id: its trace-reason digit, and whether the
    rest is the id the client sent."""
    given = sent.get("x-request-id")
    if len(request_id) != 36:
        return request_id
    kept = (
        given is not None
        and len(given) == 36
        and request_id[:14] + request_id[15:] == (given[:14] + given[15:])
    )
    return f"reason {request_id[14]}" + (" (the client's id)" if kept else "")


def _observe(
    sent: Sequence[tuple[str, str]], upstream: dict[str, str], span: dict[str, Any] | None
) -> dict[str, Any]:
    tokens = Tokens()
    given = dict(sent)
    for _, value in sent:
        tokens(value.lower())
    seen: dict[str, Any] = {
        name: tokens(upstream[name]) for name in TRACE_HEADERS if name in upstream
    }
    seen["x-request-id"] = _reason(upstream.get("x-request-id", ""), given)
    if span is not None:
        tags = dict(span["tags"])
        tags["guid:x-request-id"] = _reason(tags.get("guid:x-request-id", ""), given)
        tags["response_size"] = "(size)" if int(tags.get("response_size", "0")) > 0 else "0"
        seen["span"] = {
            "traceId": tokens(span["traceId"]),
            "id": tokens(span["id"]),
            "parentId": tokens(span.get("parentId", "")),
            "name": span["name"],
            "kind": span["kind"],
            "shared": span.get("shared", False),
            "localEndpoint": span["localEndpoint"],
            "annotations": [a["value"] for a in span.get("annotations", ())],
            "duration>=0": span["duration"] >= 0 and span["timestamp"] > 0,
            "tags": tags,
        }
    return seen


def _sampled(upstream: dict[str, str]) -> bool:
    single = upstream.get("b3", "")
    return upstream.get("x-b3-sampled") == "1" or single.split("-")[2:3] == ["1"]


async def _run(kind: str, scenario: Scenario, workdir: Path) -> list[dict[str, Any]]:
    upstream = await Upstream(HOST, 0).start()
    collector = await ZipkinCollector(HOST).start()
    port = free_port(HOST)
    config = scenario.bootstrap(port, upstream.port, collector.port, free_port(HOST))
    proxy = make_proxy(kind, config, workdir=workdir, name=f"{kind}-{scenario.name}")
    await proxy.astart()
    try:
        seen: list[tuple[Sequence[tuple[str, str]], dict[str, str], str]] = []
        for path in ("/path?q=1", "/plain"):
            for sent in CASES:
                resp = await request(HOST, port, "GET", path, list(sent), host_header="app:9080")
                assert resp.status == 200, (kind, sent, resp)
                seen.append((sent, resp.json()["headers"], path))
        # a request that reaches no upstream: only its span tells (an error span)
        resp = await request(HOST, port, "GET", "/dead", list(DEAD), host_header="app:9080")
        assert resp.status == 503, (kind, resp)
        seen.append((DEAD, {"x-request-id": DEAD[0][1], "x-b3-sampled": "1"}, "/dead"))
        # a request is known by its id and path (some cases send the same id twice)
        wanted = {(h["x-request-id"], path) for _, h, path in seen if _sampled(h)}

        def key(span: dict[str, Any]) -> tuple[str, str]:
            url = span["tags"].get("http.url", "")
            return span["tags"].get("guid:x-request-id", ""), url[len("http://app:9080") :]

        def arrived() -> bool:
            return wanted <= {key(s) for s in collector.spans}

        # Envoy flushes every 5 spans or 5 s
        await wait_until(arrived, f"{kind}: every sampled span", timeout=30.0)
        spans = {key(s): s for s in collector.spans}
        assert len(spans) == len(collector.spans) == len(wanted), (kind, set(spans) - wanted)
        assert all(line.startswith(b"POST /api/v2/spans ") for line, _ in collector.requests)
        assert {h[b"content-type"] for _, h in collector.requests} == {b"application/json"}
        return [_observe(sent, h, spans.get((h["x-request-id"], path))) for sent, h, path in seen]
    finally:
        await proxy.astop()
        await collector.stop()
        await upstream.stop()


def _differences(envoy: list[dict[str, Any]], pymesh: list[dict[str, Any]]) -> Iterator[str]:
    for index, (e, p) in enumerate(zip(envoy, pymesh, strict=True)):
        if e != p:
            case = CASES[index % len(CASES)] if index < 2 * len(CASES) else DEAD
            yield f"case {index} {case}:\n  envoy:  {e}\n  pymesh: {p}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_trace_context_and_spans_match_envoy(scenario: Scenario, tmp_path: Path) -> None:
    envoy = await _run("envoy", scenario, tmp_path)
    pymesh = await _run("pymesh", scenario, tmp_path)
    differences = list(_differences(envoy, pymesh))
    assert not differences, "\n".join(differences)
    # the comparison is not vacuous: some requests were traced, and with B3 context
    assert any("span" in seen for seen in envoy) and any("x-b3-traceid" in s for s in envoy)
    if scenario.custom_tags:
        tags = [seen["span"]["tags"] for seen in envoy if "span" in seen]
        assert {t["services"] for t in tags} == {'[{"host":"app.default.svc.cluster.local"}]', "-"}
        assert {t["client"] for t in tags} == {"client-1", "none"}
