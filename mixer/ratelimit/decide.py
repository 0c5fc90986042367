"""``ShouldRateLimit`` as pure functions: which counters a request touches, then the answer.

A call is three steps, and only the middle one does I/O::

    todo = plan(config, request, now)              # limits found, counter keys, hits
    counts = await counters.increment(todo.hits)   # memory or Redis
    answer = decide(todo, counts, now, stats)      # statuses, overall code, headers

The semantics are the reference ``ratelimit`` service's with fixed windows: a counter per
domain, descriptor entries (the request's values, so a key-only rule counts each value
apart) and window start; a descriptor is over the limit when the counter *after* adding its
hits exceeds ``requests_per_unit``; ``shadow_mode`` limits answer OK but count as over;
``unlimited`` limits touch no counter; a limit named in another matched limit's ``replaces``
is skipped. ``now`` is Unix time in whole seconds (wall clock, so replicas agree on windows).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

from mixer.ratelimit.config import RateLimit, RateLimitConfig, Unit
from mixer.ratelimit.stats import RateLimitStats

__all__ = [
    "MAX_REMAINING",
    "Code",
    "Decision",
    "Descriptor",
    "DescriptorStatus",
    "HeaderNames",
    "Hit",
    "Plan",
    "Request",
    "RequestError",
    "decide",
    "plan",
]

MAX_REMAINING = 2**32 - 1
# The reference service's NEAR_LIMIT_RATIO default.
NEAR_LIMIT_RATIO = 0.8


class RequestError(Exception):
    """A request the service refuses (empty domain, no descriptors): a gRPC error."""


class Code(enum.IntEnum):
    """``RateLimitResponse.Code``."""

    UNKNOWN = 0
    OK = 1
    OVER_LIMIT = 2


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One request descriptor. ``limit`` is the caller's own override (requests, unit);
    ``hits_addend`` the per-descriptor addend (None: the request's)."""

    entries: tuple[tuple[str, str], ...]
    limit: tuple[int, Unit] | None = None
    hits_addend: int | None = None


@dataclass(frozen=True, slots=True)
class Request:
    domain: str
    descriptors: tuple[Descriptor, ...]
    hits_addend: int = 0


@dataclass(frozen=True, slots=True)
class Hit:
    """Add ``hits`` to counter ``key``, which lives ``ttl`` seconds (its window)."""

    key: str
    hits: int
    ttl: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What :func:`plan` found: per descriptor its limit (None: not limited), whether it
    is ``unlimited``, its hits, and the index of its counter in ``hits`` (-1: none)."""

    limits: tuple[RateLimit | None, ...]
    unlimited: tuple[bool, ...]
    addends: tuple[int, ...]
    counter_index: tuple[int, ...]
    hits: tuple[Hit, ...]


@dataclass(frozen=True, slots=True)
class DescriptorStatus:
    """``RateLimitResponse.DescriptorStatus``; ``reset`` is whole seconds, None without a
    limit."""

    code: Code
    limit: RateLimit | None = None
    remaining: int = 0
    reset: int | None = None


@dataclass(frozen=True, slots=True)
class HeaderNames:
    """The service's own response headers (the reference service's
    ``LIMIT_RESPONSE_HEADERS_ENABLED``), for the descriptor closest to its limit."""

    limit: str = "RateLimit-Limit"
    remaining: str = "RateLimit-Remaining"
    reset: str = "RateLimit-Reset"


@dataclass(frozen=True, slots=True)
class Decision:
    code: Code
    statuses: tuple[DescriptorStatus, ...]
    response_headers: tuple[tuple[str, str], ...] = ()


def plan(config: RateLimitConfig, request: Request, now: int, prefix: str = "") -> Plan:
    """The limits of ``request``'s descriptors and the counters to add to. ``prefix`` starts
    every counter key (to share one Redis between meshes)."""
    if not request.domain:
        raise RequestError("rate limit domain must not be empty")
    if not request.descriptors:
        raise RequestError("rate limit descriptor list must not be empty")
    found: list[RateLimit | None] = []
    replaced: set[str] = set()
    for descriptor in request.descriptors:
        if descriptor.limit is not None:
            requests, unit = descriptor.limit
            limit: RateLimit | None = RateLimit(requests, unit, _override_key(request, descriptor))
        else:
            limit = config.find(request.domain, descriptor.entries)
        if limit is not None:
            replaced.update(limit.replaces)
        found.append(limit)
    default_addend = max(1, request.hits_addend)
    limits: list[RateLimit | None] = []
    unlimited: list[bool] = []
    addends: list[int] = []
    counter_index: list[int] = []
    hits: list[Hit] = []
    for descriptor, limit in zip(request.descriptors, found, strict=True):
        addend = default_addend if descriptor.hits_addend is None else descriptor.hits_addend
        is_unlimited = limit is not None and limit.unlimited
        if limit is not None and (is_unlimited or (limit.name and limit.name in replaced)):
            limit = None
        limits.append(limit)
        unlimited.append(is_unlimited)
        addends.append(addend)
        if limit is None:
            counter_index.append(-1)
            continue
        window = limit.unit.seconds
        counter_index.append(len(hits))
        hits.append(
            Hit(_counter_key(prefix, request.domain, descriptor, now, window), addend, window)
        )
    return Plan(tuple(limits), tuple(unlimited), tuple(addends), tuple(counter_index), tuple(hits))


def decide(
    todo: Plan,
    counts: Sequence[int],
    now: int,
    stats: RateLimitStats,
    headers: HeaderNames | None = None,
) -> Decision:
    """The answer, given each counter's value after the increment (``counts[i]`` for
    ``todo.hits[i]``). Updates the per-limit statistics in ``stats``."""
    statuses: list[DescriptorStatus] = []
    overall = Code.OK
    closest: DescriptorStatus | None = None
    for limit, is_unlimited, addend, index in zip(
        todo.limits, todo.unlimited, todo.addends, todo.counter_index, strict=True
    ):
        if is_unlimited:
            statuses.append(DescriptorStatus(Code.OK, remaining=MAX_REMAINING))
            continue
        if limit is None:
            statuses.append(DescriptorStatus(Code.OK))
            continue
        status = _status(limit, counts[index], addend, now, stats)
        statuses.append(status)
        if status.code is Code.OVER_LIMIT:
            overall = Code.OVER_LIMIT
            closest = status
        elif closest is None or (
            closest.code is not Code.OVER_LIMIT and status.remaining < closest.remaining
        ):
            closest = status
    response_headers: tuple[tuple[str, str], ...] = ()
    if headers is not None and closest is not None and closest.limit is not None:
        response_headers = (
            (headers.limit, str(closest.limit.requests_per_unit)),
            (headers.remaining, str(closest.remaining)),
            (headers.reset, str(closest.reset)),
        )
    return Decision(overall, tuple(statuses), response_headers)


def _status(
    limit: RateLimit, after: int, addend: int, now: int, stats: RateLimitStats
) -> DescriptorStatus:
    key = limit.stat_key
    stats.add(key, "total_hits", addend)
    threshold = limit.requests_per_unit
    near = math.floor(threshold * NEAR_LIMIT_RATIO)
    before = after - addend
    window = limit.unit.seconds
    reset = window - now % window
    if after > threshold:
        # Of the hits this call added, only those past the threshold are over the limit;
        # the ones between the near-limit mark and the threshold are near it.
        if before >= threshold:
            over = addend
        else:
            over = after - threshold
            stats.add(key, "near_limit", threshold - max(near, before))
        stats.add(key, "over_limit", over)
        if limit.shadow_mode:
            stats.add(key, "shadow_mode", over)
            return DescriptorStatus(Code.OK, limit, 0, reset)
        return DescriptorStatus(Code.OVER_LIMIT, limit, 0, reset)
    if after > near:
        stats.add(key, "near_limit", addend if before >= near else after - near)
    stats.add(key, "within_limit", addend)
    return DescriptorStatus(Code.OK, limit, threshold - after, reset)


def _counter_key(prefix: str, domain: str, descriptor: Descriptor, now: int, window: int) -> str:
    parts = [prefix, domain, "_"]
    for key, value in descriptor.entries:
        parts += (key, "_", value, "_")
    parts.append(str(now // window * window))
    return "".join(parts)


def _override_key(request: Request, descriptor: Descriptor) -> str:
    entries = ".".join(f"{k}_{v}" if v else k for k, v in descriptor.entries)
    return f"{request.domain}.{entries}"
