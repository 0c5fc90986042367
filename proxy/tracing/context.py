"""Trace context on the wire: B3 (``x-b3-*`` headers, or the single ``b3`` header) and W3C
``traceparent``, read from a request and written into the one the proxy sends on, as
Envoy's Zipkin tracer does. Sans-I/O: ids come from the caller's RNG.

Envoy answers in the format it was asked in: a request that carried the single ``b3``
header goes on with a single ``b3`` header, any other with ``x-b3-*`` headers (and, when W3C
propagation is on, a ``traceparent`` beside them). B3 headers that do not parse leave the
request untraced (:class:`InvalidContext`), as Envoy's null span does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from proxy.http.headers import get_header, remove_headers

__all__ = [
    "B3",
    "InvalidContext",
    "Propagation",
    "SpanContext",
    "extract",
    "inject",
    "new_id",
    "sampling_hint",
    "single_header",
]

Headers = list[tuple[bytes, bytes]]

B3 = (b"x-b3-traceid", b"x-b3-spanid", b"x-b3-parentspanid", b"x-b3-sampled", b"x-b3-flags")
_SINGLE = b"b3"
_TRACEPARENT = b"traceparent"
_HEX = frozenset("0123456789abcdef")


class InvalidContext(ValueError):
    """Trace headers that are present but do not parse: Envoy then leaves the request
    untraced and its headers untouched."""


class Propagation(Enum):
    """How the incoming context was carried, so the outgoing one is carried the same way."""

    B3_MULTI = "b3-multi"
    B3_SINGLE = "b3-single"
    W3C = "w3c"


@dataclass(frozen=True, slots=True)
class SpanContext:
    """An incoming span: ``trace_id`` 16 or 32 lower-case hex digits, ``span_id`` 16.
    ``sampled`` is None when the sender left the decision to the proxy."""

    trace_id: str
    span_id: str
    parent_id: str | None = None
    sampled: bool | None = None
    propagation: Propagation = Propagation.B3_MULTI


def new_id(rng: random.Random) -> str:
    """A non-zero 64-bit id as 16 hex digits."""
    return f"{rng.getrandbits(64) or 1:016x}"


def _hex_id(value: str, lengths: tuple[int, ...]) -> str | None:
    value = value.lower()
    if len(value) not in lengths or not set(value) <= _HEX or set(value) == {"0"}:
        return None
    return value


def _sampled(value: str) -> bool | None:
    # "d" (debug) forces sampling; Envoy also takes "true" for 1
    if value in ("1", "d", "true"):
        return True
    if value in ("0", "false"):
        return False
    return None


def _from_multi(headers: Headers) -> SpanContext | None:
    trace = get_header(headers, b"x-b3-traceid")
    span = get_header(headers, b"x-b3-spanid")
    if not trace or not span:
        return None
    # x-b3-flags (debug) does not sample the request, as in Envoy: only x-b3-sampled does
    sampled_raw = get_header(headers, b"x-b3-sampled")
    sampled = _sampled(sampled_raw.decode("latin-1")) if sampled_raw is not None else None
    trace_id = _hex_id(trace.decode("latin-1"), (16, 32))
    span_id = _hex_id(span.decode("latin-1"), (16,))
    if trace_id is None or span_id is None:
        raise InvalidContext(f"invalid x-b3-traceid / x-b3-spanid {trace!r} {span!r}")
    parent = get_header(headers, b"x-b3-parentspanid")
    parent_id = None
    if parent:
        parent_id = _hex_id(parent.decode("latin-1"), (16,))
        if parent_id is None:
            raise InvalidContext(f"invalid x-b3-parentspanid {parent!r}")
    return SpanContext(trace_id, span_id, parent_id, sampled, Propagation.B3_MULTI)


def _from_single(value: str) -> SpanContext:
    parts = value.strip().split("-")
    if len(parts) < 2 or len(parts) > 4:
        raise InvalidContext(f"invalid b3 header {value!r}")
    trace_id = _hex_id(parts[0], (16, 32))
    span_id = _hex_id(parts[1], (16,))
    parent_id = _hex_id(parts[3], (16,)) if len(parts) > 3 else None
    sampled = _sampled(parts[2]) if len(parts) > 2 else None
    if trace_id is None or span_id is None or (len(parts) > 3 and parent_id is None):
        raise InvalidContext(f"invalid b3 header {value!r}")
    if len(parts) > 2 and sampled is None:
        raise InvalidContext(f"invalid sampling state in b3 header {value!r}")
    return SpanContext(trace_id, span_id, parent_id, sampled, Propagation.B3_SINGLE)


def _from_traceparent(value: str) -> SpanContext | None:
    parts = value.strip().lower().split("-")
    if len(parts) < 4 or parts[0] == "ff" or len(parts[0]) != 2 or not set(parts[0]) <= _HEX:
        return None
    if parts[0] == "00" and len(parts) != 4:
        return None
    trace_id = _hex_id(parts[1], (32,))
    span_id = _hex_id(parts[2], (16,))
    if trace_id is None or span_id is None or len(parts[3]) != 2 or not set(parts[3]) <= _HEX:
        return None
    return SpanContext(trace_id, span_id, None, bool(int(parts[3], 16) & 1), Propagation.W3C)


def extract(headers: Headers, *, w3c: bool = False) -> SpanContext | None:
    """The incoming context: B3 first, the single header before the multi ones; then, with
    ``w3c``, ``traceparent``. Raises :class:`InvalidContext` for B3 headers that do not
    parse; an unparsable ``traceparent`` is passed over."""
    single = get_header(headers, _SINGLE)
    if single is not None:
        text = single.decode("latin-1").strip()
        if text not in ("0", "1", "d"):  # a bare sampling decision carries no context
            return _from_single(text)
    else:
        found = _from_multi(headers)
        if found is not None:
            return found
    if w3c:
        parent = get_header(headers, _TRACEPARENT)
        if parent is not None:
            return _from_traceparent(parent.decode("latin-1"))
    return None


def single_header(headers: Headers) -> bool:
    """Whether the request used the single ``b3`` header (its answer then uses it too)."""
    return get_header(headers, _SINGLE) is not None


def sampling_hint(headers: Headers, *, w3c: bool = False) -> bool | None:
    """The sender's sampling decision, wherever it is (Envoy reads ``x-b3-sampled``, then the
    single ``b3`` header, then, with ``w3c``, the ``traceparent`` flags), even when the
    context itself came in another header. None: the proxy decides."""
    value = get_header(headers, b"x-b3-sampled")
    if value is not None:
        return _sampled(value.decode("latin-1"))
    single = get_header(headers, _SINGLE)
    if single is not None:
        parts = single.decode("latin-1").strip().split("-")
        if len(parts) == 1:
            return _sampled(parts[0])
        if len(parts) > 2:
            return _sampled(parts[2])
    if w3c:
        parent = get_header(headers, _TRACEPARENT)
        found = _from_traceparent(parent.decode("latin-1")) if parent is not None else None
        if found is not None:
            return found.sampled
    return None


def inject(
    headers: Headers,
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    sampled: bool,
    propagation: Propagation,
    *,
    w3c: bool = False,
) -> None:
    """Replace the request's trace headers with the proxy's span."""
    flag = "1" if sampled else "0"
    if propagation is Propagation.B3_SINGLE:
        remove_headers(headers, (_SINGLE,))
        value = f"{trace_id}-{span_id}-{flag}" + (f"-{parent_id}" if parent_id else "")
        headers.append((_SINGLE, value.encode()))
    else:
        # x-b3-flags (debug) is the client's and goes on untouched, as with Envoy
        remove_headers(headers, B3[:4])
        headers.append((b"x-b3-traceid", trace_id.encode()))
        headers.append((b"x-b3-spanid", span_id.encode()))
        if parent_id:
            headers.append((b"x-b3-parentspanid", parent_id.encode()))
        headers.append((b"x-b3-sampled", flag.encode()))
    if w3c:
        remove_headers(headers, (_TRACEPARENT,))
        full = trace_id.rjust(32, "0")
        headers.append((_TRACEPARENT, f"00-{full}-{span_id}-0{flag}".encode()))
