import random

import pytest

from proxy.config.model import (
    FaultAbort,
    FaultConfig,
    FaultDelay,
    HeaderMatcher,
    StringMatcher,
    StringMatchKind,
)
from proxy.routing.fault import ActiveFaults, FaultDecision, decide_fault

ALWAYS_DELAY = FaultDelay(fixed_delay=0.5, percentage=1.0)
ALWAYS_ABORT = FaultAbort(http_status=503, percentage=1.0)


def decide(config, headers=(), seed=1, faults=None, cluster=None):
    return decide_fault(
        config, list(headers), random.Random(seed), faults or ActiveFaults(), cluster=cluster
    )


def test_fixed_delay_and_abort():
    assert decide(FaultConfig(delay=ALWAYS_DELAY)) == FaultDecision(0.5, None)
    assert decide(FaultConfig(abort=ALWAYS_ABORT)) == FaultDecision(None, 503)
    assert decide(FaultConfig(delay=ALWAYS_DELAY, abort=ALWAYS_ABORT)) == FaultDecision(0.5, 503)
    assert decide(FaultConfig()) is None


def test_percentages_are_probabilities():
    cfg = FaultConfig(abort=FaultAbort(http_status=500, percentage=0.25))
    rng = random.Random(9)
    faults = ActiveFaults()
    hits = 0
    for _ in range(4000):
        if decide_fault(cfg, [], rng, faults) is not None:
            hits += 1
            faults.release()
    assert abs(hits / 4000 - 0.25) < 0.03
    assert faults.active == 0
    # the unset percentage is 0 in Envoy: never
    assert decide(FaultConfig(abort=FaultAbort(http_status=500))) is None


HEADER_DELAY = FaultDelay(header_delay=True, percentage=1.0)
HEADER_ABORT = FaultAbort(header_abort=True, percentage=1.0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"x-envoy-fault-delay-request", b"200")], FaultDecision(0.2, None)),
        ([(b"x-envoy-fault-delay-request", b"0")], None),
        ([(b"x-envoy-fault-delay-request", b"abc")], None),
        ([(b"x-envoy-fault-abort-request", b"429")], FaultDecision(None, 429)),
        ([(b"x-envoy-fault-abort-request", b"600")], None),
        ([(b"x-envoy-fault-abort-request", b"199")], None),
        (
            [(b"x-envoy-fault-abort-request", b"500"), (b"x-envoy-fault-delay-request", b"10")],
            FaultDecision(0.01, 500),
        ),
        # only the first value counts
        (
            [(b"x-envoy-fault-abort-request", b"502"), (b"x-envoy-fault-abort-request", b"503")],
            FaultDecision(None, 502),
        ),
        ([], None),
    ],
)
def test_header_controlled_faults(headers, expected):
    assert decide(FaultConfig(delay=HEADER_DELAY, abort=HEADER_ABORT), headers) == expected


def test_header_percentage_can_only_lower_the_configured_one():
    cfg = FaultConfig(abort=FaultAbort(header_abort=True, percentage=0.5))
    headers = [(b"x-envoy-fault-abort-request", b"503")]

    def rate(extra):
        rng = random.Random(4)
        faults = ActiveFaults()
        n = sum(decide_fault(cfg, headers + extra, rng, faults) is not None for _ in range(4000))
        return n / 4000

    assert abs(rate([]) - 0.5) < 0.03
    assert abs(rate([(b"x-envoy-fault-abort-request-percentage", b"10")]) - 0.1) < 0.03
    assert abs(rate([(b"x-envoy-fault-abort-request-percentage", b"100")]) - 0.5) < 0.03
    assert rate([(b"x-envoy-fault-abort-request-percentage", b"0")]) == 0
    # fixed faults ignore the percentage headers
    fixed = FaultConfig(abort=ALWAYS_ABORT)
    assert decide(fixed, [(b"x-envoy-fault-abort-request-percentage", b"0")]) is not None


def test_conditions():
    only_canary = HeaderMatcher(
        b"x-canary", string_match=StringMatcher(StringMatchKind.EXACT, b"1")
    )
    cfg = FaultConfig(abort=ALWAYS_ABORT, headers=(only_canary,))
    assert decide(cfg, [(b"x-canary", b"1")]) is not None
    assert decide(cfg, [(b"x-canary", b"0")]) is None
    cfg = FaultConfig(abort=ALWAYS_ABORT, upstream_cluster="backend")
    assert decide(cfg, cluster="backend") is not None
    assert decide(cfg, cluster="other") is None
    cfg = FaultConfig(abort=ALWAYS_ABORT, downstream_nodes=frozenset({"node-a"}))
    assert decide(cfg, [(b"x-envoy-downstream-service-node", b"node-a")]) is not None
    assert decide(cfg, [(b"x-envoy-downstream-service-node", b"node-b")]) is None
    assert decide(cfg) is None


def test_max_active_faults():
    faults = ActiveFaults()
    cfg = FaultConfig(delay=ALWAYS_DELAY, abort=ALWAYS_ABORT, max_active_faults=2)
    assert decide(cfg, faults=faults) is not None
    assert decide(cfg, faults=faults) is not None
    assert faults.active == 2  # one per request, even with two faults each
    assert decide(cfg, faults=faults) is None
    assert faults.faults_overflow == 1
    faults.release()
    assert decide(cfg, faults=faults) is not None
    assert (faults.delays_injected, faults.aborts_injected) == (3, 3)
