"""Fault injection decisions (``envoy.filters.http.fault``) for one request.

Order, as in Envoy: the ``max_active_faults`` gate (overflow skips every fault), then the
``upstream_cluster``, ``downstream_nodes`` and ``headers`` conditions, then the delay and the
abort, each rolled independently against its percentage. Envoy rolls the abort when the delay
ends; rolling both up front gives the same distribution. A request that gets any fault holds
one ``active`` fault until the runtime calls ``ActiveFaults.release()`` at stream end.

Header-controlled faults (``header_delay`` / ``header_abort``): the delay in ms comes from
``x-envoy-fault-delay-request``, the status from ``x-envoy-fault-abort-request`` (200..599;
anything else means no abort); ``x-envoy-fault-delay-request-percentage`` and
``x-envoy-fault-abort-request-percentage`` lower the configured percentage (the numerator is
``min(header, configured)`` over the configured denominator). Only the first value of each
header counts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from proxy.config.model import FaultConfig
from proxy.routing.header_match import Headers, headers_match, parse_int

__all__ = ["ActiveFaults", "FaultDecision", "decide_fault"]

H_DELAY = b"x-envoy-fault-delay-request"
H_DELAY_PERCENT = b"x-envoy-fault-delay-request-percentage"
H_ABORT = b"x-envoy-fault-abort-request"
H_ABORT_PERCENT = b"x-envoy-fault-abort-request-percentage"
H_DOWNSTREAM_NODE = b"x-envoy-downstream-service-node"


class ActiveFaults:
    """Shared by every request of one fault filter config (Envoy's ``fault.*`` stats)."""

    __slots__ = ("aborts_injected", "active", "delays_injected", "faults_overflow")

    def __init__(self) -> None:
        self.active = 0
        self.faults_overflow = 0
        self.delays_injected = 0
        self.aborts_injected = 0

    def release(self) -> None:
        """The request that held a fault ended."""
        if self.active > 0:
            self.active -= 1


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """``delay`` seconds to wait before going on, then answer ``abort_status`` if set."""

    delay: float | None
    abort_status: int | None


def _first(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _denominator(fraction: float) -> int:
    """The FractionalPercent denominator the fraction was most likely written with; the model
    keeps only the fraction, and the percentage headers are read against the denominator."""
    for d in (100, 10_000, 1_000_000):
        if abs(fraction * d - round(fraction * d)) < 1e-9:
            return d
    return 1_000_000


def _percentage(fraction: float, headers: Headers, header: bytes) -> float:
    raw = _first(headers, header)
    if raw is None:
        return fraction
    n = parse_int(raw)
    if n is None or n < 0:
        return fraction
    d = _denominator(fraction)
    return min(n, round(fraction * d)) / d


def _roll(rng: random.Random, fraction: float) -> bool:
    if fraction >= 1.0:
        return True
    return fraction > 0.0 and rng.random() < fraction


def decide_fault(
    config: FaultConfig,
    headers: Headers,
    rng: random.Random,
    faults: ActiveFaults,
    *,
    cluster: str | None = None,
) -> FaultDecision | None:
    """The faults to inject into this request, or None. ``cluster`` is the routed cluster."""
    limit = config.max_active_faults
    if limit is not None and faults.active >= limit:
        faults.faults_overflow += 1
        return None
    if config.upstream_cluster is not None and config.upstream_cluster != cluster:
        return None
    if config.downstream_nodes:
        node = _first(headers, H_DOWNSTREAM_NODE)
        if node is None or node.decode("latin-1") not in config.downstream_nodes:
            return None
    if config.headers and not headers_match(config.headers, headers):
        return None

    delay: float | None = None
    d = config.delay
    if d is not None:
        pct = (
            _percentage(d.percentage, headers, H_DELAY_PERCENT) if d.header_delay else d.percentage
        )
        if _roll(rng, pct):
            if d.header_delay:
                raw = _first(headers, H_DELAY)
                ms = parse_int(raw) if raw is not None else None
                delay = ms / 1000.0 if ms is not None and ms > 0 else None
            elif d.fixed_delay is not None and d.fixed_delay > 0:
                delay = d.fixed_delay

    status: int | None = None
    a = config.abort
    if a is not None:
        pct = (
            _percentage(a.percentage, headers, H_ABORT_PERCENT) if a.header_abort else a.percentage
        )
        if _roll(rng, pct):
            if a.header_abort:
                raw = _first(headers, H_ABORT)
                code = parse_int(raw) if raw is not None else None
                status = code if code is not None and 200 <= code < 600 else None
            else:
                status = a.http_status

    if delay is None and status is None:
        return None
    # One active fault per request however many faults it gets.
    faults.active += 1
    if delay is not None:
        faults.delays_injected += 1
    if status is not None:
        faults.aborts_injected += 1
    return FaultDecision(delay, status)
