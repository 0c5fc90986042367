"""Whether a request is traced, decided as Envoy's connection manager decides it, and kept in
the ``x-request-id`` so that every proxy on the request's way agrees.

Envoy's UUID request ids carry a trace reason in their version digit (index 14): ``9`` for a
randomly sampled request, ``b`` for one a client asked to trace (``x-client-trace-id``,
subject to ``client_sampling``), ``a`` for one forced with ``x-envoy-force-trace`` (which
only an internal request keeps), and the plain ``4`` for no trace. A request that arrives
with a reason keeps it; one without is sampled when the first 8 hex digits of its id, modulo
10000, fall below ``random_sampling`` (in hundredths of a percent); ``overall_sampling``
may then veto it. Sans-I/O.
"""

from __future__ import annotations

from enum import Enum

from proxy.http.headers import get_header, set_header

__all__ = ["TraceReason", "decide", "trace_reason"]

Headers = list[tuple[bytes, bytes]]
_REQUEST_ID = b"x-request-id"


class TraceReason(Enum):
    NONE = "4"
    SAMPLED = "9"
    CLIENT = "b"
    FORCED = "a"

    @property
    def traced(self) -> bool:
        return self is not TraceReason.NONE


_BY_DIGIT = {ord(r.value): r for r in TraceReason}


def trace_reason(request_id: bytes | None) -> TraceReason:
    if request_id is None or len(request_id) != 36:
        return TraceReason.NONE
    return _BY_DIGIT.get(request_id[14], TraceReason.NONE)


def _set_reason(headers: Headers, request_id: bytes, reason: TraceReason) -> None:
    value = request_id[:14] + reason.value.encode() + request_id[15:]
    set_header(headers, _REQUEST_ID, value)


def _enabled(fraction: float, value: int) -> bool:
    # Envoy's Percent becomes a FractionalPercent out of 10000
    return value % 10000 < round(fraction * 10000)


def decide(
    headers: Headers,
    *,
    client_sampling: float,
    random_sampling: float,
    overall_sampling: float,
) -> TraceReason:
    """Mark the request's ``x-request-id`` with its trace reason (as Envoy's
    ``mutateTracingRequestHeader``) and return it. A request without a UUID id is not traced
    by this rule (its trace headers may still ask for it)."""
    request_id = get_header(headers, _REQUEST_ID)
    if request_id is None or len(request_id) != 36 or request_id[14:15] == b"-":
        return TraceReason.NONE
    try:
        value = int(request_id[:8], 16)
    except ValueError:
        return TraceReason.NONE
    reason = trace_reason(request_id)
    if reason is TraceReason.NONE:
        if get_header(headers, b"x-client-trace-id") is not None and _enabled(
            client_sampling, value
        ):
            reason = TraceReason.CLIENT
        elif get_header(headers, b"x-envoy-force-trace") is not None:
            reason = TraceReason.FORCED
        elif _enabled(random_sampling, value):
            reason = TraceReason.SAMPLED
        if reason is not TraceReason.NONE:
            _set_reason(headers, request_id, reason)
    if reason is not TraceReason.NONE and not _enabled(overall_sampling, value):
        _set_reason(headers, request_id, TraceReason.NONE)
        reason = TraceReason.NONE
    return reason
