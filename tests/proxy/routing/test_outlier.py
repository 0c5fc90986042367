import random
from dataclasses import replace

from proxy.config.model import OutlierDetection
from proxy.routing.outlier import (
    EjectionType,
    LocalFailure,
    OutlierAction,
    OutlierDetector,
)

from ._fakes import FakeClock, hosts

# Generous enough that one ejection out of ten hosts is allowed.
BASE = OutlierDetection(max_ejection_percent=0.5)


def detector(n=10, config=BASE, seed=1):
    clock = FakeClock()
    hs = hosts(n)
    return OutlierDetector(config, clock, random.Random(seed), hs), hs, clock


def fail(d, host, times, status=500):
    events = [d.record(host, status) for _ in range(times)]
    return [e for e in events if e is not None]


def test_consecutive_5xx_ejects_on_the_fifth():
    d, hs, _ = detector()
    assert fail(d, hs[0], 4) == []
    (event,) = fail(d, hs[0], 1)
    assert event.action is OutlierAction.EJECT
    assert event.type is EjectionType.CONSECUTIVE_5XX
    assert event.host is hs[0] and event.num_ejections == 1
    assert d.is_ejected(hs[0])
    s = d.stats.as_dict()
    assert s["ejections_active"] == 1
    assert s["ejections_enforced_total"] == 1
    assert s["ejections_enforced_consecutive_5xx"] == 1
    assert s["ejections_detected_consecutive_5xx"] == 1


def test_a_success_resets_the_run():
    d, hs, _ = detector()
    fail(d, hs[0], 4)
    assert d.record(hs[0], 200) is None
    assert fail(d, hs[0], 4) == []
    assert not d.is_ejected(hs[0])


def test_gateway_failures_are_detected_but_not_enforced_by_default():
    d, hs, _ = detector(config=replace(BASE, consecutive_5xx=100))
    assert fail(d, hs[0], 5, status=503) == []
    s = d.stats.as_dict()
    assert s["ejections_detected_consecutive_gateway_failure"] == 1
    assert s["ejections_enforced_consecutive_gateway_failure"] == 0
    d2, hs2, _ = detector(
        config=replace(BASE, consecutive_5xx=100, enforcing_consecutive_gateway_failure=1.0)
    )
    (event,) = fail(d2, hs2[0], 5, status=502)
    assert event.type is EjectionType.CONSECUTIVE_GATEWAY_FAILURE


def test_non_gateway_5xx_breaks_a_gateway_run():
    cfg = replace(BASE, consecutive_5xx=100, enforcing_consecutive_gateway_failure=1.0)
    d, hs, _ = detector(config=cfg)
    fail(d, hs[0], 4, status=503)
    fail(d, hs[0], 1, status=500)
    assert fail(d, hs[0], 4, status=504) == []


def test_local_failures_map_to_5xx_without_the_split():
    d, hs, _ = detector()
    for kind in (LocalFailure.CONNECT_FAILURE, LocalFailure.RESET, LocalFailure.TIMEOUT):
        assert d.record_local_failure(hs[0], kind) is None
    d.record_local_success(hs[0])  # connect success is not a response: no reset of the run
    d.record_local_failure(hs[0], LocalFailure.RESET)
    event = d.record_local_failure(hs[0], LocalFailure.TIMEOUT)
    assert event is not None and event.type is EjectionType.CONSECUTIVE_5XX


def test_local_failures_with_the_split():
    cfg = replace(BASE, split_external_local_origin_errors=True)
    d, hs, _ = detector(config=cfg)
    for _ in range(4):
        assert d.record_local_failure(hs[0], LocalFailure.CONNECT_FAILURE) is None
    d.record_local_success(hs[0])
    for _ in range(4):
        assert d.record_local_failure(hs[0], LocalFailure.TIMEOUT) is None
    event = d.record_local_failure(hs[0], LocalFailure.RESET)
    assert event is not None and event.type is EjectionType.CONSECUTIVE_LOCAL_ORIGIN_FAILURE
    # and they no longer count as 5xx
    d2, hs2, _ = detector(config=cfg)
    for _ in range(10):
        d2.record_local_failure(hs2[0], LocalFailure.RESET)
    assert d2.stats.as_dict()["ejections_detected_consecutive_5xx"] == 0


def test_enforcing_percentage_is_a_probability():
    ejected = 0
    for seed in range(200):
        d, hs, _ = detector(config=replace(BASE, enforcing_consecutive_5xx=0.3), seed=seed)
        ejected += bool(fail(d, hs[0], 5))
    assert 40 < ejected < 80


def test_max_ejection_percent_is_strict_by_default():
    # 10 % of 5 hosts rounds down to zero hosts: Envoy 1.40 ejects none (no always_eject_one_host)
    d, hs, _ = detector(n=5, config=OutlierDetection())
    assert fail(d, hs[0], 5) == []
    assert d.stats.ejections_overflow == 1
    # 10 % of 10 hosts: one host, then overflow
    d, hs, _ = detector(n=10, config=OutlierDetection())
    assert len(fail(d, hs[0], 5)) == 1
    assert fail(d, hs[1], 5) == []
    assert d.stats.ejections_overflow == 1
    assert d.stats.ejections_active == 1


def test_ejection_time_grows_with_ejections_and_is_capped():
    cfg = replace(BASE, base_ejection_time=30.0, max_ejection_time=70.0, interval=10.0)
    d, hs, clock = detector(config=cfg)
    h = hs[0]

    def eject_and_measure():
        assert fail(d, h, 5)
        start = clock.now
        while True:
            clock.advance(10.0)
            events = d.tick()
            if events:
                assert events[0].action is OutlierAction.UNEJECT and events[0].host is h
                return clock.now - start

    assert eject_and_measure() == 30.0
    # ejected again straight away: twice the base
    assert eject_and_measure() == 60.0
    # capped by max_ejection_time (70 s), rounded up to the next tick
    assert eject_and_measure() == 70.0
    assert d.num_ejections(h) == 3
    assert d.stats.ejections_active == 0


def test_backoff_decays_while_the_host_stays_healthy():
    cfg = replace(BASE, base_ejection_time=30.0, max_ejection_time=300.0, interval=10.0)
    d, hs, clock = detector(config=cfg)
    h = hs[0]
    fail(d, h, 5)
    for _ in range(3):
        clock.advance(10.0)
        d.tick()
    assert not d.is_ejected(h)
    # healthy for many intervals: the multiplier drops back to zero, so the next ejection
    # lasts base_ejection_time again
    for _ in range(5):
        clock.advance(10.0)
        d.tick()
    fail(d, h, 5)
    clock.advance(30.0)
    assert [e.action for e in d.tick()] == [OutlierAction.UNEJECT]


def test_unejection_resets_counters():
    d, hs, clock = detector()
    fail(d, hs[0], 5)
    clock.advance(30.0)
    d.tick()
    assert fail(d, hs[0], 1) == []  # a single error does not re-eject


def test_jitter_delays_unejection():
    cfg = replace(BASE, base_ejection_time=30.0, max_ejection_time_jitter=5.0, interval=1.0)
    d, hs, clock = detector(config=cfg, seed=3)
    fail(d, hs[0], 5)
    waited = 0
    while not d.tick(clock.now):
        clock.advance(1.0)
        waited += 1
    assert 30 <= waited <= 35


def test_host_removal_and_health_check_uneject():
    d, hs, _ = detector()
    fail(d, hs[0], 5)
    event = d.uneject(hs[0])
    assert event is not None and event.action is OutlierAction.UNEJECT
    assert d.uneject(hs[0]) is None
    fail(d, hs[1], 5)
    d.set_hosts(hs[2:])
    assert d.stats.ejections_active == 0
    assert d.record(hs[1], 500) is None  # unknown host


def test_success_rate_ejection():
    cfg = replace(BASE, success_rate_request_volume=100, success_rate_minimum_hosts=5)
    d, hs, clock = detector(n=6, config=cfg)
    for i, h in enumerate(hs):
        for j in range(100):
            # host 0 fails half its requests, interleaved so consecutive_5xx never fires
            d.record(h, 500 if i == 0 and j % 2 else 200)
    clock.advance(10.0)
    events = d.tick()
    assert [(e.host, e.type) for e in events] == [(hs[0], EjectionType.SUCCESS_RATE)]


def test_success_rate_needs_enough_hosts_and_volume():
    d, hs, clock = detector(n=4)
    for h in hs:
        for j in range(200):
            d.record(h, 500 if h is hs[0] and j % 2 else 200)
    clock.advance(10.0)
    assert d.tick() == []


def test_failure_percentage_ejection():
    cfg = replace(
        BASE,
        consecutive_5xx=1000,
        consecutive_gateway_failure=1000,
        enforcing_failure_percentage=1.0,
        failure_percentage_request_volume=50,
    )
    d, hs, clock = detector(n=5, config=cfg)
    for h in hs:
        for j in range(60):
            if h is hs[1]:
                status = 503 if j % 10 else 200  # 90 % failures
            elif h is hs[0]:
                status = 503 if j % 5 else 200  # 80 %: under the 85 % threshold
            else:
                status = 200
            d.record(h, status)
    clock.advance(10.0)
    events = d.tick()
    assert [(e.host, e.type) for e in events] == [(hs[1], EjectionType.FAILURE_PERCENTAGE)]
    assert d.stats.as_dict()["ejections_enforced_failure_percentage"] == 1
