"""The service dependency graph: workloads and services as nodes, calls as edges, with request
rate, error rate, p50/p99 latency, protocol and mTLS over a time window.

Edges follow Kiali's shape, workload → service → workload, built from one report per call:
the source's when the caller has a sidecar (it knows the service it asked for), else the
destination's (a caller from outside the mesh shows as ``unknown``). The destination's report
is also what says whether the connection was mutual TLS. Counts are kept in fixed time slots
per edge, so a window query sums a few slots and old traffic ages out on its own.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mixer.metrics import BUCKETS
from mixer.peers import UNKNOWN, PeerInfo
from mixer.report import Report

__all__ = ["EdgeStats", "Graph", "NodeKey", "quantile"]

SLOT = 5.0  # seconds per slot
_NB = len(BUCKETS) + 1

NodeKey = tuple[str, str, str]  # (kind, namespace, name): ("workload"|"service"|"unknown", ...)


class _Slot:
    __slots__ = ("errors", "hist", "requests", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.requests = 0
        self.errors = 0
        self.hist = [0] * _NB


class _Edge:
    __slots__ = ("mtls", "protocol", "slots")

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.mtls: bool | None = None
        self.slots: list[_Slot] = []


@dataclass(frozen=True, slots=True)
class EdgeStats:
    source: NodeKey
    target: NodeKey
    protocol: str
    requests: int
    rps: float
    error_rate: float
    p50_ms: float | None
    p99_ms: float | None
    mtls: bool | None


def quantile(q: float, hist: list[int]) -> float | None:
    """Prometheus' ``histogram_quantile`` on non-cumulative bucket counts."""
    total = sum(hist)
    if total == 0:
        return None
    rank = q * total
    running = 0
    for i, n in enumerate(hist):
        if running + n >= rank and n:
            if i == len(BUCKETS):
                return BUCKETS[-1]
            low = BUCKETS[i - 1] if i else 0.0
            high = BUCKETS[i]
            return low + (high - low) * (rank - running) / n
        running += n
    return BUCKETS[-1]


def _workload(p: PeerInfo) -> NodeKey:
    if not p.known:
        return ("unknown", UNKNOWN, UNKNOWN)
    return ("workload", p.namespace, p.workload)


def _is_error(r: Report) -> bool:
    if r.protocol == "grpc":
        return r.grpc_status not in ("", "0") or r.response_code >= 500
    return r.response_code >= 500 or r.response_code == 0


class Graph:
    """Edges from reports (:meth:`record`), read back over a window (:meth:`snapshot`)."""

    def __init__(self, clock: Callable[[], float], *, keep: float = 900.0) -> None:
        self.clock = clock
        self.keep_slots = int(keep / SLOT) + 1
        self._edges: dict[tuple[NodeKey, NodeKey], _Edge] = {}
        self._nodes: dict[NodeKey, dict[str, str]] = {}
        #: (caller workload, service) -> mutual TLS, from the destination side's reports
        self._mtls: dict[tuple[NodeKey, str], bool] = {}

    def record(self, r: Report) -> None:
        src = _workload(r.source)
        if r.reporter == "destination":
            self._mtls[(src, r.service.host)] = r.security_policy == "mutual_tls"
            if r.source.known:
                return  # the caller's own report describes this call
        svc: NodeKey = ("service", r.service.namespace, r.service.host)
        self._node(src, r.source)
        self._node(svc, None)
        slot = int(r.start // SLOT)
        error = _is_error(r)
        b = bisect_left(BUCKETS, r.duration_ms)
        self._add((src, svc), r.protocol, slot, error, b)
        if r.destination.known:
            dst = _workload(r.destination)
            self._node(dst, r.destination)
            self._add((svc, dst), r.protocol, slot, error, b)

    def _node(self, key: NodeKey, peer: PeerInfo | None) -> None:
        if key not in self._nodes:
            info = {"app": peer.app, "version": peer.version} if peer is not None else {}
            self._nodes[key] = info

    def _add(
        self, key: tuple[NodeKey, NodeKey], protocol: str, slot: int, err: bool, b: int
    ) -> None:
        edge = self._edges.get(key)
        if edge is None:
            edge = self._edges[key] = _Edge(protocol)
        slots = edge.slots
        # Reports arrive nearly in order; a late one lands in the newest slot.
        if not slots or slot > slots[-1].start:
            slots.append(_Slot(slot))
            if len(slots) > self.keep_slots:
                del slots[0]
        s = slots[-1]
        s.requests += 1
        s.errors += err
        s.hist[b] += 1

    def snapshot(self, window: float = 60.0) -> dict[str, Any]:
        """The graph of the last ``window`` seconds as the graph API returns it."""
        now = self.clock()
        first = int((now - window) // SLOT) + 1
        edges: list[EdgeStats] = []
        used: set[NodeKey] = set()
        for (src, dst), edge in self._edges.items():
            requests = errors = 0
            hist = [0] * _NB
            for s in edge.slots:
                if s.start >= first:
                    requests += s.requests
                    errors += s.errors
                    hist = [a + b for a, b in zip(hist, s.hist, strict=True)]
            if not requests:
                continue
            mtls = self._mtls.get((src, dst[2])) if dst[0] == "service" else None
            edges.append(
                EdgeStats(
                    source=src,
                    target=dst,
                    protocol=edge.protocol,
                    requests=requests,
                    rps=requests / window,
                    error_rate=errors / requests,
                    p50_ms=quantile(0.5, hist),
                    p99_ms=quantile(0.99, hist),
                    mtls=mtls,
                )
            )
            used.update((src, dst))
        return {
            "window_seconds": window,
            "timestamp": now,
            "nodes": [_node_json(k, self._nodes.get(k, {})) for k in sorted(used)],
            "edges": [_edge_json(e) for e in edges],
        }


def node_id(key: NodeKey) -> str:
    kind, namespace, name = key
    return f"{kind}:{namespace}:{name}"


def _node_json(key: NodeKey, info: dict[str, str]) -> dict[str, Any]:
    kind, namespace, name = key
    label = _service_label(name) if kind == "service" else name
    return {"id": node_id(key), "kind": kind, "namespace": namespace, "name": name,
            "label": label, **info}  # fmt: skip


def _service_label(host: str) -> str:
    """A service's short name, as Kiali draws it; a call made to an address (``curl
    10.0.0.5:8000``, a passthrough) keeps the whole address rather than its first octet."""
    bare = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    try:
        ipaddress.ip_address(bare.strip("[]"))
    except ValueError:
        return host.split(".")[0]
    return host


def _edge_json(e: EdgeStats) -> dict[str, Any]:
    return {
        "id": f"{node_id(e.source)}->{node_id(e.target)}",
        "source": node_id(e.source),
        "target": node_id(e.target),
        "protocol": e.protocol,
        "requests": e.requests,
        "rps": round(e.rps, 3),
        "error_rate": round(e.error_rate, 4),
        "p50_ms": None if e.p50_ms is None else round(e.p50_ms, 2),
        "p99_ms": None if e.p99_ms is None else round(e.p99_ms, 2),
        "mtls": e.mtls,
    }
