"""The access-log stream at its gRPC seam: malformed, oversized and anonymous messages are
counted and dropped while the stream and mixer keep going; a peer that names itself after
its caller's report still gets that report labelled; one that never does shows as unknown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import struct_pb2

from mixer.server import Mixer
from tests.mixer.harness import get_json, get_text, running_mixer, sample_value, url, wait_until
from tests.support import TELEMETRY_NET, address

HOST = address(TELEMETRY_NET, 111)
METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"


@pytest.fixture
async def mixer() -> AsyncIterator[Mixer]:
    async with running_mixer(HOST, max_message_bytes=64 * 1024, peer_wait=0.5) as m:
        yield m


def identifier(pod: str, ip: str, app: str, version: str) -> als_pb2.StreamAccessLogsMessage:
    meta = struct_pb2.Struct()
    meta.update(
        {
            "NAMESPACE": "default",
            "WORKLOAD_NAME": f"{app}-{version}",
            "LABELS": {"app": app, "version": version},
            "INSTANCE_IPS": ip,
        }
    )
    msg = als_pb2.StreamAccessLogsMessage()
    msg.identifier.node.id = f"sidecar~{ip}~{pod}.default~default.svc.cluster.local"
    msg.identifier.node.metadata.CopyFrom(meta)
    msg.identifier.log_name = "outbound"
    return msg


def http_entry(upstream: str, code: int = 200, path: str = "/") -> accesslog_pb2.HTTPAccessLogEntry:
    e = accesslog_pb2.HTTPAccessLogEntry()
    c = e.common_properties
    c.start_time.GetCurrentTime()
    c.duration.FromMilliseconds(12)
    c.upstream_cluster = "outbound|9080||reviews.default.svc.cluster.local"
    host, _, port = upstream.rpartition(":")
    c.upstream_remote_address.socket_address.address = host
    c.upstream_remote_address.socket_address.port_value = int(port)
    e.request.authority = "reviews:9080"
    e.request.path = path
    e.request.request_method = 1  # GET
    e.response.response_code.value = code
    return e


def batch(*entries: accesslog_pb2.HTTPAccessLogEntry) -> als_pb2.StreamAccessLogsMessage:
    msg = als_pb2.StreamAccessLogsMessage()
    msg.http_logs.log_entry.extend(entries)
    return msg


async def stream(mixer: Mixer, messages: Sequence[bytes]) -> None:
    async with grpc.aio.insecure_channel(f"{HOST}:{mixer.grpc_port}") as channel:
        call = channel.stream_unary(METHOD)

        async def gen() -> AsyncIterator[bytes]:
            for m in messages:
                yield m

        assert await call(gen(), timeout=10) == b""


async def metrics(mixer: Mixer) -> str:
    status, text = await get_text(url(mixer, "metrics", "/metrics"))
    assert status == 200
    return text


async def test_bad_messages_are_counted_and_dropped_and_the_stream_goes_on(mixer: Mixer) -> None:
    huge = batch(*(http_entry("127.0.7.50:9080", path="/" + "x" * 1000) for _ in range(100)))
    await stream(
        mixer,
        [
            batch(http_entry("127.0.7.50:9080")).SerializeToString(),  # before any identifier
            identifier("productpage-v1-1", "127.0.7.40", "productpage", "v1").SerializeToString(),
            b"\xff\xff\xff not protobuf",
            huge.SerializeToString(),
            batch(http_entry("127.0.7.50:9080"), http_entry("127.0.7.50:9080", 503))
            .SerializeToString(),
        ],
    )  # fmt: skip
    text = await wait_until(
        lambda: _when(metrics(mixer), "mixer_als_unknown_peers_total", 2), "unknown peers"
    )
    assert sample_value(text, "mixer_als_dropped_total", reason="no_identifier") == 1
    assert sample_value(text, "mixer_als_dropped_total", reason="malformed") == 1
    assert sample_value(text, "mixer_als_dropped_total", reason="too_large") == 1
    assert sample_value(text, "mixer_als_entries_total", type="http") == 2
    # the two good entries are in, with the peer nobody has named: unknown, as Istio shows it
    assert (
        sample_value(
            text,
            "istio_requests_total",
            reporter="source",
            source_workload="productpage-v1",
            destination_workload="unknown",
            destination_service="reviews.default.svc.cluster.local",
        )
        == 2
    )
    # mixer keeps serving: a new stream from the same proxy is taken as usual
    await stream(
        mixer,
        [
            identifier("productpage-v1-1", "127.0.7.40", "productpage", "v1").SerializeToString(),
            batch(http_entry("127.0.7.50:9080")).SerializeToString(),
        ],
    )
    await wait_until(
        lambda: _when(metrics(mixer), "mixer_als_unknown_peers_total", 3), "third report"
    )


async def test_a_peer_that_names_itself_later_still_labels_the_report(mixer: Mixer) -> None:
    await stream(
        mixer,
        [
            identifier("productpage-v1-1", "127.0.7.40", "productpage", "v1").SerializeToString(),
            batch(http_entry("127.0.7.41:15006")).SerializeToString(),
        ],
    )
    # the callee's sidecar opens its stream after the caller's report arrived
    await stream(
        mixer, [identifier("reviews-v2-1", "127.0.7.41", "reviews", "v2").SerializeToString()]
    )
    text = await wait_until(
        lambda: _when(metrics(mixer), "istio_requests_total", 1), "the held report"
    )
    assert sample_value(
        text, "istio_requests_total", source_workload="productpage-v1",
        destination_workload="reviews-v2", destination_version="v2",
    ) == 1  # fmt: skip
    assert sample_value(text, "mixer_als_unknown_peers_total") == 0
    logs = await get_json(url(mixer, "dashboard", "/api/logs?workload=productpage-v1.default"))
    assert [e["destination_workload"] for e in logs] == ["reviews-v2"]


async def _when(text_coro: object, name: str, at_least: float) -> str | None:
    text = await text_coro  # type: ignore[misc]
    assert isinstance(text, str)
    return text if sample_value(text, name) >= at_least else None
