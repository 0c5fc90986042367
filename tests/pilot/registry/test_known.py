"""The proxies a pilot remembers across a restart: what a new pilot builds its first registry
from, until each one reconnects or the grace period ends."""

from __future__ import annotations

import json
from pathlib import Path

from pilot.model import ProxyNode
from pilot.registry.known import KnownProxies
from tests.pilot.xds.ads_client import istio_node


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _nodes(*pods: str) -> dict[str, object]:
    nodes = [istio_node(pod, ip=f"10.0.0.{i + 1}") for i, pod in enumerate(pods)]
    return {n.id: n for n in nodes}


def _parsed(nodes: dict[str, object]) -> list[ProxyNode]:
    return [ProxyNode.from_node(n) for n in nodes.values()]


def _first_run(path: Path, *pods: str) -> dict[str, object]:
    nodes = _nodes(*pods)
    KnownProxies(path, grace=30, clock=Clock()).record(nodes)
    return nodes


def test_a_restarted_pilot_counts_the_last_runs_proxies_until_they_reconnect(
    tmp_path: Path,
) -> None:
    path = tmp_path / "known.json"
    nodes = _first_run(path, "reviews-v1-a-1", "reviews-v2-b-2")
    clock = Clock()
    known = KnownProxies(path, grace=30, clock=clock)
    assert known.load() == 2
    assert known.waiting == 2
    remembered = known.merged([])
    assert sorted(p.id for p in remembered) == sorted(nodes)

    # v1 reconnects with new labels: its live node wins, v2 is still remembered.
    v1_id = next(iter(nodes))
    live = ProxyNode.from_node(
        istio_node("reviews-v1-a-1", ip="10.0.0.1", labels={"version": "v1"})
    )
    assert live.id == v1_id
    merged = {p.id: p for p in known.merged([live])}
    assert merged[v1_id] is live and len(merged) == 2
    # Once reconnected it is live only: gone from the live set, gone from the registry.
    assert [p.id for p in known.merged([])] == [n for n in nodes if n != v1_id]


def test_remembered_proxies_are_dropped_when_the_grace_period_ends(tmp_path: Path) -> None:
    path = tmp_path / "known.json"
    _first_run(path, "reviews-v1-a-1", "reviews-v2-b-2")
    clock = Clock()
    known = KnownProxies(path, grace=30, clock=clock)
    known.load()
    clock.now += 29.9
    assert len(known.merged([])) == 2
    clock.now += 0.1
    assert known.waiting == 0
    assert known.merged([]) == ()


def test_record_writes_only_changes_and_nothing_once_frozen(tmp_path: Path) -> None:
    path = tmp_path / "known.json"
    known = KnownProxies(path, grace=30, clock=Clock())
    nodes = _nodes("a-b-c")
    known.record(nodes)
    path.write_text(path.read_text())  # same content, new mtime: a write would change it
    stamp = path.stat().st_mtime_ns
    known.record(dict(nodes))
    assert path.stat().st_mtime_ns == stamp
    known.frozen = True
    known.record({})
    assert [p["id"] for p in json.loads(path.read_text())["proxies"]] == list(nodes)


def test_a_remembered_proxy_that_has_not_reconnected_stays_in_the_file(tmp_path: Path) -> None:
    """A second restart inside the grace period must not forget who was still on the way."""
    path = tmp_path / "known.json"
    nodes = _first_run(path, "reviews-v1-a-1", "reviews-v2-b-2")
    known = KnownProxies(path, grace=30, clock=Clock())
    known.load()
    first = next(iter(nodes))
    known.merged(_parsed({first: nodes[first]}))
    known.record({first: nodes[first]})
    again = KnownProxies(path, grace=30, clock=Clock())
    assert again.load() == 2


def test_an_unreadable_file_is_a_first_start(tmp_path: Path) -> None:
    path = tmp_path / "known.json"
    path.write_text("{not json")
    known = KnownProxies(path, grace=30, clock=Clock())
    assert known.load() == 0
    assert known.merged([]) == ()
    path.write_text(json.dumps({"format": 99, "proxies": []}))
    assert known.load() == 0
    assert KnownProxies(None, grace=30, clock=Clock()).load() == 0
