"""ShouldRateLimit decisions on a controlled clock, with the in-memory counters."""

from __future__ import annotations

import pytest

from mixer.ratelimit.config import ConfigFile, Unit, load_config
from mixer.ratelimit.counters import MemoryCounters
from mixer.ratelimit.decide import (
    MAX_REMAINING,
    Code,
    Decision,
    Descriptor,
    HeaderNames,
    Request,
    RequestError,
    decide,
    plan,
)
from mixer.ratelimit.stats import RateLimitStats

CONFIG = load_config(
    [
        ConfigFile(
            "rl.yaml",
            """
domain: d
descriptors:
  - key: PATH
    value: /productpage
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: PATH
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: free
    rate_limit: {unlimited: true}
  - key: caller
    rate_limit: {unit: hour, requests_per_unit: 10, name: per-caller}
  - key: caller_vip
    rate_limit: {unit: hour, requests_per_unit: 100, replaces: [{name: per-caller}]}
  - key: big
    rate_limit: {unit: second, requests_per_unit: 10}
""",
        )
    ]
)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:  # 1700000000 % 60 == 20
        self.now = now

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self) -> None:
        self.clock = Clock()
        self.counters = MemoryCounters(self.clock)
        self.stats = RateLimitStats()

    def ask(
        self, *descriptors: Descriptor, hits_addend: int = 0, headers: bool = False
    ) -> Decision:
        now = int(self.clock())
        todo = plan(CONFIG, Request("d", descriptors, hits_addend), now)
        counts = self.counters.increment_now(todo.hits)
        return decide(todo, counts, now, self.stats, HeaderNames() if headers else None)


def d(*entries: tuple[str, str], **kwargs: object) -> Descriptor:
    return Descriptor(tuple(entries), **kwargs)  # type: ignore[arg-type]


def test_fixed_window_per_value() -> None:
    h = Harness()
    first = h.ask(d(("PATH", "/productpage")))
    assert first.code is Code.OK
    status = first.statuses[0]
    assert (status.remaining, status.reset) == (0, 40)  # window ends at the next whole minute
    assert status.limit is not None and status.limit.unit is Unit.MINUTE
    assert h.ask(d(("PATH", "/productpage"))).code is Code.OVER_LIMIT
    # the key-only rule counts each value apart
    for _ in range(3):
        assert h.ask(d(("PATH", "/a"))).code is Code.OK
    assert h.ask(d(("PATH", "/a"))).code is Code.OVER_LIMIT
    assert h.ask(d(("PATH", "/b"))).code is Code.OK
    h.clock.now += 40  # the next minute: a new window
    assert h.ask(d(("PATH", "/productpage"))).code is Code.OK


def test_not_limited_descriptor_is_ok_without_a_limit() -> None:
    h = Harness()
    status = h.ask(d(("HOST", "x"))).statuses[0]
    assert (status.code, status.limit, status.reset) == (Code.OK, None, None)


def test_any_descriptor_over_makes_the_request_over() -> None:
    h = Harness()
    h.ask(d(("PATH", "/productpage")))
    decision = h.ask(d(("PATH", "/x")), d(("PATH", "/productpage")))
    assert decision.code is Code.OVER_LIMIT
    assert [s.code for s in decision.statuses] == [Code.OK, Code.OVER_LIMIT]


def test_shadow_mode_answers_ok_and_counts() -> None:
    h = Harness()
    h.ask(d(("shadow", "s")))
    decision = h.ask(d(("shadow", "s")))
    assert decision.code is Code.OK
    assert decision.statuses[0].remaining == 0
    assert h.stats.limit("d.shadow", "shadow_mode") == 1
    assert h.stats.limit("d.shadow", "over_limit") == 1


def test_unlimited_touches_no_counter() -> None:
    h = Harness()
    for _ in range(5):
        decision = h.ask(d(("free", "x")))
        assert decision.code is Code.OK
        assert decision.statuses[0].remaining == MAX_REMAINING
    assert len(h.counters) == 0


def test_replaces_skips_the_named_limit() -> None:
    h = Harness()
    for _ in range(10):
        h.ask(d(("caller", "a")))
    assert h.ask(d(("caller", "a"))).code is Code.OVER_LIMIT
    # with the vip limit matched too, per-caller is replaced
    decision = h.ask(d(("caller", "a")), d(("caller_vip", "a")))
    assert decision.code is Code.OK
    assert decision.statuses[0].limit is None
    assert decision.statuses[1].remaining == 99


def test_hits_addend_request_and_descriptor() -> None:
    h = Harness()
    assert h.ask(d(("big", "x")), hits_addend=7).statuses[0].remaining == 3
    # a descriptor's own addend of 0 only reads the counter
    assert h.ask(d(("big", "x"), hits_addend=0), hits_addend=7).statuses[0].remaining == 3
    decision = h.ask(d(("big", "x")), hits_addend=4)
    assert decision.code is Code.OVER_LIMIT
    # 7 → 11: the one hit past 10 is over, the two from 8 (80 %) to 10 are near
    assert h.stats.limit("d.big", "over_limit") == 1
    assert h.stats.limit("d.big", "near_limit") == 2
    assert h.stats.limit("d.big", "within_limit") == 7
    assert h.stats.limit("d.big", "total_hits") == 7 + 0 + 4


def test_descriptor_limit_override() -> None:
    h = Harness()
    override = d(("anything", "v"), limit=(2, Unit.SECOND))
    assert [h.ask(override).code for _ in range(3)] == [Code.OK, Code.OK, Code.OVER_LIMIT]
    assert h.stats.limit("d.anything_v", "over_limit") == 1


def test_response_headers_name_the_closest_limit() -> None:
    h = Harness()
    h.ask(d(("PATH", "/x")))
    decision = h.ask(d(("PATH", "/y")), d(("PATH", "/x")), d(("HOST", "h")), headers=True)
    assert decision.response_headers == (
        ("RateLimit-Limit", "3"),
        ("RateLimit-Remaining", "1"),
        ("RateLimit-Reset", "40"),
    )
    h.ask(d(("PATH", "/productpage")))
    over = h.ask(d(("PATH", "/y")), d(("PATH", "/productpage")), headers=True)
    assert dict(over.response_headers)["RateLimit-Remaining"] == "0"
    assert dict(over.response_headers)["RateLimit-Limit"] == "1"
    assert h.ask(d(("HOST", "h")), headers=True).response_headers == ()


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (Request("", (Descriptor((("a", "b"),)),)), "domain must not be empty"),
        (Request("d", ()), "descriptor list must not be empty"),
    ],
)
def test_bad_requests(request_: Request, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        plan(CONFIG, request_, 0)


def test_memory_counters_forget_old_windows() -> None:
    h = Harness()
    for minute in range(5):
        h.ask(d(("PATH", f"/{minute}")))
        h.clock.now += 60
    h.ask(d(("PATH", "/now")))
    assert len(h.counters) == 1
