"""A scripted Envoy access-log client: the messages an Envoy sidecar streams to mixer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import grpc
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import struct_pb2

from mixer.server import Mixer

__all__ = ["batch", "http_entry", "identifier", "stream"]

METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"


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


async def stream(host: str, mixer: Mixer, messages: Sequence[bytes]) -> None:
    async with grpc.aio.insecure_channel(f"{host}:{mixer.grpc_port}") as channel:
        call = channel.stream_unary(METHOD)

        async def gen() -> AsyncIterator[bytes]:
            for m in messages:
                yield m

        assert await call(gen(), timeout=10) == b""
