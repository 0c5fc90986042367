"""Host selection through LbContext: what the router tells a cluster, and nothing more."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from proxy.config.model import Cluster, DiscoveryType
from proxy.config.model_cluster import OriginalDstLbConfig
from proxy.stats import StatsStore
from proxy.upstream.cluster import RuntimeCluster
from tests.proxy.fakes import FakeClock, FakeConnector


@dataclass
class Context:
    hash_key: int | None = None
    original_destination: tuple[str, int] | None = None
    downstream_headers: list[tuple[bytes, bytes]] | None = field(default_factory=list)
    excluded_hosts: frozenset[object] | None = None
    host_selection_attempts: int = 1


def make(model: Cluster) -> RuntimeCluster:
    clock = FakeClock()
    return RuntimeCluster(
        model,
        loop=clock,  # type: ignore[arg-type]
        stats=StatsStore(),
        rng=random.Random(1),
        clock=clock.time,
        connector=FakeConnector(),
    )


def test_original_destination_comes_from_the_context() -> None:
    cluster = make(Cluster(name="orig", type=DiscoveryType.ORIGINAL_DST))
    host = cluster.choose_host(Context(original_destination=("127.0.1.20", 9080)))
    assert host is not None and host.address_str == "127.0.1.20:9080"
    # The same destination is the same host (its pool and counters are kept).
    assert cluster.choose_host(Context(original_destination=("127.0.1.20", 9080))) is host
    assert cluster.choose_host(None) is None  # nothing to go by


def test_original_destination_from_a_header() -> None:
    config = OriginalDstLbConfig(use_http_header=True, http_header_name=b"x-dest")
    cluster = make(
        Cluster(name="orig", type=DiscoveryType.ORIGINAL_DST, original_dst_lb_config=config)
    )
    ctx = Context(downstream_headers=[(b"x-dest", b"127.0.1.21:81")])
    host = cluster.choose_host(ctx)
    assert host is not None and (host.address, host.port) == ("127.0.1.21", 81)


def test_excluded_hosts_are_avoided_within_the_attempts() -> None:
    from proxy.config.model import ClusterLoadAssignment, Endpoint

    cluster = make(Cluster(name="rr", type=DiscoveryType.STATIC))
    cluster.update_endpoints(
        ClusterLoadAssignment("rr", tuple(Endpoint(f"127.0.1.{10 + i}", 80) for i in range(2)))
    )
    first = cluster.choose_host(Context())
    assert first is not None
    for _ in range(4):
        again = cluster.choose_host(
            Context(excluded_hosts=frozenset({first}), host_selection_attempts=3)
        )
        assert again is not None and again is not first
