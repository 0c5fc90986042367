"""Local rate limiting: Envoy's token bucket, refilled lazily on each call (no timer).

Envoy 1.40 refills continuously (its ``AtomicTokenBucket``, the default since the
``no_timer_based_rate_limit_token_bucket`` feature flag): ``tokens_per_fill / fill_interval``
tokens per second, never more than ``max_tokens``, starting full. Older Envoys added
``tokens_per_fill`` in one step every ``fill_interval``; the long-run rate is the same, the
burst shape within an interval is not.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from enum import StrEnum

from proxy.config.model import LocalRateLimitConfig
from proxy.config.model import TokenBucket as TokenBucketConfig
from pymesh.errors import ValidationError

__all__ = ["LocalRateLimiter", "RateLimitDecision", "TokenBucket"]

# Envoy refuses faster fill timers.
MIN_FILL_INTERVAL = 0.05
# Tolerance for float drift when the bucket holds exactly the tokens asked for.
_EPSILON = 1e-9


class TokenBucket:
    """A token bucket on an injected monotonic clock (seconds).

    The state is the instant at which the bucket would have been empty; the tokens available
    are ``(now - that instant) * rate``, capped at ``max_tokens``.
    """

    __slots__ = ("_clock", "_empty_at", "_full_span", "_rate", "max_tokens")

    def __init__(
        self,
        max_tokens: int,
        tokens_per_fill: int,
        fill_interval: float,
        clock: Callable[[], float],
    ) -> None:
        if max_tokens <= 0:
            raise ValidationError("max_tokens must be greater than 0", path="token_bucket")
        if tokens_per_fill <= 0:
            raise ValidationError("tokens_per_fill must be greater than 0", path="token_bucket")
        if fill_interval < MIN_FILL_INTERVAL:
            raise ValidationError(
                "local rate limit token bucket fill timer must be >= 50ms",
                path="token_bucket.fill_interval",
            )
        self.max_tokens = max_tokens
        self._rate = tokens_per_fill / fill_interval
        self._full_span = max_tokens / self._rate
        self._clock = clock
        self._empty_at = clock() - self._full_span

    @classmethod
    def from_config(cls, config: TokenBucketConfig, clock: Callable[[], float]) -> TokenBucket:
        return cls(config.max_tokens, config.tokens_per_fill, config.fill_interval, clock)

    def try_consume(self, tokens: float = 1.0) -> bool:
        """Take ``tokens`` if the bucket holds that many."""
        now = self._clock()
        empty_at = self._empty_at
        floor = now - self._full_span
        if empty_at < floor:
            empty_at = floor
        if (now - empty_at) * self._rate + _EPSILON < tokens:
            return False
        self._empty_at = empty_at + tokens / self._rate
        return True

    def remaining(self) -> float:
        """Tokens available now (fractional while refilling)."""
        now = self._clock()
        return min(float(self.max_tokens), max(0.0, (now - self._empty_at) * self._rate))

    def next_token_in(self) -> float:
        """Seconds until one token is available (0 when one is)."""
        missing = 1.0 - self.remaining()
        return max(0.0, missing / self._rate)

    @property
    def fill_rate(self) -> float:
        return self._rate

    def x_ratelimit(self) -> tuple[int, int, int]:
        """``x-ratelimit-limit``, ``-remaining`` and ``-reset`` as Envoy's local filter sends
        them: whole tokens, and the seconds until the next token, rounded up."""
        # The epsilons absorb float drift in the bucket's arithmetic (88.9999… is 89 tokens,
        # 30.000001 s is 30 s); Envoy rounds the wait up to whole seconds.
        return (
            self.max_tokens,
            int(self.remaining() + _EPSILON),
            max(0, math.ceil(self.next_token_in() - 1e-6)),
        )


class RateLimitDecision(StrEnum):
    DISABLED = "disabled"  # filter_enabled rolled off: not counted
    OK = "ok"
    LIMITED_NOT_ENFORCED = "limited_not_enforced"  # add the not-enforced request headers
    LIMITED = "limited"  # answer with config.status


class LocalRateLimiter:
    """The ``envoy.filters.http.local_ratelimit`` decision for one bucket (filter-wide, per
    route, or per downstream connection: the runtime decides which instance to ask).

    Counters are Envoy's ``<stat_prefix>.http_local_rate_limit.*``.
    """

    __slots__ = (
        "_always_default",
        "_descriptors",
        "_random",
        "bucket",
        "config",
        "enabled",
        "enforced",
        "ok",
        "rate_limited",
    )

    def __init__(
        self, config: LocalRateLimitConfig, clock: Callable[[], float], rng: random.Random
    ) -> None:
        self.config = config
        self._random = rng.random
        tb = config.token_bucket
        self.bucket = TokenBucket.from_config(tb, clock) if tb is not None else None
        # The strictest (slowest filling) descriptor is consumed first, as in Envoy, so that a
        # request it refuses takes no token from the others.
        buckets = [
            (d.entries, TokenBucket.from_config(d.token_bucket, clock)) for d in config.descriptors
        ]
        buckets.sort(key=lambda item: item[1].fill_rate)
        self._descriptors = tuple(buckets)
        self._always_default = config.always_consume_default_token_bucket
        self.enabled = 0
        self.ok = 0
        self.rate_limited = 0
        self.enforced = 0

    def check(self) -> RateLimitDecision:
        cfg = self.config
        if not _roll(self._random, cfg.filter_enabled):
            return RateLimitDecision.DISABLED
        self.enabled += 1
        bucket = self.bucket
        if bucket is None or bucket.try_consume():
            self.ok += 1
            return RateLimitDecision.OK
        self.rate_limited += 1
        if not _roll(self._random, cfg.filter_enforced):
            return RateLimitDecision.LIMITED_NOT_ENFORCED
        self.enforced += 1
        return RateLimitDecision.LIMITED

    def check_descriptors(
        self, request: Sequence[tuple[tuple[str, str], ...]]
    ) -> tuple[RateLimitDecision, TokenBucket | None]:
        """:meth:`check` for a request whose route's actions built ``request`` descriptors;
        also the bucket whose state the ``x-ratelimit-*`` headers report (None: none)."""
        cfg = self.config
        if not _roll(self._random, cfg.filter_enabled):
            return RateLimitDecision.DISABLED, None
        self.enabled += 1
        allowed, context = self._allowed(request)
        if allowed:
            self.ok += 1
            return RateLimitDecision.OK, context
        self.rate_limited += 1
        if not _roll(self._random, cfg.filter_enforced):
            return RateLimitDecision.LIMITED_NOT_ENFORCED, context
        self.enforced += 1
        return RateLimitDecision.LIMITED, context

    def _allowed(
        self, request: Sequence[tuple[tuple[str, str], ...]]
    ) -> tuple[bool, TokenBucket | None]:
        matched = [bucket for entries, bucket in self._descriptors if entries in request]
        for bucket in matched:
            if not bucket.try_consume():
                return False, bucket
        first = matched[0] if matched else None
        if matched and not self._always_default:
            return True, first
        default = self.bucket
        if default is None:
            return True, first
        if not default.try_consume():
            return False, default
        return True, first or default


def _roll(rnd: Callable[[], float], fraction: float) -> bool:
    if fraction >= 1.0:
        return True
    return fraction > 0.0 and rnd() < fraction
