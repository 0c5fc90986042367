import pytest

from proxy.config.model import (
    CircuitBreakers,
    CircuitBreakerThresholds,
    RetryBudget,
    RoutingPriority,
)
from proxy.routing.circuit_breaker import ClusterResourceLimits, ResourceLimits

KINDS = [
    ("connection", "max_connections", "upstream_cx_overflow", "remaining_cx"),
    ("pending", "max_pending_requests", "upstream_rq_pending_overflow", "remaining_pending"),
    ("request", "max_requests", "upstream_rq_pending_overflow", "remaining_rq"),
    ("retry", "max_retries", "upstream_rq_retry_overflow", "remaining_retries"),
]


@pytest.mark.parametrize(("kind", "field", "overflow", "remaining"), KINDS)
def test_acquire_release_and_overflow(kind, field, overflow, remaining):
    limits = ResourceLimits(CircuitBreakerThresholds(**{field: 2}))
    acquire = getattr(limits, f"try_acquire_{kind}")
    release = getattr(limits, f"release_{kind}")
    assert getattr(limits, remaining) == 2
    assert acquire() and acquire()
    assert getattr(limits, remaining) == 0
    assert not acquire()
    assert getattr(limits, overflow) == 1
    release()
    assert acquire()
    release()
    release()
    release()  # never below zero
    assert getattr(limits, remaining) == 2


def test_defaults_are_envoys():
    limits = ResourceLimits()
    assert (limits.max_connections, limits.max_pending_requests, limits.max_requests) == (
        1024,
        1024,
        1024,
    )
    assert limits.retry_limit == 3


def test_retry_budget_replaces_max_retries():
    limits = ResourceLimits(
        CircuitBreakerThresholds(
            max_retries=100, retry_budget=RetryBudget(budget_percent=0.2, min_retry_concurrency=3)
        )
    )
    assert limits.retry_limit == 3  # the floor
    for _ in range(40):
        limits.try_acquire_request()
    for _ in range(10):
        limits.try_acquire_pending()
    assert limits.retry_limit == 10  # 20 % of 50
    for _ in range(10):
        assert limits.try_acquire_retry()
    assert not limits.try_acquire_retry()
    assert limits.upstream_rq_retry_overflow == 1


def test_open_and_remaining_gauges():
    limits = ResourceLimits(CircuitBreakerThresholds(max_connections=1))
    assert limits.open_gauges()["cx_open"] == 0
    limits.try_acquire_connection()
    assert limits.open_gauges() == {
        "cx_open": 1,
        "rq_pending_open": 0,
        "rq_open": 0,
        "rq_retry_open": 0,
    }
    assert limits.remaining_gauges()["remaining_cx"] == 0


def test_cluster_limits_per_priority():
    breakers = CircuitBreakers(
        default=CircuitBreakerThresholds(max_requests=1),
        high=CircuitBreakerThresholds(priority=RoutingPriority.HIGH, max_requests=5),
    )
    limits = ClusterResourceLimits(breakers)
    assert limits.for_priority(False).max_requests == 1
    assert limits.for_priority(True).max_requests == 5
    assert limits.for_priority(False) is not limits.for_priority(True)
