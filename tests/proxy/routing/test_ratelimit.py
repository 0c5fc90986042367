import random

import pytest

from proxy.config.model import LocalRateLimitConfig
from proxy.config.model import TokenBucket as TokenBucketConfig
from proxy.routing.ratelimit import LocalRateLimiter, RateLimitDecision, TokenBucket
from pymesh.errors import ValidationError

from ._fakes import FakeClock


def test_bucket_starts_full_and_empties():
    clock = FakeClock()
    b = TokenBucket(3, 1, 1.0, clock)
    assert [b.try_consume() for _ in range(4)] == [True, True, True, False]
    assert b.remaining() == 0


def test_bucket_refills_lazily_at_the_fill_rate():
    clock = FakeClock()
    b = TokenBucket(10, 5, 1.0, clock)  # 5 tokens/s
    for _ in range(10):
        assert b.try_consume()
    assert not b.try_consume()
    clock.advance(0.2)  # one token
    assert b.try_consume()
    assert not b.try_consume()
    assert b.next_token_in() == pytest.approx(0.2)
    clock.advance(100.0)  # never more than max_tokens
    assert b.remaining() == 10
    assert sum(b.try_consume() for _ in range(20)) == 10


def test_long_run_rate():
    clock = FakeClock()
    b = TokenBucket(1, 10, 1.0, clock)
    allowed = 0
    for _ in range(1000):  # 100 s of calls every 100 ms
        clock.advance(0.1)
        allowed += b.try_consume()
    assert allowed == 1000
    allowed = 0
    for _ in range(1000):  # calls every 10 ms: capped at 10/s
        clock.advance(0.01)
        allowed += b.try_consume()
    assert 99 <= allowed <= 101


@pytest.mark.parametrize(
    ("max_tokens", "per_fill", "interval"), [(0, 1, 1.0), (1, 0, 1.0), (1, 1, 0.049)]
)
def test_invalid_buckets(max_tokens, per_fill, interval):
    with pytest.raises(ValidationError):
        TokenBucket(max_tokens, per_fill, interval, FakeClock())


def test_local_rate_limiter_decisions():
    clock = FakeClock()
    cfg = LocalRateLimitConfig(
        stat_prefix="rl",
        token_bucket=TokenBucketConfig(max_tokens=1, tokens_per_fill=1, fill_interval=1.0),
        filter_enabled=1.0,
        filter_enforced=1.0,
    )
    rl = LocalRateLimiter(cfg, clock, random.Random(1))
    assert rl.check() is RateLimitDecision.OK
    assert rl.check() is RateLimitDecision.LIMITED
    assert (rl.enabled, rl.ok, rl.rate_limited, rl.enforced) == (2, 1, 1, 1)
    shadow = LocalRateLimiter(
        LocalRateLimitConfig(stat_prefix="rl", token_bucket=cfg.token_bucket, filter_enabled=1.0),
        clock,
        random.Random(1),
    )
    shadow.check()
    assert shadow.check() is RateLimitDecision.LIMITED_NOT_ENFORCED
    # Envoy's defaults: not enabled at all
    off = LocalRateLimiter(LocalRateLimitConfig(stat_prefix="rl"), clock, random.Random(1))
    assert off.check() is RateLimitDecision.DISABLED


def _task_limiter(clock, always_default=True):
    """The local limits of Istio's local-rate-limit-service sample: 100/min for the
    workload, 10/min for /productpage (descriptor header_match=productpage)."""
    from proxy.config.model import LocalRateLimitDescriptor

    per_minute = TokenBucketConfig(max_tokens=100, tokens_per_fill=100, fill_interval=60.0)
    productpage = TokenBucketConfig(max_tokens=10, tokens_per_fill=10, fill_interval=60.0)
    cfg = LocalRateLimitConfig(
        stat_prefix="rl",
        token_bucket=per_minute,
        filter_enabled=1.0,
        filter_enforced=1.0,
        descriptors=(LocalRateLimitDescriptor((("header_match", "productpage"),), productpage),),
        always_consume_default_token_bucket=always_default,
    )
    return LocalRateLimiter(cfg, clock, random.Random(1))


PRODUCTPAGE = ((("remote_address", "127.0.0.1"),), (("header_match", "productpage"),))
OTHER = ((("remote_address", "127.0.0.1"),),)


def test_descriptor_bucket_limits_its_requests_and_reports_itself():
    clock = FakeClock()
    limiter = _task_limiter(clock)
    for _ in range(10):
        decision, context = limiter.check_descriptors(PRODUCTPAGE)
        assert decision is RateLimitDecision.OK
    assert context.x_ratelimit() == (10, 0, 6)  # a token every 6 s
    decision, context = limiter.check_descriptors(PRODUCTPAGE)
    assert decision is RateLimitDecision.LIMITED and context.max_tokens == 10
    # other paths use the workload's bucket, which the productpage requests also drew from
    decision, context = limiter.check_descriptors(OTHER)
    assert decision is RateLimitDecision.OK
    assert context.x_ratelimit()[:2] == (100, 89)


def test_descriptor_match_without_the_default_bucket():
    clock = FakeClock()
    limiter = _task_limiter(clock, always_default=False)
    for _ in range(10):
        limiter.check_descriptors(PRODUCTPAGE)
    _, context = limiter.check_descriptors(OTHER)
    assert context.x_ratelimit()[:2] == (100, 99)
