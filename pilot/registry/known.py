"""The proxies pilot knows, kept across pilot restarts.

In process mode a workload is an endpoint because its sidecar is connected (auto-registration).
A pilot that starts with no memory of them would answer the first sidecar to reconnect with a
registry that lacks every workload still waiting to reconnect: empty endpoint lists, 503s until
the rest are back. Istio keeps auto-registered WorkloadEntries in its config store, so a new
istiod starts with them, and removes one only when its proxy stays away for a grace period.
This does the same with a file: every rebuild records the connected proxies' nodes; a starting
pilot loads them before it serves anything, and each remembered proxy counts as connected
until it reconnects (its live node takes over) or the grace period ends.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import structlog
from envoy.config.core.v3 import base_pb2

from pilot.model.proxy import ProxyNode

__all__ = ["KnownProxies"]

log = structlog.get_logger(__name__)

_FORMAT = 1


class KnownProxies:
    """``merged(live)`` is what the registry is built from; ``record(live)`` persists."""

    def __init__(self, path: Path | None, *, grace: float, clock: Callable[[], float]) -> None:
        self.path = path
        self.grace = grace
        self.clock = clock
        self.expires_at = 0.0
        self._remembered: dict[str, ProxyNode] = {}
        self._recorded: dict[str, bytes] | None = None
        self.frozen = False

    def load(self) -> int:
        """Read the file of the previous run; returns how many proxies it remembers. A missing
        file is a first start; an unreadable one is logged and ignored (the proxies register
        again as they reconnect)."""
        if self.path is None or not self.path.is_file():
            return 0
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != _FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            nodes = {}
            for entry in data["proxies"]:
                raw = base64.b64decode(entry["node"])
                nodes[str(entry["id"])] = raw
            remembered = {pid: _parse(raw) for pid, raw in nodes.items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("known proxies not loaded", path=str(self.path), error=str(exc))
            return 0
        self._remembered = {pid: p for pid, p in remembered.items() if p is not None}
        self._recorded = nodes
        self.expires_at = self.clock() + self.grace
        log.info("known proxies loaded", proxies=len(self._remembered), grace=self.grace)
        return len(self._remembered)

    @property
    def waiting(self) -> int:
        """Remembered proxies that have not reconnected (0 once the grace period is over)."""
        return len(self._remembered) if self.clock() < self.expires_at else 0

    def merged(self, live: Iterable[ProxyNode]) -> tuple[ProxyNode, ...]:
        """The live proxies, plus the remembered ones not reconnected yet (within grace)."""
        current = {p.id: p for p in live}
        if self._remembered:
            if self.clock() >= self.expires_at:
                gone = sorted(set(self._remembered) - set(current))
                if gone:
                    log.info("remembered proxies did not reconnect", proxies=gone[:20])
                self._remembered = {}
            else:
                for pid in list(self._remembered):
                    if pid in current:
                        del self._remembered[pid]
                    else:
                        current[pid] = self._remembered[pid]
        return tuple(current.values())

    def record(self, nodes: Mapping[str, Any]) -> None:
        """Persist ``{proxy id: envoy Node}`` of the live proxies plus the remembered ones
        (atomically; only when it changed). Nothing is written once :attr:`frozen` is set:
        a pilot shutting down closes every stream, and that is not every proxy leaving."""
        if self.path is None or self.frozen:
            return
        serialized = {
            pid: node.SerializeToString(deterministic=True) for pid, node in nodes.items()
        }
        for pid in self._remembered:
            if pid not in serialized and self._recorded is not None and pid in self._recorded:
                serialized[pid] = self._recorded[pid]
        if serialized == self._recorded:
            return
        body = {
            "format": _FORMAT,
            "proxies": [
                {"id": pid, "node": base64.b64encode(raw).decode("ascii")}
                for pid, raw in sorted(serialized.items())
            ],
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(body), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("known proxies not saved", path=str(self.path), error=str(exc))
            return
        self._recorded = serialized


def _parse(raw: bytes) -> ProxyNode | None:
    try:
        return ProxyNode.from_node(base_pb2.Node.FromString(raw))
    except Exception as exc:  # a node this pilot no longer accepts: it registers anew
        log.warning("remembered proxy dropped", error=str(exc))
        return None
