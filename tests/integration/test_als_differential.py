"""Access-log entries, the real Envoy 1.40 against ``pymesh proxy``: the same bootstrap (an
HTTP listener logging with ``envoy.access_loggers.http_grpc`` to a recording Access Log
Service), the same requests (answered, not routed, failed upstream), and the same entries,
field by field, but for times, ports the kernel chose and the header byte counts.

Envoy also reports what pymesh does not measure (:data:`ENVOY_ONLY`: the upstream request's
send and receive times, the first downstream byte's time, a stream id, wire byte counts);
those are left out of the comparison. A refused upstream connection is worded by each
proxy's router (``delayed connect error: ...`` in Envoy's, ``remote connection failure``
in pymesh's, as its file access log already words it): only its presence is compared.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from tests.proxy.als_recorder import Recorder, als_server
from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.support.envoy import make_proxy
from tests.support.httpclient import request
from tests.support.procs import free_port
from tests.support.upstream import Upstream
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(120)]

HOST = "127.0.0.232"
H2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}
NODE = {
    "id": "sidecar~127.0.0.232~p-1.default~default.svc.cluster.local",
    "cluster": "p.default",
    "metadata": {"NAMESPACE": "default", "LABELS": {"app": "p"}},
}
REQUESTS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("GET", "/ok?q=1", (("x-request-id", "11111111-2222-4333-8444-000000000001"),
                        ("user-agent", "curl/8"), ("content-type", "text/plain"))),
    ("POST", "/ok", (("x-request-id", "11111111-2222-4333-8444-000000000002"),
                     ("referer", "http://r/"))),
    ("GET", "/missing", (("x-request-id", "11111111-2222-4333-8444-000000000003"),)),
    ("GET", "/dead", (("x-request-id", "11111111-2222-4333-8444-000000000004"),)),
)  # fmt: skip


def _config(port: int, upstream: int, dead: int, als: int) -> dict[str, Any]:
    access_log = {
        "name": "envoy.access_loggers.http_grpc",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {
                "log_name": "outbound",
                "grpc_service": {"envoy_grpc": {"cluster_name": "als"}},
                "transport_api_version": "V3",
                "buffer_flush_interval": "0.1s",
            },
            "additional_request_headers_to_log": ["content-type", "x-absent"],
            "additional_response_headers_to_log": ["content-type"],
        },
    }
    routes = [
        route("/ok", cluster="app", name="to-app"),
        route("/dead", cluster="dead", name="to-dead"),
    ]
    main = listener(
        (HOST, port), hcm([vhost(routes=routes, domains=["app"])], access_log=[access_log])
    )
    main["traffic_direction"] = "OUTBOUND"
    config = bootstrap(
        [main],
        [
            cluster("app", [(HOST, upstream)]),
            cluster("dead", [(HOST, dead)]),
            cluster("als", [(HOST, als)], typed_extension_protocol_options=H2_OPTIONS),
        ],
    )
    config["node"] = NODE
    return config


#: what differs between any two runs (times, byte counts of headers the proxies write each
#: their own way)
_VOLATILE = {
    "startTime", "timeToLastRxByte", "timeToFirstUpstreamRxByte", "timeToLastDownstreamTxByte",
    "duration", "requestHeadersBytes", "responseHeadersBytes", "responseBodyBytes",
    "upstreamTransportFailureReason",
}  # fmt: skip
#: what only Envoy reports
ENVOY_ONLY = {
    "timeToFirstUpstreamTxByte", "timeToLastUpstreamTxByte", "timeToLastUpstreamRxByte",
    "timeToFirstDownstreamTxByte", "streamId", "upstreamHeaderBytesSent",
    "downstreamHeaderBytesReceived", "upstreamHeaderBytesReceived", "downstreamHeaderBytesSent",
    "downstreamWireBytesSent", "downstreamWireBytesReceived", "upstreamWireBytesSent",
    "upstreamWireBytesReceived",
}  # fmt: skip
_DETAILS = re.compile(r"\{remote_connection_failure[^}]*\}")


def _normalize(value: Any, upstream: int, port: int) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ENVOY_ONLY:
                continue
            if k == "responseCodeDetails":
                out[k] = _DETAILS.sub("{remote_connection_failure}", v)
            elif k in _VOLATILE:
                out[k] = "(present)"
            elif k == "portValue":
                out[k] = {upstream: "(upstream)", port: "(listener)"}.get(v, "(ephemeral)")
            else:
                out[k] = _normalize(v, upstream, port)
        return out
    if isinstance(value, list):
        return [_normalize(v, upstream, port) for v in value]
    return value


async def _run(kind: str, workdir: Path) -> list[dict[str, Any]]:
    upstream = await Upstream(HOST, 0).start()
    recorder = Recorder()
    als = free_port(HOST)
    port = free_port(HOST)
    config = _config(port, upstream.port, free_port(HOST), als)
    try:
        async with als_server(HOST, als, recorder):
            proxy = make_proxy(kind, config, workdir=workdir, name=f"{kind}-als")
            await proxy.astart()
            try:
                for method, path, headers in REQUESTS:
                    await request(HOST, port, method, path, list(headers), host_header="app")
                await wait_until(
                    lambda: len(recorder.http()) == len(REQUESTS), f"{kind}: every entry", 20
                )
            finally:
                await proxy.astop()
        [first, *_] = [s for s in recorder.streams if s]
        assert first[0].identifier.log_name == "outbound"
        assert first[0].identifier.node.id == NODE["id"]
        entries = sorted(recorder.http(), key=lambda e: e.request.request_id)
        return [_normalize(json_format.MessageToDict(e), upstream.port, port) for e in entries]
    finally:
        await upstream.stop()


async def test_access_log_entries_match_envoy(tmp_path: Path) -> None:
    envoy = await _run("envoy", tmp_path)
    pymesh = await _run("pymesh", tmp_path)
    differences = [
        f"{REQUESTS[i][1]}:\n  envoy:  {e}\n  pymesh: {p}"
        for i, (e, p) in enumerate(zip(envoy, pymesh, strict=True))
        if e != p
    ]
    assert not differences, "\n".join(differences)
    codes = [e["response"].get("responseCode") for e in envoy]
    assert codes == [200, 200, 404, 503], codes  # the comparison covers each outcome
