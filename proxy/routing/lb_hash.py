"""Consistent-hashing load balancers (RING_HASH, MAGLEV) and request hash policies.

Envoy hashes with xxHash64, which the standard library lacks; pymesh uses the first 8 bytes
of BLAKE2b (``hashlib.blake2b(digest_size=8)``) everywhere instead: stable across processes
and platforms, well mixed, and fast for the short keys involved. Host placement therefore
differs from Envoy's (a request maps to a different host than in Envoy), but every property
that matters -- distribution by weight, consistency, minimal disruption -- is the same.
"""

from __future__ import annotations

import hashlib
import math
import random
from bisect import bisect_left
from collections.abc import Callable, Sequence

from proxy.config.model import HashPolicy, HashPolicyKind, MaglevConfig, RingHashConfig
from proxy.routing.header_match import Headers, parse_query
from proxy.routing.lb import H, LbHost, LoadBalancer
from pymesh.errors import UnsupportedError

__all__ = [
    "AddCookie",
    "MaglevLoadBalancer",
    "RingHashLoadBalancer",
    "compute_hash",
    "hash64",
    "host_hash_key",
]

_MASK64 = (1 << 64) - 1

# (cookie name, cookie path, ttl seconds) -> the cookie value the runtime will Set-Cookie.
AddCookie = Callable[[bytes, bytes | None, float], bytes]


def hash64(data: bytes, seed: int = 0) -> int:
    """A stable 64-bit hash; ``seed`` selects an independent hash function."""
    if seed:
        return int.from_bytes(
            hashlib.blake2b(data, digest_size=8, salt=seed.to_bytes(8, "little")).digest(),
            "little",
        )
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def host_hash_key(host: LbHost, use_hostname: bool) -> bytes:
    """What a host is hashed by: ``ip:port`` (``[ip]:port`` for IPv6), or its hostname."""
    if use_hostname:
        hostname = getattr(host, "hostname", "")
        if hostname:
            return str(hostname).encode()
    address = host.address
    if ":" in address:
        return f"[{address}]:{host.port}".encode()
    return f"{address}:{host.port}".encode()


class RingHashLoadBalancer(LoadBalancer[H]):
    """Ketama ring: each host gets a number of points proportional to its weight, scaled so
    the lightest host gets ``ceil(min_weight * minimum_ring_size)`` points, capped at
    ``maximum_ring_size`` in total; a request goes to the first point at or after its hash."""

    __slots__ = ("_config", "_ring_hashes", "_ring_hosts", "_weights")

    def __init__(
        self,
        hosts: Sequence[H],
        *,
        rng: random.Random,
        panic_threshold: float,
        config: RingHashConfig,
    ) -> None:
        if config.hash_balance_factor:
            raise UnsupportedError(
                "consistent hashing with bounded load (hash_balance_factor) is not implemented",
                path="common_lb_config.consistent_hashing_lb_config.hash_balance_factor",
            )
        self._config = config
        self._ring_hashes: list[int] = []
        self._ring_hosts: list[H] = []
        self._weights: list[int] = []
        super().__init__(hosts, rng=rng, panic_threshold=panic_threshold)

    @property
    def ring_size(self) -> int:
        return len(self._ring_hashes)

    def _weights_changed(self, active: list[H]) -> bool:
        return [h.weight for h in active] != self._weights

    def _rebuild(self) -> None:
        active = self._active
        self._weights = [h.weight for h in active]
        self._ring_hashes, self._ring_hosts = [], []
        total = sum(self._weights)
        if not active or total <= 0:
            return
        cfg = self._config
        normalized = [w / total for w in self._weights]
        min_w = min(normalized)
        scale = min(math.ceil(min_w * cfg.minimum_ring_size) / min_w, float(cfg.maximum_ring_size))
        points: list[tuple[int, int]] = []
        current = 0.0
        target = 0.0
        # Running sums keep the total at ceil(scale) even when per-host counts are fractional.
        for index, (host, w) in enumerate(zip(active, normalized, strict=True)):
            prefix = host_hash_key(host, cfg.use_hostname_for_hashing) + b"_"
            target += scale * w
            i = 0
            while current < target:
                points.append((hash64(prefix + str(i).encode()), index))
                i += 1
                current += 1
        points.sort()
        self._ring_hashes = [p[0] for p in points]
        self._ring_hosts = [active[p[1]] for p in points]

    def _pick(self, hash_key: int | None, attempt: int) -> H | None:
        hashes = self._ring_hashes
        n = len(hashes)
        if not n:
            return None
        if hash_key is None:
            hash_key = self._rng.getrandbits(64)
        i = bisect_left(hashes, hash_key)
        if i == n:
            i = 0
        if attempt:
            # Envoy's retry behaviour: as if the previous point were not on the ring.
            i = (i + attempt) % n
        return self._ring_hosts[i]


class MaglevLoadBalancer(LoadBalancer[H]):
    """Maglev lookup table (``table_size`` entries, a prime; 65537 by default) filled with
    Envoy's weighted variant of the paper's permutation algorithm."""

    __slots__ = ("_cache", "_config", "_table", "_weights")

    # Tables for recently seen host sets: an outlier ejection followed by the unejection
    # returns to a host set whose (expensive) table is already built.
    _CACHE_SIZE = 4

    def __init__(
        self,
        hosts: Sequence[H],
        *,
        rng: random.Random,
        panic_threshold: float,
        config: MaglevConfig,
    ) -> None:
        self._config = config
        self._table: list[H] = []
        self._weights: list[int] = []
        self._cache: dict[tuple[tuple[H, int], ...], list[H]] = {}
        super().__init__(hosts, rng=rng, panic_threshold=panic_threshold)

    @property
    def table(self) -> Sequence[H]:
        return self._table

    def _weights_changed(self, active: list[H]) -> bool:
        return [h.weight for h in active] != self._weights

    def _rebuild(self) -> None:
        active = self._active
        self._weights = [h.weight for h in active]
        key = tuple(zip(active, self._weights, strict=True))
        table = self._cache.pop(key, None)
        if table is None:
            table = self._build(active)
        self._cache[key] = table
        while len(self._cache) > self._CACHE_SIZE:
            del self._cache[next(iter(self._cache))]
        self._table = table

    def _build(self, active: list[H]) -> list[H]:
        m = self._config.table_size
        use_hostname = self._config.use_hostname_for_hashing
        entries = sorted(
            (host_hash_key(h, use_hostname), idx, h.weight)
            for idx, h in enumerate(active)
            if h.weight > 0
        )
        if not entries:
            return []
        offsets = [hash64(k) % m for k, _, _ in entries]
        skips = [hash64(k, seed=1) % (m - 1) + 1 for k, _, _ in entries]
        weights = [w for _, _, w in entries]
        max_w = max(weights)
        nexts = [0] * len(entries)
        targets = [0] * len(entries)
        slots = [-1] * m
        filled = 0
        iteration = 1
        n = len(entries)
        while filled < m:
            for i in range(n):
                if filled >= m:
                    break
                # A host of weight max_w claims a slot every iteration, one of max_w / 3
                # every third iteration, and so on.
                if iteration * weights[i] < targets[i]:
                    continue
                targets[i] += max_w
                off = offsets[i]
                skip = skips[i]
                nxt = nexts[i]
                c = (off + skip * nxt) % m
                while slots[c] >= 0:
                    nxt += 1
                    c = (off + skip * nxt) % m
                slots[c] = i
                nexts[i] = nxt + 1
                filled += 1
            iteration += 1
        by_entry = [active[idx] for _, idx, _ in entries]
        return [by_entry[i] for i in slots]

    def _pick(self, hash_key: int | None, attempt: int) -> H | None:
        table = self._table
        if not table:
            return None
        if hash_key is None:
            hash_key = self._rng.getrandbits(64)
        if attempt:
            # Envoy flips most bits of the hash for a retry so the new slot is far away.
            hash_key ^= (_MASK64 - attempt + 1) & _MASK64
        return table[hash_key % len(table)]


def _cookie_value(headers: Headers, name: bytes) -> bytes | None:
    """The first ``name`` cookie across all Cookie headers, surrounding quotes removed."""
    for key, value in headers:
        if key != b"cookie":
            continue
        for part in value.split(b";"):
            k, eq, v = part.strip().partition(b"=")
            if eq and k == name:
                if len(v) >= 2 and v[:1] == b'"' and v[-1:] == b'"':
                    v = v[1:-1]
                return v
    return None


def compute_hash(
    hash_policies: Sequence[HashPolicy],
    headers: Headers,
    source_ip: str | None,
    query: bytes | None,
    add_cookie: AddCookie | None = None,
) -> int | None:
    """The request's hash for RING_HASH / MAGLEV, or None (the balancer then picks randomly).

    Policies are evaluated in order and combined like Envoy (previous hash rotated left by one
    bit, XOR the new one); a ``terminal`` policy that produced a hash stops the evaluation.
    ``query`` is the raw query string (without ``?``). A cookie policy with a TTL whose cookie
    is absent asks ``add_cookie`` for a value to set (and hashes that); without ``add_cookie``
    it yields nothing. ``filter_state`` policies yield nothing.
    """
    result: int | None = None
    params: dict[bytes, bytes] | None = None
    for policy in hash_policies:
        h: int | None = None
        kind = policy.kind
        if kind is HashPolicyKind.HEADER:
            values = [v for k, v in headers if k == policy.name]
            if values:
                rw = policy.regex_rewrite
                if rw is not None:
                    values = [rw.pattern.sub(rw.substitution, v) for v in values]
                # Sorted so that the order of repeated headers does not matter.
                values.sort()
                h = hash64(b"\x00".join(values))
        elif kind is HashPolicyKind.COOKIE:
            cookie = _cookie_value(headers, policy.name)
            if cookie is None and policy.cookie_ttl is not None and add_cookie is not None:
                cookie = add_cookie(policy.name, policy.cookie_path, policy.cookie_ttl)
            if cookie:
                h = hash64(cookie)
        elif kind is HashPolicyKind.CONNECTION_PROPERTIES:
            if policy.source_ip and source_ip:
                h = hash64(source_ip.encode())
        elif kind is HashPolicyKind.QUERY_PARAMETER:
            if params is None:
                params = parse_query(query)
            value = params.get(policy.name)
            if value is not None:
                h = hash64(value)
        if h is not None:
            result = (((result << 1) | (result >> 63)) & _MASK64) ^ h if result is not None else h
        if policy.terminal and result is not None:
            break
    return result
