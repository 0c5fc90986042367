"""Retries and timeouts: the ``x-envoy-*`` request controls, Envoy's final timeout rules and
``RetryState`` (Envoy's ``RetryStateImpl``), with its fully jittered exponential back-off.

The router parses the controls once per request, strips them before forwarding (every name in
``ENVOY_REQUEST_CONTROL_HEADERS``), computes the timeouts, and creates a ``RetryState`` when
the route or the request asks for retries (``RetryState.create`` returns None otherwise).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from proxy.config.model import HeaderMatcher, RetryPolicy
from proxy.routing.circuit_breaker import ResourceLimits
from proxy.routing.header_match import Headers, get_header, header_matches, headers_match
from proxy.routing.header_match import parse_int as _parse_int

__all__ = [
    "ENVOY_REQUEST_CONTROL_HEADERS",
    "EnvoyRequestControls",
    "ResetKind",
    "RetryState",
    "RetryStatus",
    "Timeouts",
    "final_timeouts",
    "parse_envoy_request_controls",
]

H_RETRY_ON = b"x-envoy-retry-on"
H_RETRY_GRPC_ON = b"x-envoy-retry-grpc-on"
H_MAX_RETRIES = b"x-envoy-max-retries"
H_RETRIABLE_STATUS_CODES = b"x-envoy-retriable-status-codes"
H_RETRIABLE_HEADER_NAMES = b"x-envoy-retriable-header-names"
H_RQ_TIMEOUT = b"x-envoy-upstream-rq-timeout-ms"
H_PER_TRY_TIMEOUT = b"x-envoy-upstream-rq-per-try-timeout-ms"
H_EXPECTED_TIMEOUT = b"x-envoy-expected-rq-timeout-ms"
H_TIMEOUT_ALT_RESPONSE = b"x-envoy-upstream-rq-timeout-alt-response"
H_HEDGE = b"x-envoy-hedge-on-per-try-timeout"

# The request headers the router consumes (and must not forward).
ENVOY_REQUEST_CONTROL_HEADERS = frozenset(
    {
        H_RETRY_ON,
        H_RETRY_GRPC_ON,
        H_MAX_RETRIES,
        H_RETRIABLE_STATUS_CODES,
        H_RETRIABLE_HEADER_NAMES,
        H_RQ_TIMEOUT,
        H_PER_TRY_TIMEOUT,
        H_TIMEOUT_ALT_RESPONSE,
        H_HEDGE,
    }
)

_5XX = 1
_GATEWAY_ERROR = 2
_RESET = 4
_RESET_BEFORE_REQUEST = 8
_CONNECT_FAILURE = 16
_ENVOY_RATELIMITED = 32
_RETRIABLE_4XX = 64
_REFUSED_STREAM = 128
_RETRIABLE_STATUS_CODES = 256
_RETRIABLE_HEADERS = 512
# gRPC conditions: a trailers-only response (grpc-status in the headers) with that status.
_GRPC_CANCELLED = 1 << 10
_GRPC_DEADLINE_EXCEEDED = 1 << 11
_GRPC_INTERNAL = 1 << 12
_GRPC_RESOURCE_EXHAUSTED = 1 << 13
_GRPC_UNAVAILABLE = 1 << 14
_GRPC_ANY = (
    _GRPC_CANCELLED
    | _GRPC_DEADLINE_EXCEEDED
    | _GRPC_INTERNAL
    | _GRPC_RESOURCE_EXHAUSTED
    | _GRPC_UNAVAILABLE
)
# grpc-status value (as received) → the condition that retries it.
_GRPC_STATUS_FLAGS = {
    b"1": _GRPC_CANCELLED,
    b"4": _GRPC_DEADLINE_EXCEEDED,
    b"13": _GRPC_INTERNAL,
    b"8": _GRPC_RESOURCE_EXHAUSTED,
    b"14": _GRPC_UNAVAILABLE,
}

_GRPC_FLAGS = {
    "cancelled": _GRPC_CANCELLED,
    "deadline-exceeded": _GRPC_DEADLINE_EXCEEDED,
    "internal": _GRPC_INTERNAL,
    "resource-exhausted": _GRPC_RESOURCE_EXHAUSTED,
    "unavailable": _GRPC_UNAVAILABLE,
}

_FLAGS = {
    "5xx": _5XX,
    "gateway-error": _GATEWAY_ERROR,
    "reset": _RESET,
    "reset-before-request": _RESET_BEFORE_REQUEST,
    "connect-failure": _CONNECT_FAILURE,
    "envoy-ratelimited": _ENVOY_RATELIMITED,
    "retriable-4xx": _RETRIABLE_4XX,
    "refused-stream": _REFUSED_STREAM,
    "retriable-status-codes": _RETRIABLE_STATUS_CODES,
    "retriable-headers": _RETRIABLE_HEADERS,
}


@dataclass(frozen=True, slots=True)
class EnvoyRequestControls:
    """The ``x-envoy-*`` request headers that steer the router; durations in seconds.
    Unparseable values are ignored, as Envoy does."""

    retry_on: frozenset[str] = frozenset()
    retry_grpc_on: frozenset[str] = frozenset()
    max_retries: int | None = None
    retriable_status_codes: tuple[int, ...] = ()
    retriable_header_names: tuple[bytes, ...] = ()
    upstream_rq_timeout: float | None = None
    per_try_timeout: float | None = None
    expected_rq_timeout: float | None = None
    timeout_alt_response: bool = False
    hedge_on_per_try_timeout: bool = False


def _csv(value: bytes) -> list[bytes]:
    return [t for t in (p.strip() for p in value.split(b",")) if t]


def _ms(value: bytes | None) -> float | None:
    if value is None:
        return None
    n = _parse_int(value)
    return n / 1000.0 if n is not None and n >= 0 else None


def parse_envoy_request_controls(headers: Headers) -> EnvoyRequestControls | None:
    """Controls present in ``headers`` (first value of each; the retriable lists accept
    repeated headers), or None when the request carries none."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        if name.startswith(b"x-envoy-") and (
            name in ENVOY_REQUEST_CONTROL_HEADERS or name == H_EXPECTED_TIMEOUT
        ):
            old = found.get(name)
            found[name] = value if old is None else old + b"," + value
    if not found:
        return None
    max_retries = None
    if (raw := found.get(H_MAX_RETRIES)) is not None:
        n = _parse_int(raw)
        max_retries = n if n is not None and n >= 0 else None
    codes: list[int] = []
    if (raw := found.get(H_RETRIABLE_STATUS_CODES)) is not None:
        for token in _csv(raw):
            n = _parse_int(token)
            if n is not None and n >= 0:
                codes.append(n)
    retry_on = frozenset(t.decode("latin-1") for t in _csv(found.get(H_RETRY_ON, b"")))
    return EnvoyRequestControls(
        retry_on=retry_on,
        retry_grpc_on=frozenset(t.decode("latin-1") for t in _csv(found.get(H_RETRY_GRPC_ON, b""))),
        max_retries=max_retries,
        retriable_status_codes=tuple(codes),
        retriable_header_names=tuple(_csv(found.get(H_RETRIABLE_HEADER_NAMES, b""))),
        upstream_rq_timeout=_ms(found.get(H_RQ_TIMEOUT)),
        per_try_timeout=_ms(found.get(H_PER_TRY_TIMEOUT)),
        expected_rq_timeout=_ms(found.get(H_EXPECTED_TIMEOUT)),
        timeout_alt_response=H_TIMEOUT_ALT_RESPONSE in found,
        hedge_on_per_try_timeout=found.get(H_HEDGE, b"").strip() == b"true",
    )


@dataclass(frozen=True, slots=True)
class Timeouts:
    """``None`` means no timeout. ``timeout_status`` is what a global timeout answers (504,
    or 204 with ``x-envoy-upstream-rq-timeout-alt-response``)."""

    global_timeout: float | None
    per_try_timeout: float | None
    timeout_status: int = 504

    @property
    def expected_rq_timeout_ms(self) -> int | None:
        """Value for the ``x-envoy-expected-rq-timeout-ms`` header sent upstream."""
        t = self.per_try_timeout if self.per_try_timeout is not None else self.global_timeout
        return None if t is None else int(t * 1000)


def final_timeouts(
    route_timeout: float,
    per_try_timeout: float | None,
    controls: EnvoyRequestControls | None,
    *,
    respect_expected_rq_timeout: bool = False,
) -> Timeouts:
    """Envoy's ``FilterUtility::finalTimeout`` (gRPC timeouts aside): request headers override
    the route's timeout and per-try timeout; a per-try timeout not shorter than a (non-zero)
    global timeout is dropped. A timeout of 0 disables it."""
    global_t = route_timeout
    per_try = per_try_timeout or 0.0
    alt = False
    if controls is not None:
        if respect_expected_rq_timeout and controls.expected_rq_timeout is not None:
            global_t = controls.expected_rq_timeout
        elif not respect_expected_rq_timeout and controls.upstream_rq_timeout is not None:
            global_t = controls.upstream_rq_timeout
        if controls.per_try_timeout is not None:
            per_try = controls.per_try_timeout
        alt = controls.timeout_alt_response
    if global_t and per_try >= global_t:
        per_try = 0.0
    return Timeouts(global_t or None, per_try or None, 204 if alt else 504)


class ResetKind(StrEnum):
    CONNECT_FAILURE = "connect_failure"
    RESET = "reset"
    REFUSED_STREAM = "refused_stream"
    TIMEOUT = "timeout"  # per-try timeout: Envoy resets the attempt locally
    OVERFLOW = "overflow"  # circuit breaker: never retried


class RetryStatus(StrEnum):
    NO = "no"
    YES = "yes"
    LIMIT_EXCEEDED = "limit_exceeded"  # upstream_rq_retry_limit_exceeded
    OVERFLOW = "overflow"  # upstream_rq_retry_overflow


class RetryState:
    """Per-request retry bookkeeping. Ask ``decide_response``/``decide_reset`` (or the boolean
    ``should_retry_*``) after each failed attempt; on YES wait ``next_backoff()`` seconds and
    try again, passing ``exclude``/``host_selection_attempts`` to the load balancer. Call
    ``release()`` when the request ends. ``retry_succeeded`` turns True when an attempt that
    followed a retry was not retried itself (Envoy's ``upstream_rq_retry_success``)."""

    __slots__ = (
        "_armed",
        "_attempted",
        "_backoff_max_ms",
        "_holding",
        "_next_ms",
        "_retriable_headers",
        "_rng",
        "flags",
        "host_selection_attempts",
        "limits",
        "remaining",
        "retriable_status_codes",
        "retry_succeeded",
    )

    def __init__(
        self,
        policy: RetryPolicy,
        controls: EnvoyRequestControls | None,
        rng: random.Random,
        *,
        limits: ResourceLimits | None = None,
        flags: int | None = None,
    ) -> None:
        self._rng = rng
        self.limits = limits
        self.flags = flags if flags is not None else _flags_of(policy, controls, None)
        self.remaining = policy.num_retries
        if self.flags and controls is not None and controls.max_retries is not None:
            self.remaining = controls.max_retries
        codes = policy.retriable_status_codes
        headers: tuple[HeaderMatcher, ...] = policy.retriable_headers
        if controls is not None:
            if controls.retriable_status_codes:
                codes = codes.union(controls.retriable_status_codes)
            headers += tuple(
                HeaderMatcher(name=n, present_match=True) for n in controls.retriable_header_names
            )
        self.retriable_status_codes = codes
        self._retriable_headers = headers
        base_ms = max(1, int(policy.retry_back_off.base_interval * 1000))
        self._next_ms = base_ms
        self._backoff_max_ms = max(base_ms, int(policy.retry_back_off.max_interval * 1000))
        self._holding = False
        self._armed = False
        self.retry_succeeded = False
        self._attempted: frozenset[object] | None = (
            frozenset() if policy.retry_host_predicate_previous_hosts else None
        )
        self.host_selection_attempts = policy.host_selection_retry_max_attempts + 1

    @classmethod
    def create(
        cls,
        policy: RetryPolicy | None,
        controls: EnvoyRequestControls | None,
        rng: random.Random,
        *,
        request_headers: Headers | None = None,
        limits: ResourceLimits | None = None,
    ) -> RetryState | None:
        """A state when retries are possible at all, else None (Envoy allocates none)."""
        if policy is None:
            if controls is None or not controls.retry_on:
                return None
            policy = RetryPolicy(retry_on=frozenset())
        flags = _flags_of(policy, controls, request_headers)
        if not flags:
            return None
        return cls(policy, controls, rng, limits=limits, flags=flags)

    # -- previous hosts -------------------------------------------------------------------
    def on_host_attempted(self, host: object) -> None:
        if self._attempted is not None:
            self._attempted = self._attempted | {host}

    @property
    def exclude(self) -> frozenset[object] | None:
        """Hosts the load balancer should avoid (previous-hosts predicate), or None."""
        return self._attempted or None

    # -- decisions ------------------------------------------------------------------------
    def would_retry_response(self, status: int, headers: Headers) -> bool:
        flags = self.flags
        overloaded = ratelimited = False
        for name, _ in headers:
            if name == b"x-envoy-overloaded":
                overloaded = True
            elif name == b"x-envoy-ratelimited":
                ratelimited = True
        if overloaded:
            return False
        if flags & _GRPC_ANY:
            grpc_status = get_header(headers, b"grpc-status")
            if grpc_status is not None and flags & _GRPC_STATUS_FLAGS.get(grpc_status, 0):
                return True
        if ratelimited:
            # Rate limited by an upstream Envoy: retried only under envoy-ratelimited.
            return bool(flags & _ENVOY_RATELIMITED)
        if flags & _5XX and 500 <= status < 600:
            return True
        if flags & _GATEWAY_ERROR and 502 <= status <= 504:
            return True
        if flags & _RETRIABLE_4XX and status == 409:
            return True
        if flags & _RETRIABLE_STATUS_CODES and status in self.retriable_status_codes:
            return True
        if flags & _RETRIABLE_HEADERS:
            for m in self._retriable_headers:
                if header_matches(m, get_header(headers, m.name)):
                    return True
        return False

    def would_retry_reset(self, kind: ResetKind, *, request_sent: bool = True) -> bool:
        flags = self.flags
        if kind == ResetKind.OVERFLOW:
            return False
        if kind == ResetKind.CONNECT_FAILURE:
            if flags & _CONNECT_FAILURE:
                return True
            request_sent = False
        # Envoy counts any reset as a would-be 5xx / gateway error.
        if flags & (_5XX | _GATEWAY_ERROR | _RESET):
            return True
        if flags & _RESET_BEFORE_REQUEST and not request_sent:
            return True
        return bool(flags & _REFUSED_STREAM and kind == ResetKind.REFUSED_STREAM)

    def decide_response(self, status: int, headers: Headers) -> RetryStatus:
        return self._decide(self.would_retry_response(status, headers))

    def decide_reset(self, kind: ResetKind, *, request_sent: bool = True) -> RetryStatus:
        return self._decide(self.would_retry_reset(kind, request_sent=request_sent))

    def should_retry_response(self, status: int, headers: Headers) -> bool:
        return self.decide_response(status, headers) is RetryStatus.YES

    def should_retry_reset(self, kind: ResetKind, *, request_sent: bool = True) -> bool:
        return self.decide_reset(kind, request_sent=request_sent) is RetryStatus.YES

    def _decide(self, would_retry: bool) -> RetryStatus:
        # An armed retry whose attempt is not retried in turn is a successful retry.
        if self._armed and not would_retry:
            self.retry_succeeded = True
        self._armed = False
        self.release()
        if not would_retry:
            return RetryStatus.NO
        if self.remaining <= 0:
            return RetryStatus.LIMIT_EXCEEDED
        self.remaining -= 1
        limits = self.limits
        if limits is not None:
            if not limits.try_acquire_retry():
                return RetryStatus.OVERFLOW
            # Held until the retried attempt is decided on or the request ends, like Envoy.
            self._holding = True
        self._armed = True
        return RetryStatus.YES

    def release(self) -> None:
        """Give back the retry circuit-breaker slot, if held (also at request end)."""
        if self._holding:
            self._holding = False
            if self.limits is not None:
                self.limits.release_retry()

    def next_backoff(self) -> float:
        """Seconds to wait before the next attempt: uniform in [0, b) ms where b starts at the
        base interval and doubles per retry up to the maximum (default 25 ms and 250 ms)."""
        backoff = self._next_ms
        cap = self._backoff_max_ms
        self._next_ms = backoff * 2 if backoff < cap // 2 else cap
        return min(self._rng.randrange(backoff), cap) / 1000.0


def _flags_of(
    policy: RetryPolicy, controls: EnvoyRequestControls | None, request_headers: Headers | None
) -> int:
    # A route's retry_on takes both HTTP and gRPC conditions; the request headers each take
    # their own kind (x-envoy-retry-on HTTP, x-envoy-retry-grpc-on gRPC), as in Envoy.
    flags = 0
    for name in policy.retry_on:
        flags |= _FLAGS.get(name, 0) | _GRPC_FLAGS.get(name, 0)
    if controls is not None:
        for name in controls.retry_on:
            flags |= _FLAGS.get(name, 0)
        for name in controls.retry_grpc_on:
            flags |= _GRPC_FLAGS.get(name, 0)
    matchers: Sequence[HeaderMatcher] = policy.retriable_request_headers
    # Retries are limited to requests matching one of these.
    if (
        flags
        and matchers
        and request_headers is not None
        and not any(headers_match((m,), request_headers) for m in matchers)
    ):
        flags = 0
    return flags
