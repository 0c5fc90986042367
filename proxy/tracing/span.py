"""One request's span, and its Zipkin v2 JSON as Envoy's Zipkin tracer writes it.

The tags are Envoy's (``HttpTracerUtility``): ``component``, ``node_id``, ``zone``,
``guid:x-request-id``, ``guid:x-client-trace-id``, ``http.url``, ``http.method``,
``http.protocol``, ``downstream_cluster``, ``user_agent``, ``peer.address``,
``request_size``, ``response_size``, ``upstream_cluster`` and ``upstream_cluster.name``,
``http.status_code``, ``response_flags``, and ``error`` for a 5xx or no response. A client
span ends with a ``cr`` annotation, a server span with ``ss``. Sans-I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.http.headers import get_header

if TYPE_CHECKING:
    from proxy.http.stream_info import StreamInfo

__all__ = ["ActiveSpan", "LocalEndpoint", "encode_spans", "finish_tags"]

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class LocalEndpoint:
    service_name: str
    ipv4: str


class ActiveSpan:
    """A span from the request's start to its end; times are Unix microseconds."""

    __slots__ = (
        "duration",
        "kind",
        "name",
        "parent_id",
        "sampled",
        "shared",
        "span_id",
        "tags",
        "timestamp",
        "trace_id",
    )

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_id: str | None,
        *,
        name: str,
        client: bool,
        sampled: bool,
        timestamp: int,
        shared: bool = False,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.name = name
        self.kind = "CLIENT" if client else "SERVER"
        self.sampled = sampled
        self.timestamp = timestamp
        self.duration = 0
        self.shared = shared
        self.tags: dict[str, str] = {}

    def to_json(self, local: LocalEndpoint) -> dict[str, object]:
        end = self.timestamp + self.duration
        span: dict[str, object] = {
            "traceId": self.trace_id,
            "id": self.span_id,
            "name": self.name,
            "kind": self.kind,
            "timestamp": self.timestamp,
            "duration": self.duration,
            "localEndpoint": {"serviceName": local.service_name, "ipv4": local.ipv4, "port": 0},
            "annotations": [{"timestamp": end, "value": "cr" if self.kind == "CLIENT" else "ss"}],
            "tags": self.tags,
        }
        if self.parent_id:
            span["parentId"] = self.parent_id
        if self.shared:
            span["shared"] = True
        return span


def encode_spans(spans: Sequence[ActiveSpan], local: LocalEndpoint) -> bytes:
    return json.dumps([s.to_json(local) for s in spans], separators=(",", ":")).encode()


def _text(value: bytes | None, default: str = "-") -> str:
    return value.decode("latin-1") if value else default


def finish_tags(
    span: ActiveSpan,
    info: StreamInfo,
    request: Headers,
    *,
    max_path_tag_length: int,
) -> None:
    """The tags Envoy sets when the downstream request ends."""
    tags = span.tags
    path = get_header(request, b"x-envoy-original-path") or info.original_path
    if len(path) > max_path_tag_length:
        path = path[:max_path_tag_length]
    scheme = get_header(request, b"x-forwarded-proto") or info.connection.scheme
    tags["http.url"] = f"{_text(scheme)}://{_text(info.authority, '')}{_text(path, '')}"
    tags["http.method"] = _text(info.method)
    tags["downstream_cluster"] = _text(get_header(request, b"x-envoy-downstream-service-cluster"))
    tags["user_agent"] = _text(get_header(request, b"user-agent"))
    tags["http.protocol"] = _text(info.protocol)
    peer = info.connection.remote_address
    if peer is not None:
        tags["peer.address"] = peer[0]
    tags["request_size"] = str(info.bytes_received)
    tags["response_size"] = str(info.bytes_sent)
    if info.upstream_cluster:
        tags["upstream_cluster"] = info.upstream_cluster
        tags["upstream_cluster.name"] = info.upstream_cluster
    code = info.response_code
    if code:
        tags["http.status_code"] = str(code)
    tags["response_flags"] = info.response_flags_text()
    if not code or code >= 500:
        tags["error"] = "true"
