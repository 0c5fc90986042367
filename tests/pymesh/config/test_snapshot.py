from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pymesh.config import ConfigSnapshot, SnapshotHolder, load_documents, load_path
from pymesh.config.model import DestinationRule, VirtualService

TEXT = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews, subsets: [{name: v1, labels: {version: v1}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: v1}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: other}
spec: {host: ratings}
"""


def snapshot(text: str = TEXT, source: str = "a.yaml") -> ConfigSnapshot:
    return ConfigSnapshot(load_documents(text, source).resources)


def test_index_by_kind_namespace_and_name() -> None:
    snap = snapshot()
    assert len(snap) == 3
    assert snap.get("DestinationRule", "default", "reviews").spec.host == "reviews"
    assert snap.get("DestinationRule", "default", "ratings") is None
    assert ("VirtualService", "default", "reviews") in snap
    assert [r.name for r in snap.of_kind(DestinationRule)] == ["reviews", "ratings"]
    assert [r.name for r in snap.of_kind("DestinationRule", namespace="other")] == ["ratings"]
    (vs,) = snap.of_kind(VirtualService)
    assert vs.spec.http[0].route[0].destination.subset == "v1"
    assert snap.kinds == ("DestinationRule", "VirtualService")


def test_resources_are_immutable() -> None:
    snap = snapshot()
    with pytest.raises(AttributeError):
        snap.version = "x"  # type: ignore[misc]
    res = snap.resources[0]
    with pytest.raises(AttributeError):
        res.spec.host = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        res.spec.subsets[0].labels["version"] = "v2"  # type: ignore[index]


def test_version_is_a_content_hash() -> None:
    a = snapshot()
    # Same content from another file and in another order: same version.
    docs = TEXT.split("---")
    b = snapshot("---".join(reversed(docs)), source="b.yaml")
    assert a.version == b.version
    assert a == b
    changed = snapshot(TEXT.replace("version: v1", "version: v2"))
    assert changed.version != a.version
    assert ConfigSnapshot().version != a.version


def test_updated_adds_replaces_and_deletes() -> None:
    snap = snapshot()
    extra = load_documents(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n", "c.yaml"
    ).resources
    newer = snap.updated(upserts=extra, deletes=[("DestinationRule", "other", "ratings")])
    assert len(newer) == 3
    assert newer.get("ServiceAccount", "default", "sa") is not None
    assert newer.get("DestinationRule", "other", "ratings") is None
    assert len(snap) == 3 and snap.get("DestinationRule", "other", "ratings") is not None


def test_samples_snapshot(samples: Path) -> None:
    snap = ConfigSnapshot(load_path(samples / "bookinfo").resources)
    assert snap.get("Service", "default", "reviews") is not None
    assert snap.version == ConfigSnapshot(load_path(samples / "bookinfo").resources).version


def test_holder_swaps_atomically() -> None:
    first, second = snapshot(), ConfigSnapshot()
    holder = SnapshotHolder(first)
    assert holder.current is first
    assert holder.swap(second) is first
    assert holder.current is second
    assert not holder.compare_and_swap(first, first)
    assert holder.compare_and_swap(second, first)
    assert holder.current is first
    assert SnapshotHolder().current.resources == ()


def test_holder_update_loses_no_concurrent_change() -> None:
    holder = SnapshotHolder()
    accounts = [
        load_documents(
            f"apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa{i}}}\n"
        ).resources[0]
        for i in range(40)
    ]

    def add(i: int) -> None:
        holder.update(lambda snap: snap.updated(upserts=[accounts[i]]))

    threads = [threading.Thread(target=add, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(holder.current) == 40
