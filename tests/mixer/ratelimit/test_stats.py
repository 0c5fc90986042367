"""The service's counters as the reference service names them, and as Prometheus reads them."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from mixer.ratelimit.stats import RateLimitStats


def test_names_and_prometheus_text() -> None:
    stats = RateLimitStats()
    stats.add("ratelimit.PATH_/productpage", "total_hits", 3)
    stats.add("ratelimit.PATH_/productpage", "over_limit", 2)
    stats.add('odd.key_with"quote', "within_limit", 1)
    stats.inc("call.should_rate_limit.redis_error")
    flat = stats.flat()
    assert flat["ratelimit.service.rate_limit.ratelimit.PATH_/productpage.over_limit"] == 2
    assert flat["ratelimit.service.call.should_rate_limit.redis_error"] == 1
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(stats.prometheus_text())
        for s in family.samples
    }
    key = (("domain", "ratelimit"), ("key", "PATH_/productpage"))
    assert samples[("ratelimit_service_rate_limit_over_limit_total", key)] == 2
    assert samples[("ratelimit_service_call_should_rate_limit_redis_error_total", ())] == 1
    odd = (("domain", "odd"), ("key", 'key_with"quote'))
    assert samples[("ratelimit_service_rate_limit_within_limit_total", odd)] == 1
