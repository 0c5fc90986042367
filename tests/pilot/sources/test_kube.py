"""The Kubernetes source on a real pilot: watch events as the API server sends them (with
status, resourceVersion and managedFields) go through pilot's own apply/delete store into
its config directory and snapshot. Only the watch transport is not exercised (no API server
can run here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pilot.server import Pilot, PilotSettings
from pilot.sources.kube import WATCHED, KubeMirror, WatchedKind, WatchEvent
from pilot.sources.store import Action
from pymesh.inject.manifests import plural, render

HOST = "127.0.11.101"
ROOT = Path(__file__).resolve().parents[3]
KINDS = {k.kind: k for k in WATCHED}


@pytest.fixture
async def pilot(tmp_path: Path) -> AsyncIterator[Pilot]:
    pilot = Pilot(
        PilotSettings(tmp_path, xds_address=f"{HOST}:0", api_address=f"{HOST}:0", token="t")
    )
    await pilot.start()
    try:
        yield pilot
    finally:
        await pilot.stop()


def _from_server(obj: dict[str, Any], version: str = "1") -> dict[str, Any]:
    """What a watch hands over: the object with the server's bookkeeping."""
    meta = {
        **obj["metadata"],
        "resourceVersion": version,
        "uid": "9d5a3a8e-0000-4000-8000-000000000001",
        "creationTimestamp": "2026-12-04T10:00:00Z",
        "managedFields": [{"manager": "kubectl", "operation": "Update"}],
    }
    return {**obj, "metadata": meta, "status": {"loadBalancer": {}}}


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "reviews", "namespace": "default", "labels": {"app": "reviews"}},
    "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]},
}


def _virtual_service(weight_v1: int) -> dict[str, Any]:
    v1 = {"destination": {"host": "reviews", "subset": "v1"}, "weight": weight_v1}
    v3 = {"destination": {"host": "reviews", "subset": "v3"}, "weight": 100 - weight_v1}
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [v1, v3]}],
        },
    }


async def test_events_reach_pilots_snapshot(pilot: Pilot) -> None:
    mirror = KubeMirror(pilot)
    changes = await mirror.handle(KINDS["Service"], WatchEvent("ADDED", _from_server(SERVICE)))
    assert [c.action for c in changes] == [Action.CREATED]
    assert pilot.snapshot.get("Service", "default", "reviews") is not None
    stored = yaml.safe_load(Path(changes[0].path or "").read_text())
    assert "status" not in stored and "resourceVersion" not in stored["metadata"]

    vs = KINDS["VirtualService"]
    await mirror.handle(vs, WatchEvent("ADDED", _from_server(_virtual_service(50))))
    # A resync of the same object (new resourceVersion) is no change.
    again = await mirror.handle(vs, WatchEvent("MODIFIED", _from_server(_virtual_service(50), "2")))
    assert [c.action for c in again] == [Action.UNCHANGED]
    changed = await mirror.handle(vs, WatchEvent("MODIFIED", _from_server(_virtual_service(80))))
    assert [c.action for c in changed] == [Action.CONFIGURED]
    route = pilot.snapshot.get("VirtualService", "default", "reviews")
    assert route is not None and route.spec.http[0].route[0].weight == 80

    gone = await mirror.handle(vs, WatchEvent("DELETED", _from_server(_virtual_service(80))))
    assert [c.action for c in gone] == [Action.DELETED]
    assert pilot.snapshot.get("VirtualService", "default", "reviews") is None


async def test_invalid_cluster_object_changes_nothing(pilot: Pilot) -> None:
    mirror = KubeMirror(pilot)
    vs = KINDS["VirtualService"]
    await mirror.handle(vs, WatchEvent("ADDED", _from_server(_virtual_service(50))))
    before = pilot.snapshot.version
    bad = _virtual_service(50)
    bad["spec"]["http"][0]["route"][0]["weight"] = -5
    assert await mirror.handle(vs, WatchEvent("MODIFIED", _from_server(bad))) == []
    assert pilot.snapshot.version == before
    assert await mirror.handle(vs, WatchEvent("BOOKMARK", {"metadata": {}})) == []


async def test_kinds_pilot_does_not_model_are_skipped(pilot: Pilot) -> None:
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "reviews-abcde", "namespace": "default"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.1.2.3"]}],
    }
    changes = await KubeMirror(pilot).handle(
        KINDS["EndpointSlice"], WatchEvent("ADDED", _from_server(slice_))
    )
    assert [c.action for c in changes] == [Action.SKIPPED]


def test_watched_kinds_match_the_installed_crds() -> None:
    committed = (ROOT / "docker/kubernetes/pymesh.yaml").read_text()
    assert committed == render(), "regenerate: python -m pymesh.inject.manifests > ..."
    docs = yaml.safe_load_all(committed)
    crds = {d["metadata"]["name"] for d in docs if d and d["kind"] == "CustomResourceDefinition"}
    istio = {f"{k.plural}.{k.group}" for k in WATCHED if k.group.endswith("istio.io")}
    assert istio == crds
    assert plural("AuthorizationPolicy") == "authorizationpolicies"
    assert plural("Gateway") == "gateways" and plural("ServiceEntry") == "serviceentries"
    assert {k.kind for k in WATCHED} >= {"Service", "EndpointSlice", "Pod", "Namespace"}
    assert isinstance(KINDS["Pod"], WatchedKind)
