"""Load balancers over a cluster's host list (Envoy's ROUND_ROBIN, LEAST_REQUEST, RANDOM; the
hashing ones live in ``lb_hash``).

Health: a balancer keeps the list of hosts it balances over (the healthy ones, or all of them
in panic mode) and recomputes it in ``refresh()``. Call ``refresh()`` after changing any host's
``healthy`` or ``weight`` (outlier ejection/unejection, EDS or health-check updates). A pick
that lands on a host which has turned unhealthy since the last refresh refreshes by itself,
so a missed notification only delays the return of recovered hosts.

Panic (``CommonLbConfig.healthy_panic_threshold``, 50 % by default): when fewer than that
share of the hosts are healthy, Envoy balances over all hosts; with the threshold at 0 panic
mode is off and a cluster with no healthy host yields no host.

Retries with the previous-hosts predicate pass ``exclude`` (hosts already tried) and
``attempts`` (``host_selection_retry_max_attempts + 1``): like Envoy, the balancer re-picks
while the pick is excluded, at most ``attempts`` picks in all, and returns the last pick even
if it is excluded.

Priorities and localities are not modelled: every host of the list is one priority level.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Generic, Protocol, TypeVar

from proxy.config.model import Cluster, LbPolicy
from pymesh.errors import UnsupportedError

__all__ = [
    "LbHost",
    "LeastRequestLoadBalancer",
    "LoadBalancer",
    "RandomLoadBalancer",
    "RoundRobinLoadBalancer",
    "build_load_balancer",
]


class LbHost(Protocol):
    """What a balancer reads on a host; the runtime owns and mutates these attributes."""

    address: str
    port: int
    weight: int
    healthy: bool
    active_requests: int


H = TypeVar("H", bound=LbHost)


class LoadBalancer(Generic[H]):
    """Base class: health bookkeeping, panic mode and the retry re-pick loop.

    ``healthy_panic`` counts picks made in panic mode (Envoy's ``lb_healthy_panic``).
    """

    __slots__ = ("_active", "_in_panic", "_panic_pct", "_rng", "healthy_panic", "hosts")

    def __init__(self, hosts: Sequence[H], *, rng: random.Random, panic_threshold: float) -> None:
        self.hosts: tuple[H, ...] = tuple(hosts)
        self._rng = rng
        # Envoy rounds the configured percentage to an integer.
        self._panic_pct = round(panic_threshold * 100)
        self._active: list[H] = []
        self._in_panic = False
        self.healthy_panic = 0
        self.refresh()

    @property
    def in_panic(self) -> bool:
        return self._in_panic

    @property
    def active_hosts(self) -> Sequence[H]:
        """The hosts currently balanced over."""
        return self._active

    def update_hosts(self, hosts: Sequence[H]) -> None:
        """Replace the host list (EDS update), keeping rotation state and cached tables."""
        self.hosts = tuple(hosts)
        self.refresh()

    def refresh(self) -> None:
        """Re-read every host's ``healthy`` flag and ``weight``; rebuild only on change."""
        hosts = self.hosts
        healthy = [h for h in hosts if h.healthy]
        total = len(hosts)
        panic = total > 0 and len(healthy) * 100 < self._panic_pct * total
        active = list(hosts) if panic else healthy
        self._in_panic = panic
        if active != self._active or self._weights_changed(active):
            self._active = active
            self._rebuild()

    def choose(
        self,
        hash_key: int | None = None,
        exclude: AbstractSet[object] | None = None,
        attempts: int = 2,
    ) -> H | None:
        if not self._active:
            return None
        if self._in_panic:
            self.healthy_panic += 1
        host = self._pick(hash_key, 0)
        if host is None:
            return None
        if not host.healthy and not self._in_panic:
            # A host turned unhealthy without a refresh() call: catch up now.
            self.refresh()
            if not self._active:
                return None
            host = self._pick(hash_key, 0)
            if host is None:
                return None
        if exclude:
            attempt = 1
            while host in exclude and attempt < attempts:
                nxt = self._pick(hash_key, attempt)
                if nxt is None:
                    break
                host = nxt
                attempt += 1
        return host

    # -- for subclasses -----------------------------------------------------------------
    def _weights_changed(self, active: list[H]) -> bool:
        return False

    def _rebuild(self) -> None:
        """``self._active`` changed."""

    def _pick(self, hash_key: int | None, attempt: int) -> H | None:
        raise NotImplementedError


class _Edf(Generic[H]):
    """Earliest-deadline-first scheduler (Envoy's ``EdfScheduler``): each host is due again
    ``1 / weight`` after it was picked; ties go to the earlier insertion."""

    __slots__ = ("_heap", "_order", "_weight")

    def __init__(self, hosts: Sequence[H], weight: Callable[[H], float], initial_picks: int):
        self._weight = weight
        self._heap: list[tuple[float, int, H]] = []
        self._order = 0
        for h in hosts:
            self._push(0.0, h)
        # Envoy starts each scheduler a random number of picks in, so that proxies configured
        # alike do not all send their first requests to the same host.
        for _ in range(initial_picks):
            self.pick()

    def _push(self, now: float, host: H) -> None:
        w = self._weight(host)
        deadline = now + (1.0 / w if w > 0 else float("inf"))
        heapq.heappush(self._heap, (deadline, self._order, host))
        self._order += 1

    def pick(self) -> H:
        deadline, _, host = heapq.heappop(self._heap)
        self._push(deadline, host)
        return host


def _weights_equal(hosts: Sequence[LbHost]) -> bool:
    if not hosts:
        return True
    first = hosts[0].weight
    return all(h.weight == first for h in hosts)


class _WeightTracking(LoadBalancer[H]):
    __slots__ = ("_weights",)

    def __init__(self, hosts: Sequence[H], *, rng: random.Random, panic_threshold: float) -> None:
        self._weights: list[int] = []
        super().__init__(hosts, rng=rng, panic_threshold=panic_threshold)

    def _weights_changed(self, active: list[H]) -> bool:
        return [h.weight for h in active] != self._weights

    def _rebuild(self) -> None:
        self._weights = [h.weight for h in self._active]


class RoundRobinLoadBalancer(_WeightTracking[H]):
    """Plain rotation when all weights are equal, EDF scheduling when they differ."""

    __slots__ = ("_edf", "_n", "_rr")

    def __init__(self, hosts: Sequence[H], *, rng: random.Random, panic_threshold: float) -> None:
        self._edf: _Edf[H] | None = None
        # Envoy seeds the rotation with a random index for the same reason as the EDF picks.
        self._rr = rng.getrandbits(32)
        self._n = 0
        super().__init__(hosts, rng=rng, panic_threshold=panic_threshold)

    def _rebuild(self) -> None:
        super()._rebuild()
        active = self._active
        self._n = len(active)
        if _weights_equal(active):
            self._edf = None
        else:
            self._edf = _Edf(active, _static_weight, self._rng.randrange(len(active)))

    def _pick(self, hash_key: int | None, attempt: int) -> H | None:
        edf = self._edf
        if edf is not None:
            return edf.pick()
        i = self._rr
        self._rr = i + 1
        return self._active[i % self._n]


def _static_weight(host: LbHost) -> float:
    return host.weight


class LeastRequestLoadBalancer(_WeightTracking[H]):
    """Power of ``choice_count`` choices among random hosts when weights are equal; EDF with
    ``weight / (active_requests + 1) ** active_request_bias`` when they differ."""

    __slots__ = ("_bias", "_choices", "_edf", "_random")

    def __init__(
        self,
        hosts: Sequence[H],
        *,
        rng: random.Random,
        panic_threshold: float,
        choice_count: int = 2,
        active_request_bias: float = 1.0,
    ) -> None:
        self._choices = max(1, choice_count)
        self._bias = active_request_bias
        self._random = rng.random
        self._edf: _Edf[H] | None = None
        super().__init__(hosts, rng=rng, panic_threshold=panic_threshold)

    def _dynamic_weight(self, host: LbHost) -> float:
        bias = self._bias
        if bias == 0.0:
            return host.weight
        if bias == 1.0:
            return host.weight / (host.active_requests + 1)
        return float(host.weight / (host.active_requests + 1) ** bias)

    def _rebuild(self) -> None:
        super()._rebuild()
        active = self._active
        if _weights_equal(active):
            self._edf = None
        else:
            self._edf = _Edf(active, self._dynamic_weight, self._rng.randrange(len(active)))

    def _pick(self, hash_key: int | None, attempt: int) -> H | None:
        edf = self._edf
        if edf is not None:
            return edf.pick()
        active = self._active
        n = len(active)
        rnd = self._random
        best = active[int(rnd() * n)]
        for _ in range(self._choices - 1):
            candidate = active[int(rnd() * n)]
            # Strictly fewer: on a tie the first sample stays, as in Envoy.
            if candidate.active_requests < best.active_requests:
                best = candidate
        return best


class RandomLoadBalancer(LoadBalancer[H]):
    """Uniform over the hosts: Envoy's RANDOM policy ignores weights."""

    __slots__ = ("_random",)

    def __init__(self, hosts: Sequence[H], *, rng: random.Random, panic_threshold: float) -> None:
        self._random = rng.random
        super().__init__(hosts, rng=rng, panic_threshold=panic_threshold)

    def _pick(self, hash_key: int | None, attempt: int) -> H | None:
        active = self._active
        return active[int(self._random() * len(active))]


def build_load_balancer(
    policy: LbPolicy, hosts: Sequence[H], *, rng: random.Random, cluster_config: Cluster
) -> LoadBalancer[H]:
    """The balancer for ``policy`` over ``hosts``, configured from ``cluster_config``."""
    panic = cluster_config.common_lb_config.healthy_panic_threshold
    if policy is LbPolicy.ROUND_ROBIN:
        return RoundRobinLoadBalancer(hosts, rng=rng, panic_threshold=panic)
    if policy is LbPolicy.LEAST_REQUEST:
        lr = cluster_config.least_request
        return LeastRequestLoadBalancer(
            hosts,
            rng=rng,
            panic_threshold=panic,
            choice_count=lr.choice_count,
            active_request_bias=lr.active_request_bias,
        )
    if policy is LbPolicy.RANDOM:
        return RandomLoadBalancer(hosts, rng=rng, panic_threshold=panic)
    if policy is LbPolicy.RING_HASH or policy is LbPolicy.MAGLEV:
        from proxy.routing.lb_hash import MaglevLoadBalancer, RingHashLoadBalancer

        if policy is LbPolicy.RING_HASH:
            return RingHashLoadBalancer(
                hosts, rng=rng, panic_threshold=panic, config=cluster_config.ring_hash
            )
        return MaglevLoadBalancer(
            hosts, rng=rng, panic_threshold=panic, config=cluster_config.maglev
        )
    raise UnsupportedError(
        f"lb_policy {policy.value} is not implemented", path=f"cluster {cluster_config.name}"
    )
