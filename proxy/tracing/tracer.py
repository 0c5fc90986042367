"""``envoy.tracers.zipkin`` for one connection manager: a span per request, started when the
route is known and reported when the request ends.

The span continues the incoming trace (B3, or W3C ``traceparent`` when
``trace_context_option`` asks for it) or starts one; it is sampled as the incoming context
says, else as the connection manager decides (:mod:`proxy.tracing.decision`). Its context
goes upstream in the incoming format; an unsampled span still propagates its ids, as Envoy
does. Outbound (egress) spans are ``CLIENT`` spans and name the route's decorator to the
callee (``x-envoy-decorator-operation``); inbound (ingress) ones are ``SERVER`` spans and take
their name from that header when it comes. With ``shared_span_context`` a server span
reuses its caller's span id, as Zipkin's shared spans do.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.custom_tags import apply_custom_tags
from proxy.http.headers import get_header, remove_headers, set_header
from proxy.tracing.context import (
    InvalidContext,
    Propagation,
    extract,
    inject,
    new_id,
    sampling_hint,
    single_header,
)
from proxy.tracing.decision import decide
from proxy.tracing.span import ActiveSpan, finish_tags

if TYPE_CHECKING:
    from proxy.config.model_http import Tracing
    from proxy.http.stream_info import StreamInfo
    from proxy.tracing.reporter import ZipkinReporter

__all__ = ["HttpTracer", "TracerSettings"]

Headers = list[tuple[bytes, bytes]]
_DECORATOR = b"x-envoy-decorator-operation"


@dataclass(frozen=True, slots=True)
class TracerSettings:
    """What the tracer knows of the proxy and the listener it traces for."""

    node_id: str
    zone: str
    egress: bool  # the listener's traffic_direction is OUTBOUND


class HttpTracer:
    __slots__ = ("_config", "_reporter", "_rng", "_settings", "_w3c")

    def __init__(
        self,
        config: Tracing,
        settings: TracerSettings,
        reporter: ZipkinReporter,
        rng: random.Random,
    ) -> None:
        assert config.provider is not None
        self._config = config
        self._settings = settings
        self._reporter = reporter
        self._rng = rng
        self._w3c = config.provider.w3c_propagation

    def start(self, info: StreamInfo, headers: Headers, decorator: str | None) -> ActiveSpan | None:
        config = self._config
        reason = decide(
            headers,
            client_sampling=config.client_sampling,
            random_sampling=config.random_sampling,
            overall_sampling=config.overall_sampling,
        )
        settings = self._settings
        name = decorator or info.authority.decode("latin-1")
        if not settings.egress:
            override = get_header(headers, _DECORATOR)
            if override is not None:
                if override:
                    name = override.decode("latin-1")
                remove_headers(headers, (_DECORATOR,))
        elif decorator:
            set_header(headers, _DECORATOR, decorator.encode())
        try:
            incoming = extract(headers, w3c=self._w3c)
        except InvalidContext:
            return None  # Envoy's null span: nothing traced, nothing injected
        hint = sampling_hint(headers, w3c=self._w3c)
        sampled = hint if hint is not None else reason.traced
        # The wall clock in microseconds, as Zipkin wants: the loop's clock may tick in
        # milliseconds (uvloop), too coarse for a span inside one proxy.
        timestamp = time.time_ns() // 1000
        assert config.provider is not None
        # Envoy marks every server span shared under shared_span_context, a new root too
        shared = config.provider.shared_span_context and not settings.egress
        if incoming is None:
            span_id = new_id(self._rng)
            high = new_id(self._rng) if config.provider.trace_id_128bit else ""
            span = ActiveSpan(
                high + span_id, span_id, None, name=name, client=settings.egress,
                sampled=sampled, timestamp=timestamp, shared=shared,
            )  # fmt: skip
        elif shared:
            span = ActiveSpan(
                incoming.trace_id, incoming.span_id, incoming.parent_id, name=name,
                client=False, sampled=sampled, timestamp=timestamp, shared=True,
            )  # fmt: skip
        else:
            span = ActiveSpan(
                incoming.trace_id, new_id(self._rng), incoming.span_id, name=name,
                client=settings.egress, sampled=sampled, timestamp=timestamp,
            )  # fmt: skip
        tags = span.tags
        tags["component"] = "proxy"
        tags["node_id"] = settings.node_id
        if settings.zone:
            tags["zone"] = settings.zone
        request_id = get_header(headers, b"x-request-id")
        if request_id is not None:
            tags["guid:x-request-id"] = request_id.decode("latin-1")
        client_id = get_header(headers, b"x-client-trace-id")
        if client_id is not None:
            tags["guid:x-client-trace-id"] = client_id.decode("latin-1")
        # B3 goes on as it came (single or multi); a W3C-only or new context as x-b3-*
        single = single_header(headers)
        inject(
            headers,
            span.trace_id,
            span.span_id,
            span.parent_id,
            sampled,
            Propagation.B3_SINGLE if single else Propagation.B3_MULTI,
            w3c=self._w3c,
        )
        return span

    def finish(self, span: ActiveSpan, info: StreamInfo, headers: Headers) -> None:
        if not span.sampled:
            return
        span.duration = max(0, time.time_ns() // 1000 - span.timestamp)
        finish_tags(span, info, headers, max_path_tag_length=self._config.max_path_tag_length)
        if self._config.custom_tags:
            apply_custom_tags(
                span.tags, self._config.custom_tags, headers, info.upstream_cluster_metadata
            )
        self._reporter.report(span)
