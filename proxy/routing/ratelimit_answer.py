"""What the global rate limit filter makes of a Rate Limit Service answer: pure functions.

The filter sends the descriptors its route's actions built; the answer is OK, OVER_LIMIT or
an error (a gRPC error, a timeout, no host). Envoy's ``RateLimitFilter::complete`` then
decides: over the limit is a 429 with ``x-envoy-ratelimited: true``; an error lets the request
through unless ``failure_mode_deny`` (then ``status_on_error``, 500). The service's
``response_headers_to_add`` go on the response, its ``request_headers_to_add`` on the request
it lets through, and with ``enable_x_ratelimit_headers`` the ``x-ratelimit-*`` headers are
computed from the descriptor statuses (the one closest to its limit, and every limit's
quota policy).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["LimitStatus", "RlsAnswer", "RlsStatus", "x_ratelimit_headers"]

# RateLimitResponse.RateLimit.Unit → seconds (Envoy's convertRateLimitUnit: others are 0)
_WINDOWS = {1: 1, 2: 60, 3: 3600, 4: 86400}


class LimitStatus(enum.Enum):
    OK = "ok"
    OVER_LIMIT = "over_limit"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class RlsStatus:
    """One ``DescriptorStatus``; ``requests_per_unit`` None when it has no current limit."""

    requests_per_unit: int | None = None
    unit: int = 0
    name: str = ""
    remaining: int = 0
    reset_seconds: int = 0


@dataclass(frozen=True, slots=True)
class RlsAnswer:
    status: LimitStatus
    statuses: tuple[RlsStatus, ...] = ()
    response_headers: tuple[tuple[bytes, bytes], ...] = ()
    request_headers: tuple[tuple[bytes, bytes], ...] = ()
    error: str = ""


def x_ratelimit_headers(statuses: Sequence[RlsStatus]) -> list[tuple[bytes, bytes]]:
    """``x-ratelimit-limit`` (the closest limit, then ``, <n>;w=<window>[;name="<name>"]``
    for every limit), ``x-ratelimit-remaining`` and ``x-ratelimit-reset`` of the status with
    the least remaining; nothing when no status carries a limit."""
    closest: RlsStatus | None = None
    policy: list[str] = []
    for status in statuses:
        if status.requests_per_unit is None:
            continue
        if closest is None or status.remaining < closest.remaining:
            closest = status
        window = _WINDOWS.get(status.unit, 0)
        if window:
            part = f", {status.requests_per_unit};w={window}"
            if status.name:
                part += f';name="{status.name}"'
            policy.append(part)
    if closest is None:
        return []
    limit = f"{closest.requests_per_unit}{''.join(policy)}"
    return [
        (b"x-ratelimit-limit", limit.encode()),
        (b"x-ratelimit-remaining", str(closest.remaining).encode()),
        (b"x-ratelimit-reset", str(closest.reset_seconds).encode()),
    ]
