"""A Zipkin-compatible span store: Zipkin v2 JSON spans in, Zipkin's query semantics out.

Bounded twice: at most ``max_spans`` spans (the oldest traces go first) and none older than
``retention`` seconds. Spans are validated the way Zipkin's collector does (hex ids of the
right length, a timestamp in microseconds) and kept as the JSON objects they came as, so the
query API returns what was posted.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SpanError", "TraceQuery", "TraceStore", "validate_span"]

_HEX = re.compile(r"^[0-9a-f]+$")
_KINDS = frozenset({"CLIENT", "SERVER", "PRODUCER", "CONSUMER"})

Span = dict[str, Any]


class SpanError(ValueError):
    """A span Zipkin would refuse; the message names the span and field."""


def _hex_id(value: Any, what: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise SpanError(f"{what} must be a hex string")
    text = value.lower()
    if not 0 < len(text) <= max_len or not _HEX.match(text):
        raise SpanError(f"{what} {value!r}: expected 1 to {max_len} hex characters")
    return text


def validate_span(raw: Any, index: int = 0) -> Span:
    """A normalised copy of one v2 span (lower-case ids, 16-char ids left-padded)."""
    where = f"span {index}"
    if not isinstance(raw, Mapping):
        raise SpanError(f"{where}: expected an object")
    span: Span = dict(raw)
    try:
        trace_id = _hex_id(raw.get("traceId"), "traceId", 32)
        span["traceId"] = trace_id.rjust(32 if len(trace_id) > 16 else 16, "0")
        span["id"] = _hex_id(raw.get("id"), "id", 16).rjust(16, "0")
        if raw.get("parentId") is not None:
            span["parentId"] = _hex_id(raw["parentId"], "parentId", 16).rjust(16, "0")
            if span["parentId"] == span["id"]:
                del span["parentId"]  # Zipkin drops a self-referencing parent
        for key in ("timestamp", "duration"):
            if key in raw and (isinstance(raw[key], bool) or not isinstance(raw[key], int)):
                raise SpanError(f"{key} must be an integer (microseconds)")
        if raw.get("kind") is not None and raw["kind"] not in _KINDS:
            raise SpanError(f"kind {raw['kind']!r}: expected one of {sorted(_KINDS)}")
        for key in ("localEndpoint", "remoteEndpoint", "tags"):
            if key in raw and raw[key] is not None and not isinstance(raw[key], Mapping):
                raise SpanError(f"{key} must be an object")
        tags = raw.get("tags") or {}
        if any(not isinstance(v, str) for v in tags.values()):
            raise SpanError("tags values must be strings")
        if "annotations" in raw and not isinstance(raw["annotations"], list):
            raise SpanError("annotations must be a list")
    except SpanError as exc:
        raise SpanError(f"{where}: {exc}") from None
    if isinstance(span.get("name"), str):
        span["name"] = span["name"].lower()
    for key in ("localEndpoint", "remoteEndpoint"):
        ep = span.get(key)
        if isinstance(ep, Mapping) and isinstance(ep.get("serviceName"), str):
            span[key] = {**ep, "serviceName": ep["serviceName"].lower()}
    return span


def service_of(span: Span) -> str:
    ep = span.get("localEndpoint") or {}
    name = ep.get("serviceName")
    return name if isinstance(name, str) else ""


def _remote_service(span: Span) -> str:
    ep = span.get("remoteEndpoint") or {}
    name = ep.get("serviceName")
    return name if isinstance(name, str) else ""


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """Zipkin's ``GET /api/v2/traces`` parameters (times in milliseconds, durations in µs)."""

    service: str = ""
    span_name: str = ""
    remote_service: str = ""
    annotation_query: str = ""
    min_duration: int | None = None
    max_duration: int | None = None
    end_ts: int | None = None
    lookback: int | None = None
    limit: int = 10


class TraceStore:
    def __init__(self, max_spans: int, retention: float, clock: Callable[[], float]) -> None:
        self.max_spans = max_spans
        self.retention = retention
        self.clock = clock
        # trace id -> spans; insertion order = arrival of the trace's first span
        self._traces: OrderedDict[str, list[Span]] = OrderedDict()
        self._arrival: dict[str, float] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, spans: Iterable[Span]) -> int:
        now = self.clock()
        added = 0
        for span in spans:
            trace = self._traces.get(span["traceId"])
            if trace is None:
                trace = self._traces[span["traceId"]] = []
                self._arrival[span["traceId"]] = now
            trace.append(span)
            added += 1
        self._count += added
        self._evict(now)
        return added

    def _evict(self, now: float) -> None:
        cutoff = now - self.retention
        traces = self._traces
        while traces:
            oldest = next(iter(traces))
            if self._count <= self.max_spans and self._arrival[oldest] >= cutoff:
                break
            self._count -= len(traces.pop(oldest))
            del self._arrival[oldest]

    # -- queries ------------------------------------------------------------------------------
    def trace(self, trace_id: str) -> list[Span] | None:
        self._evict(self.clock())
        spans = self._traces.get(trace_id.lower().rjust(16, "0"))
        if spans is None and len(trace_id) <= 16:
            # a 64-bit id finds a 128-bit trace by its low half, as Zipkin's non-strict lookup
            low = trace_id.lower().rjust(16, "0")
            spans = next((s for k, s in self._traces.items() if k.endswith(low)), None)
        return list(spans) if spans is not None else None

    def services(self) -> list[str]:
        self._evict(self.clock())
        return sorted({s for spans in self._traces.values() for s in map(service_of, spans) if s})

    def span_names(self, service: str) -> list[str]:
        service = service.lower()
        return sorted(
            {
                sp["name"]
                for spans in self._traces.values()
                for sp in spans
                if service_of(sp) == service and isinstance(sp.get("name"), str)
            }
        )

    def remote_services(self, service: str) -> list[str]:
        service = service.lower()
        return sorted(
            {
                r
                for spans in self._traces.values()
                for sp in spans
                if service_of(sp) == service and (r := _remote_service(sp))
            }
        )

    def traces(self, q: TraceQuery) -> list[list[Span]]:
        """Newest first, each trace's spans as stored."""
        self._evict(self.clock())
        end_us = (q.end_ts if q.end_ts is not None else int(self.clock() * 1000)) * 1000
        start_us = end_us - (q.lookback if q.lookback is not None else 86_400_000) * 1000
        annotations = _parse_annotation_query(q.annotation_query)
        found: list[tuple[int, list[Span]]] = []
        for spans in reversed(self._traces.values()):
            ts = min((sp.get("timestamp") or 0 for sp in spans), default=0)
            if ts and not (start_us <= ts <= end_us):
                continue
            if any(_span_matches(sp, q, annotations) for sp in spans):
                found.append((ts, list(spans)))
        found.sort(key=lambda t: t[0], reverse=True)
        return [spans for _, spans in found[: q.limit]]

    def dependencies(self, end_ts: int, lookback: int) -> list[dict[str, Any]]:
        """Zipkin's dependency links (parent service → child service) in the window (ms)."""
        end_us, start_us = end_ts * 1000, (end_ts - lookback) * 1000
        links: dict[tuple[str, str], list[int]] = {}
        for spans in self._traces.values():
            by_id = {sp["id"]: sp for sp in spans}
            for sp in spans:
                ts = sp.get("timestamp") or 0
                if ts and not (start_us <= ts <= end_us):
                    continue
                child = service_of(sp)
                parent_span = by_id.get(sp.get("parentId", ""))
                if sp.get("kind") == "SERVER" and parent_span is not None:
                    parent = service_of(parent_span)
                elif sp.get("kind") == "CLIENT" and _remote_service(sp):
                    if any(c.get("parentId") == sp["id"] for c in spans):
                        continue  # the callee's server span records this link
                    parent, child = child, _remote_service(sp)
                else:
                    continue
                if not parent or not child or parent == child:
                    continue
                link = links.setdefault((parent, child), [0, 0])
                link[0] += 1
                link[1] += "error" in (sp.get("tags") or {})
        return [
            {"parent": p, "child": c, "callCount": n, **({"errorCount": e} if e else {})}
            for (p, c), (n, e) in sorted(links.items())
        ]


def _parse_annotation_query(text: str) -> list[tuple[str, str | None]]:
    """``error and http.status_code=500`` → [("error", None), ("http.status_code", "500")]."""
    out: list[tuple[str, str | None]] = []
    for part in text.split(" and "):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        out.append((key.strip(), value.strip() if sep else None))
    return out


def _span_matches(sp: Span, q: TraceQuery, annotations: list[tuple[str, str | None]]) -> bool:
    if q.service and service_of(sp) != q.service.lower():
        return False
    if q.span_name and sp.get("name") != q.span_name.lower():
        return False
    if q.remote_service and _remote_service(sp) != q.remote_service.lower():
        return False
    duration = sp.get("duration")
    if q.min_duration is not None and (duration is None or duration < q.min_duration):
        return False
    if q.max_duration is not None and (duration is None or duration > q.max_duration):
        return False
    tags = sp.get("tags") or {}
    values = {a.get("value") for a in sp.get("annotations") or () if isinstance(a, Mapping)}
    for key, value in annotations:
        if value is None:
            if key not in tags and key not in values:
                return False
        elif tags.get(key) != value:
            return False
    return True
