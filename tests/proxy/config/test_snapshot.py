"""ProxySnapshot and the SnapshotHolder's atomic swap."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from proxy.config.bootstrap import load_bootstrap
from proxy.config.model import Cluster, ClusterLoadAssignment, Endpoint, Listener, SocketAddress
from proxy.config.snapshot import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ProxySnapshot,
    SnapshotHolder,
)

DATA = Path(__file__).parent / "data"


def test_from_bootstrap_indexes_static_resources() -> None:
    snapshot = ProxySnapshot.from_bootstrap(load_bootstrap(DATA / "front_proxy.yaml"))
    assert set(snapshot.listeners) == {"http"}
    assert set(snapshot.clusters) == {"productpage", "details"}
    assert snapshot.load_assignments["productpage"].endpoints[1].weight == 3
    with pytest.raises(TypeError):
        snapshot.clusters["x"] = Cluster("x")  # type: ignore[index]


def test_with_resources_replace_and_version() -> None:
    snapshot = ProxySnapshot()
    listener = Listener("l", SocketAddress("127.0.0.1", 1))
    first = snapshot.with_listeners([listener], "v1")
    assert first.versions[LISTENER_TYPE] == "v1"
    assert snapshot.listeners == {}  # the original is untouched
    second = first.with_listeners([], "v2")
    assert second.listeners == {} and second.versions[LISTENER_TYPE] == "v2"
    clusters = second.with_clusters([Cluster("eds", eds_service_name="svc")], "c1")
    assert clusters.versions == {LISTENER_TYPE: "v2", CLUSTER_TYPE: "c1"}


def test_eds_assignments_merge_and_resolve_by_service_name() -> None:
    cluster = Cluster("outbound|80||svc", eds_service_name="svc")
    assignment = ClusterLoadAssignment("svc", (Endpoint("10.0.0.1", 80),))
    snapshot = (
        ProxySnapshot().with_clusters([cluster], "1").with_load_assignments([assignment], "1")
    )
    other = ClusterLoadAssignment("other", ())
    merged = snapshot.with_load_assignments([other], "2", merge=True)
    assert set(merged.load_assignments) == {"svc", "other"}
    assert merged.versions[ENDPOINT_TYPE] == "2"
    assert merged.load_assignment_for(cluster) == assignment
    assert merged.load_assignment_for(Cluster("static")) is None


def test_holder_swaps_and_notifies_in_order() -> None:
    holder = SnapshotHolder()
    initial = holder.current
    seen: list[tuple[ProxySnapshot, ProxySnapshot]] = []
    unsubscribe = holder.subscribe(lambda old, new: seen.append((old, new)))
    new = ProxySnapshot().with_clusters([Cluster("a")], "1")
    assert holder.swap(new) is initial
    assert holder.current is new
    updated = holder.update(lambda current: current.with_clusters([], "2"))
    assert seen == [(initial, new), (new, updated)]
    unsubscribe()
    holder.swap(ProxySnapshot())
    assert len(seen) == 2


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    holder = SnapshotHolder()
    calls: list[str] = []

    def broken(old: ProxySnapshot, new: ProxySnapshot) -> None:
        raise RuntimeError("boom")

    holder.subscribe(broken)
    holder.subscribe(lambda old, new: calls.append("ok"))
    holder.swap(ProxySnapshot())
    assert calls == ["ok"]


def test_concurrent_updates_are_not_lost() -> None:
    holder = SnapshotHolder()

    def add(index: int) -> None:
        holder.update(
            lambda current: current.with_clusters(
                [*current.clusters.values(), Cluster(f"c{index}")], ""
            )
        )

    threads = [threading.Thread(target=add, args=(index,)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(holder.current.clusters) == 20
