import random

import pytest

from proxy.config.model import (
    CircuitBreakerThresholds,
    HeaderMatcher,
    RetryBackOff,
    RetryPolicy,
    StringMatcher,
    StringMatchKind,
)
from proxy.routing.circuit_breaker import ResourceLimits
from proxy.routing.retry import (
    ENVOY_REQUEST_CONTROL_HEADERS,
    EnvoyRequestControls,
    ResetKind,
    RetryState,
    RetryStatus,
    final_timeouts,
    parse_envoy_request_controls,
)


def policy(*retry_on: str, **kw) -> RetryPolicy:
    return RetryPolicy(retry_on=frozenset(retry_on), **kw)


def state(*retry_on: str, headers=(), limits=None, **kw) -> RetryState:
    controls = parse_envoy_request_controls(list(headers))
    s = RetryState.create(policy(*retry_on, **kw), controls, random.Random(1), limits=limits)
    assert s is not None
    return s


def test_parse_controls():
    headers = [
        (b"x-envoy-retry-on", b"5xx, connect-failure"),
        (b"x-envoy-retry-grpc-on", b"cancelled"),
        (b"x-envoy-max-retries", b"4"),
        (b"x-envoy-retriable-status-codes", b"418,x, 425"),
        (b"x-envoy-retriable-header-names", b"x-retry-me"),
        (b"x-envoy-upstream-rq-timeout-ms", b"1500"),
        (b"x-envoy-upstream-rq-per-try-timeout-ms", b"bogus"),
        (b"x-envoy-upstream-rq-timeout-alt-response", b""),
        (b"other", b"1"),
    ]
    c = parse_envoy_request_controls(headers)
    assert c == EnvoyRequestControls(
        retry_on=frozenset({"5xx", "connect-failure"}),
        retry_grpc_on=frozenset({"cancelled"}),
        max_retries=4,
        retriable_status_codes=(418, 425),
        retriable_header_names=(b"x-retry-me",),
        upstream_rq_timeout=1.5,
        per_try_timeout=None,
        timeout_alt_response=True,
    )
    assert parse_envoy_request_controls([(b"host", b"a"), (b"x-envoy-internal", b"true")]) is None
    assert all(n.startswith(b"x-envoy-") for n in ENVOY_REQUEST_CONTROL_HEADERS)


@pytest.mark.parametrize(
    ("route_timeout", "per_try", "headers", "expected"),
    [
        (15.0, None, [], (15.0, None, 504)),
        (15.0, 2.0, [], (15.0, 2.0, 504)),
        (15.0, None, [(b"x-envoy-upstream-rq-timeout-ms", b"100")], (0.1, None, 504)),
        (15.0, None, [(b"x-envoy-upstream-rq-timeout-ms", b"0")], (None, None, 504)),
        (0.0, 3.0, [], (None, 3.0, 504)),
        (15.0, 2.0, [(b"x-envoy-upstream-rq-per-try-timeout-ms", b"500")], (15.0, 0.5, 504)),
        # a per-try timeout not shorter than the global one is dropped
        (1.0, 2.0, [], (1.0, None, 504)),
        (1.0, None, [(b"x-envoy-upstream-rq-per-try-timeout-ms", b"1000")], (1.0, None, 504)),
        (15.0, None, [(b"x-envoy-upstream-rq-timeout-alt-response", b"")], (15.0, None, 204)),
    ],
)
def test_final_timeouts(route_timeout, per_try, headers, expected):
    t = final_timeouts(route_timeout, per_try, parse_envoy_request_controls(headers))
    assert (t.global_timeout, t.per_try_timeout, t.timeout_status) == expected


def test_expected_timeout_header():
    c = parse_envoy_request_controls(
        [(b"x-envoy-expected-rq-timeout-ms", b"300"), (b"x-envoy-upstream-rq-timeout-ms", b"9")]
    )
    assert final_timeouts(15.0, None, c, respect_expected_rq_timeout=True).global_timeout == 0.3
    assert final_timeouts(15.0, None, c).global_timeout == 0.009
    assert final_timeouts(15.0, 2.0, None).expected_rq_timeout_ms == 2000


@pytest.mark.parametrize(
    ("retry_on", "status", "headers", "expected"),
    [
        (("5xx",), 500, [], True),
        (("5xx",), 503, [], True),
        (("5xx",), 404, [], False),
        (("gateway-error",), 500, [], False),
        (("gateway-error",), 502, [], True),
        (("gateway-error",), 504, [], True),
        (("retriable-4xx",), 409, [], True),
        (("retriable-4xx",), 429, [], False),
        (("connect-failure",), 503, [], False),
        (("5xx",), 503, [(b"x-envoy-overloaded", b"true")], False),
        (("5xx",), 429, [(b"x-envoy-ratelimited", b"true")], False),
        (("envoy-ratelimited",), 429, [(b"x-envoy-ratelimited", b"true")], True),
        (("5xx",), 503, [(b"x-envoy-ratelimited", b"true")], False),
        (("unknown-policy",), 503, [], False),
    ],
)
def test_retry_on_response(retry_on, status, headers, expected):
    s = RetryState(policy(*retry_on), None, random.Random(1))
    assert s.would_retry_response(status, headers) is expected


@pytest.mark.parametrize(
    ("retry_on", "kind", "sent", "expected"),
    [
        (("5xx",), ResetKind.CONNECT_FAILURE, False, True),
        (("5xx",), ResetKind.RESET, True, True),
        (("5xx",), ResetKind.TIMEOUT, True, True),
        (("gateway-error",), ResetKind.RESET, True, True),
        (("reset",), ResetKind.RESET, True, True),
        (("connect-failure",), ResetKind.CONNECT_FAILURE, False, True),
        (("connect-failure",), ResetKind.RESET, True, False),
        (("connect-failure",), ResetKind.TIMEOUT, True, False),
        (("refused-stream",), ResetKind.REFUSED_STREAM, True, True),
        (("refused-stream",), ResetKind.RESET, True, False),
        (("reset-before-request",), ResetKind.RESET, False, True),
        (("reset-before-request",), ResetKind.RESET, True, False),
        (("reset-before-request",), ResetKind.CONNECT_FAILURE, True, True),
        (("retriable-4xx",), ResetKind.RESET, True, False),
        (("5xx", "reset"), ResetKind.OVERFLOW, False, False),
    ],
)
def test_retry_on_reset(retry_on, kind, sent, expected):
    s = RetryState(policy(*retry_on), None, random.Random(1))
    assert s.would_retry_reset(kind, request_sent=sent) is expected


def test_retriable_status_codes_from_policy_and_header():
    s = state("retriable-status-codes", retriable_status_codes=frozenset({418}))
    assert s.would_retry_response(418, [])
    assert not s.would_retry_response(425, [])
    s = state(
        "retriable-status-codes",
        headers=[(b"x-envoy-retriable-status-codes", b"425")],
        retriable_status_codes=frozenset({418}),
    )
    assert s.would_retry_response(425, []) and s.would_retry_response(418, [])
    # the codes alone do nothing without retriable-status-codes in retry_on
    s = state("5xx", headers=[(b"x-envoy-retriable-status-codes", b"425")])
    assert not s.would_retry_response(425, [])


def test_retriable_headers():
    matcher = HeaderMatcher(
        b"x-upstream", string_match=StringMatcher(StringMatchKind.EXACT, b"retry")
    )
    s = state("retriable-headers", retriable_headers=(matcher,))
    assert s.would_retry_response(200, [(b"x-upstream", b"retry")])
    assert not s.would_retry_response(200, [(b"x-upstream", b"no")])
    s = state("retriable-headers", headers=[(b"x-envoy-retriable-header-names", b"x-a, x-b")])
    assert s.would_retry_response(200, [(b"x-b", b"")])
    assert not s.would_retry_response(200, [(b"x-c", b"")])


def test_header_retry_on_is_merged_with_the_route_policy():
    s = state("connect-failure", headers=[(b"x-envoy-retry-on", b"retriable-4xx")])
    assert s.would_retry_response(409, [])
    assert s.would_retry_reset(ResetKind.CONNECT_FAILURE, request_sent=False)


def test_create_returns_none_when_nothing_can_be_retried():
    assert RetryState.create(None, None, random.Random()) is None
    assert RetryState.create(policy(), None, random.Random()) is None
    c = parse_envoy_request_controls([(b"x-envoy-retry-on", b"5xx")])
    s = RetryState.create(None, c, random.Random())
    assert s is not None and s.remaining == 1  # Envoy's default num_retries


def test_max_retries_header_overrides_the_budget():
    s = state("5xx", headers=[(b"x-envoy-max-retries", b"3")], num_retries=1)
    assert s.remaining == 3
    statuses = [s.decide_response(503, []) for _ in range(4)]
    assert statuses == [RetryStatus.YES] * 3 + [RetryStatus.LIMIT_EXCEEDED]
    assert s.remaining == 0


def test_max_retries_header_alone_enables_nothing():
    c = parse_envoy_request_controls([(b"x-envoy-max-retries", b"3")])
    assert RetryState.create(policy(), c, random.Random()) is None


def test_retriable_request_headers_gate_retries():
    only_get = HeaderMatcher(b":method", string_match=StringMatcher(StringMatchKind.EXACT, b"GET"))
    p = policy("5xx", retriable_request_headers=(only_get,))
    assert RetryState.create(p, None, random.Random(), request_headers=[(b":method", b"GET")])
    assert (
        RetryState.create(p, None, random.Random(), request_headers=[(b":method", b"POST")]) is None
    )


def test_retry_circuit_breaker_and_success_tracking():
    limits = ResourceLimits(CircuitBreakerThresholds(max_retries=1))
    a = state("5xx", limits=limits, num_retries=5)
    b = state("5xx", limits=limits, num_retries=5)
    assert a.decide_response(503, []) is RetryStatus.YES
    assert limits.retries == 1
    assert b.decide_response(503, []) is RetryStatus.OVERFLOW
    assert limits.upstream_rq_retry_overflow == 1
    # the retried attempt of a succeeds: the slot goes back and the retry counts as a success
    assert a.decide_response(200, []) is RetryStatus.NO
    assert a.retry_succeeded and limits.retries == 0
    assert b.decide_response(503, []) is RetryStatus.YES
    b.release()
    b.release()
    assert limits.retries == 0


def test_backoff_is_fully_jittered_exponential_and_capped():
    s = RetryState(policy("5xx"), None, random.Random(5))
    bounds = [0.025, 0.05, 0.1, 0.2, 0.25, 0.25, 0.25]
    for bound in bounds:
        samples = []
        for _ in range(200):
            t = RetryState(policy("5xx"), None, random.Random(len(samples)))
            for _ in range(bounds.index(bound)):
                t.next_backoff()
            samples.append(t.next_backoff())
        assert all(0 <= x < bound for x in samples)
        assert max(samples) > bound * 0.8  # really spread over the range
    assert all(0 <= s.next_backoff() < 0.25 for _ in range(50))


def test_backoff_honours_policy_intervals():
    p = policy("5xx", retry_back_off=RetryBackOff(base_interval=0.1, max_interval=0.15))
    s = RetryState(p, None, random.Random(2))
    values = [s.next_backoff() for _ in range(100)]
    assert all(0 <= v < 0.15 for v in values)


def test_previous_hosts_exclusion():
    s = state("5xx", retry_host_predicate_previous_hosts=True, host_selection_retry_max_attempts=3)
    assert s.exclude is None
    s.on_host_attempted("h1")
    s.on_host_attempted("h2")
    assert s.exclude == frozenset({"h1", "h2"})
    assert s.host_selection_attempts == 4
    plain = state("5xx")
    plain.on_host_attempted("h1")
    assert plain.exclude is None


def test_reset_kind_accepts_plain_strings():
    s = RetryState(policy("connect-failure"), None, random.Random(1))
    assert s.would_retry_reset("connect_failure")  # type: ignore[arg-type]
    assert not s.would_retry_reset("reset")  # type: ignore[arg-type]


def test_retry_success_without_circuit_breaker():
    s = state("5xx", num_retries=2)
    assert s.should_retry_response(503, [])
    assert not s.retry_succeeded
    assert not s.should_retry_response(200, [])
    assert s.retry_succeeded
    fresh = state("5xx")
    assert not fresh.should_retry_response(200, [])
    assert not fresh.retry_succeeded
