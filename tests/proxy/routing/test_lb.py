import itertools
import random
import re
from collections import Counter

import pytest

from proxy.config.model import (
    Cluster,
    CommonLbConfig,
    HashPolicy,
    HashPolicyKind,
    LbPolicy,
    LeastRequestConfig,
    MaglevConfig,
    RegexRewrite,
    RingHashConfig,
)
from proxy.routing.lb import (
    LeastRequestLoadBalancer,
    RandomLoadBalancer,
    RoundRobinLoadBalancer,
    build_load_balancer,
)
from proxy.routing.lb_hash import (
    MaglevLoadBalancer,
    RingHashLoadBalancer,
    compute_hash,
    hash64,
    host_hash_key,
)
from pymesh.errors import UnsupportedError

from ._fakes import FakeHost, hosts

ALL_POLICIES = [
    LbPolicy.ROUND_ROBIN,
    LbPolicy.LEAST_REQUEST,
    LbPolicy.RANDOM,
    LbPolicy.RING_HASH,
    LbPolicy.MAGLEV,
]
SMALL_MAGLEV = MaglevConfig(table_size=1009)


def build(policy, hs, seed=1, **cluster_kw):
    cluster_kw.setdefault("maglev", SMALL_MAGLEV)
    return build_load_balancer(
        policy, hs, rng=random.Random(seed), cluster_config=Cluster(name="c", **cluster_kw)
    )


def spread(lb, n, keyed=False):
    rng = random.Random(99)
    return Counter(lb.choose(rng.getrandbits(64) if keyed else None) for _ in range(n))


def test_build_dispatch():
    hs = hosts(3)
    assert isinstance(build(LbPolicy.ROUND_ROBIN, hs), RoundRobinLoadBalancer)
    assert isinstance(build(LbPolicy.LEAST_REQUEST, hs), LeastRequestLoadBalancer)
    assert isinstance(build(LbPolicy.RANDOM, hs), RandomLoadBalancer)
    assert isinstance(build(LbPolicy.RING_HASH, hs), RingHashLoadBalancer)
    assert isinstance(build(LbPolicy.MAGLEV, hs), MaglevLoadBalancer)
    with pytest.raises(UnsupportedError):
        build(LbPolicy.CLUSTER_PROVIDED, hs)


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_empty_host_list(policy):
    assert build(policy, []).choose() is None


def test_round_robin_rotates_when_weights_are_equal():
    hs = hosts(4)
    lb = build(LbPolicy.ROUND_ROBIN, hs)
    picks = [lb.choose() for _ in range(8)]
    start = hs.index(picks[0])
    assert picks == [hs[(start + i) % 4] for i in range(8)]


def test_weighted_round_robin_is_exact_over_a_cycle():
    hs = [FakeHost("a", weight=1), FakeHost("b", weight=2), FakeHost("c", weight=5)]
    lb = build(LbPolicy.ROUND_ROBIN, hs)
    counts = Counter(lb.choose() for _ in range(8 * 100))
    assert [counts[h] for h in hs] == [100, 200, 500]
    # interleaved, not bursty: the heaviest host never gets more than 3 picks in a row
    seq = [lb.choose() for _ in range(80)]
    run = best = 0
    for prev, cur in itertools.pairwise(seq):
        run = run + 1 if prev is cur else 0
        best = max(best, run)
    assert best < 3


def test_round_robin_start_is_seeded():
    hs = hosts(10)
    starts = {build(LbPolicy.ROUND_ROBIN, hs, seed=s).choose() for s in range(20)}
    assert len(starts) > 3


def test_least_request_prefers_idle_hosts():
    hs = hosts(4)
    for h in hs[1:]:
        h.active_requests = 10
    lb = build(LbPolicy.LEAST_REQUEST, hs)
    counts = spread(lb, 4000)
    # P2C: the idle host wins whenever it is sampled: 1 - (3/4)^2 = 7/16 of picks
    assert abs(counts[hs[0]] / 4000 - 7 / 16) < 0.04


def test_least_request_choice_count_sharpens_the_preference():
    hs = hosts(4)
    for h in hs[1:]:
        h.active_requests = 10
    lb = build(LbPolicy.LEAST_REQUEST, hs, least_request=LeastRequestConfig(choice_count=8))
    counts = spread(lb, 4000)
    assert counts[hs[0]] / 4000 > 1 - (3 / 4) ** 8 - 0.04


def test_weighted_least_request_scales_by_active_requests():
    hs = [FakeHost("a", weight=1), FakeHost("b", weight=2)]
    lb = build(LbPolicy.LEAST_REQUEST, hs)
    counts = spread(lb, 3000)
    assert abs(counts[hs[1]] / 3000 - 2 / 3) < 0.02
    hs[1].active_requests = 3  # effective weight 2/4 < 1
    counts = spread(lb, 3000)
    assert counts[hs[0]] > counts[hs[1]]


def test_random_is_uniform_and_ignores_weights():
    hs = [FakeHost("a", weight=1), FakeHost("b", weight=100)]
    counts = spread(build(LbPolicy.RANDOM, hs), 10_000)
    assert abs(counts[hs[0]] / 10_000 - 0.5) < 0.03


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_unhealthy_hosts_are_skipped_above_panic_threshold(policy):
    hs = hosts(10)
    for h in hs[:4]:
        h.healthy = False
    lb = build(policy, hs)
    picked = set(spread(lb, 500, keyed=True))
    assert picked <= set(hs[4:]) and len(picked) > 1
    assert not lb.in_panic and lb.healthy_panic == 0


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_panic_mode_balances_over_all_hosts(policy):
    hs = hosts(10)
    for h in hs[:6]:  # 40 % healthy < 50 %
        h.healthy = False
    lb = build(policy, hs)
    assert lb.in_panic
    picked = set(spread(lb, 1000, keyed=True))
    assert picked & set(hs[:6])
    assert lb.healthy_panic == 1000


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_panic_disabled_with_zero_threshold(policy):
    hs = hosts(3, healthy=False)
    lb = build(policy, hs, common_lb_config=CommonLbConfig(healthy_panic_threshold=0.0))
    assert lb.choose(123) is None
    hs[1].healthy = True
    lb.refresh()
    assert lb.choose(123) is hs[1]


def test_exactly_half_healthy_is_not_panic():
    hs = hosts(4)
    hs[0].healthy = hs[1].healthy = False
    assert not build(LbPolicy.ROUND_ROBIN, hs).in_panic


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_pick_of_a_host_turned_unhealthy_refreshes(policy):
    hs = hosts(5)
    lb = build(policy, hs)
    for h in hs[:2]:
        h.healthy = False  # no refresh() call
    picked = set(spread(lb, 300, keyed=True))
    assert picked <= set(hs[2:])


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_exclusion_avoids_previous_hosts(policy):
    hs = hosts(5)
    lb = build(policy, hs)
    rng = random.Random(4)
    for _ in range(200):
        key = rng.getrandbits(64)
        first = lb.choose(key)
        # plenty of attempts: the retry lands elsewhere
        second = lb.choose(key, exclude=frozenset({first}), attempts=50)
        assert second is not first


def test_exclusion_gives_up_after_the_attempts():
    hs = hosts(2)
    lb = build(LbPolicy.ROUND_ROBIN, hs)
    # everything excluded: the last pick is returned anyway, as in Envoy
    assert lb.choose(exclude=frozenset(hs), attempts=3) in hs


# -- consistent hashing ------------------------------------------------------------------


@pytest.mark.parametrize("policy", [LbPolicy.RING_HASH, LbPolicy.MAGLEV])
def test_hash_lb_is_consistent(policy):
    hs = hosts(6)
    lb = build(policy, hs)
    again = build(policy, list(hs), seed=77)  # another process, another seed
    keys = [hash64(str(i).encode()) for i in range(500)]
    assert [lb.choose(k) for k in keys] == [again.choose(k) for k in keys]


@pytest.mark.parametrize("policy", [LbPolicy.RING_HASH, LbPolicy.MAGLEV])
def test_hash_lb_minimal_disruption_when_a_host_goes(policy):
    hs = hosts(8)
    lb = build(policy, hs)
    keys = [hash64(str(i).encode()) for i in range(4000)]
    before = [lb.choose(k) for k in keys]
    gone = hs[3]
    smaller = build(policy, [h for h in hs if h is not gone])
    after = [smaller.choose(k) for k in keys]
    moved = sum(b is not a for b, a in zip(before, after, strict=True))
    lost = sum(b is gone for b in before)
    # every key of the removed host moves; few others do
    assert all(a is not gone for a in after)
    assert lost > 0.08 * len(keys)
    # Other keys move only because the remaining hosts get a few more ring points (the ring
    # is rescaled to keep its minimum size) or, for Maglev, a few table slots are reshuffled.
    assert moved - lost < 0.1 * len(keys)


@pytest.mark.parametrize("policy", [LbPolicy.RING_HASH, LbPolicy.MAGLEV])
def test_hash_lb_ejection_then_return_restores_mapping(policy):
    hs = hosts(8)
    lb = build(policy, hs)
    keys = [hash64(str(i).encode()) for i in range(1000)]
    before = [lb.choose(k) for k in keys]
    hs[2].healthy = False
    lb.refresh()
    assert all(lb.choose(k) is not hs[2] for k in keys)
    hs[2].healthy = True
    lb.refresh()
    assert [lb.choose(k) for k in keys] == before


@pytest.mark.parametrize("policy", [LbPolicy.RING_HASH, LbPolicy.MAGLEV])
def test_hash_lb_distribution_follows_weights(policy):
    hs = [FakeHost("a", weight=1), FakeHost("b", weight=1), FakeHost("c", weight=2)]
    counts = spread(build(policy, hs), 20_000, keyed=True)
    assert abs(counts[hs[2]] / 20_000 - 0.5) < 0.05
    assert abs(counts[hs[0]] / 20_000 - 0.25) < 0.05


def test_ring_size_bounds():
    hs = hosts(3)
    small = RingHashConfig(minimum_ring_size=64, maximum_ring_size=1024)
    lb = build(LbPolicy.RING_HASH, hs, ring_hash=small)
    assert 64 <= lb.ring_size <= 66
    capped = RingHashConfig(minimum_ring_size=1024, maximum_ring_size=100)
    assert build(LbPolicy.RING_HASH, hs, ring_hash=capped).ring_size == 100
    assert build(LbPolicy.RING_HASH, hs).ring_size >= 1024


def test_maglev_table_is_full_and_balanced():
    hs = hosts(7)
    lb = build(LbPolicy.MAGLEV, hs)
    table = lb.table
    assert len(table) == 1009
    counts = Counter(table)
    assert max(counts.values()) - min(counts.values()) <= 2


def test_maglev_default_table_size():
    lb = build(LbPolicy.MAGLEV, hosts(3), maglev=MaglevConfig())
    assert len(lb.table) == 65537


def test_no_hash_key_picks_randomly():
    hs = hosts(4)
    lb = build(LbPolicy.RING_HASH, hs)
    assert len(set(spread(lb, 400))) == 4


def test_host_hash_key():
    h = FakeHost("10.0.0.1", 8080)
    assert host_hash_key(h, False) == b"10.0.0.1:8080"
    h.hostname = "db-1"
    assert host_hash_key(h, True) == b"db-1"
    assert host_hash_key(FakeHost("::1", 80), False) == b"[::1]:80"


# -- hash policies -------------------------------------------------------------------------


def hp(kind, name=b"", **kw) -> HashPolicy:
    return HashPolicy(kind=kind, name=name, **kw)


def test_compute_hash_header_cookie_query_source_ip():
    headers = [(b"x-user", b"alice"), (b"cookie", b'a=1; session="s1"; b=2')]
    assert compute_hash([hp(HashPolicyKind.HEADER, b"x-user")], headers, None, None) == hash64(
        b"alice"
    )
    assert compute_hash([hp(HashPolicyKind.HEADER, b"x-none")], headers, None, None) is None
    assert compute_hash([hp(HashPolicyKind.COOKIE, b"session")], headers, None, None) == hash64(
        b"s1"
    )
    assert compute_hash([hp(HashPolicyKind.QUERY_PARAMETER, b"u")], [], None, b"u=7&u=8") == (
        hash64(b"7")
    )
    src = hp(HashPolicyKind.CONNECTION_PROPERTIES, source_ip=True)
    assert compute_hash([src], [], "10.1.1.1", None) == hash64(b"10.1.1.1")
    assert compute_hash([src], [], None, None) is None
    assert compute_hash([hp(HashPolicyKind.FILTER_STATE, b"k")], headers, None, None) is None


def test_compute_hash_header_order_does_not_matter_and_rewrite_applies():
    p = [hp(HashPolicyKind.HEADER, b"x")]
    assert compute_hash(p, [(b"x", b"1"), (b"x", b"2")], None, None) == compute_hash(
        p, [(b"x", b"2"), (b"x", b"1")], None, None
    )
    rw = [hp(HashPolicyKind.HEADER, b"x", regex_rewrite=RegexRewrite(re.compile(rb"\d"), b""))]
    assert compute_hash(rw, [(b"x", b"a1")], None, None) == hash64(b"a")


def test_compute_hash_combines_and_stops_at_terminal():
    a = hp(HashPolicyKind.HEADER, b"a")
    b = hp(HashPolicyKind.HEADER, b"b")
    headers = [(b"a", b"1"), (b"b", b"2")]
    ha, hb = hash64(b"1"), hash64(b"2")
    mask = (1 << 64) - 1
    assert compute_hash([a, b], headers, None, None) == (((ha << 1) | (ha >> 63)) & mask) ^ hb
    terminal = hp(HashPolicyKind.HEADER, b"a", terminal=True)
    assert compute_hash([terminal, b], headers, None, None) == ha
    # a terminal policy that produced nothing does not stop the evaluation
    missing = hp(HashPolicyKind.HEADER, b"zz", terminal=True)
    assert compute_hash([missing, b], headers, None, None) == hb
    # duplicate rules do not cancel out
    assert compute_hash([a, a], headers, None, None) not in (0, None)


def test_cookie_with_ttl_asks_the_runtime_to_set_it():
    calls = []

    def add_cookie(name, path, ttl):
        calls.append((name, path, ttl))
        return b"generated"

    p = [hp(HashPolicyKind.COOKIE, b"sticky", cookie_ttl=60.0, cookie_path=b"/")]
    assert compute_hash(p, [], None, None) is None
    assert compute_hash(p, [], None, None, add_cookie) == hash64(b"generated")
    assert calls == [(b"sticky", b"/", 60.0)]
    assert compute_hash(p, [(b"cookie", b"sticky=v")], None, None, add_cookie) == hash64(b"v")
    assert len(calls) == 1


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_update_hosts(policy):
    hs = hosts(3)
    lb = build(policy, hs[:2])
    assert set(spread(lb, 200, keyed=True)) == set(hs[:2])
    lb.update_hosts(hs)
    assert set(spread(lb, 600, keyed=True)) == set(hs)


def test_bounded_load_is_refused_not_ignored():
    with pytest.raises(UnsupportedError):
        build(LbPolicy.RING_HASH, hosts(2), ring_hash=RingHashConfig(hash_balance_factor=150))
