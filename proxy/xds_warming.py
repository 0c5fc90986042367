"""Envoy's warming of pushed clusters and listeners, with no I/O: which version of each one runs.

A cluster that CDS adds or changes is *warming* until what it needs has arrived: the endpoints
of an EDS cluster and the SDS secrets of its transport sockets (over ADS, or from the identity
agent's SDS). A listener that LDS adds or changes is warming until the route tables its
connection managers name (RDS) and the secrets of its filter chains have arrived. Meanwhile the
version that ran before keeps serving, and a new resource does not exist yet (a route to a
cluster still warming answers 503 NC, as in Envoy). When a need's config source has an
``initial_fetch_timeout`` (Envoy's default 15 s; Istio sets 0, wait forever) and it has not
arrived in that time, the resource is used without it: a cluster with no endpoints, a listener
whose routes are missing.

Warming never holds an ACK: the xDS client ACKs a response as soon as it is accepted, as Envoy
does, and this module only decides what the next snapshot runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import structlog

from proxy.config.model import (
    Cluster,
    DiscoveryType,
    HttpConnectionManager,
    Listener,
    SdsSecretConfig,
)
from proxy.config.snapshot import ENDPOINT_TYPE, ROUTE_TYPE, SECRET_TYPE, ProxySnapshot
from proxy.stats import StatsStore

log = structlog.get_logger(__name__)

__all__ = [
    "Need",
    "Selection",
    "Warmer",
    "Warming",
    "cluster_needs",
    "listener_needs",
    "names_by_source",
    "needs_of",
    "report",
]

#: Envoy's default initial_fetch_timeout, for a resource whose config source sets none.
DEFAULT_FETCH_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Need:
    """One resource a cluster or listener waits for: ``type_url`` and ``name`` over ADS, or a
    secret from the gRPC config source (the identity agent) whose static cluster is ``agent``."""

    type_url: str
    name: str
    agent: str | None = None


Needs = Mapping[Need, float]
"""What a resource waits for, each with its config source's initial_fetch_timeout."""


def _secret_needs(tls: Any, found: dict[Need, float]) -> None:
    if tls is None:
        return
    refs: Iterable[SdsSecretConfig | None] = (
        *tls.common.tls_certificate_sds,
        tls.common.validation_context_sds,
    )
    for ref in refs:
        source = ref.config_source if ref is not None else None
        if ref is None or source is None:
            continue  # a static secret: the bootstrap has it
        if source.api_cluster is not None:
            found[Need(SECRET_TYPE, ref.name, source.api_cluster)] = source.initial_fetch_timeout
        elif source.ads:
            found[Need(SECRET_TYPE, ref.name)] = source.initial_fetch_timeout


def cluster_needs(cluster: Cluster) -> Needs:
    """An EDS cluster's endpoints, and the secrets of its transport sockets."""
    found: dict[Need, float] = {}
    if cluster.type is DiscoveryType.EDS:
        source = cluster.eds_config
        timeout = source.initial_fetch_timeout if source is not None else DEFAULT_FETCH_TIMEOUT
        found[Need(ENDPOINT_TYPE, cluster.service_name)] = timeout
    _secret_needs(cluster.transport_socket, found)
    for match in cluster.transport_socket_matches:
        _secret_needs(match.transport_socket, found)
    return MappingProxyType(found)


def listener_needs(listener: Listener) -> Needs:
    """The route tables of its connection managers (RDS), and the secrets of its chains."""
    found: dict[Need, float] = {}
    for chain in (*listener.filter_chains, listener.default_filter_chain):
        if chain is None:
            continue
        _secret_needs(chain.transport_socket, found)
        for nf in chain.filters:
            if isinstance(nf.config, HttpConnectionManager) and nf.config.rds is not None:
                rds = nf.config.rds
                found[Need(ROUTE_TYPE, rds.route_config_name)] = (
                    rds.config_source.initial_fetch_timeout
                )
    return MappingProxyType(found)


def needs_of(clusters: Iterable[Cluster], listeners: Iterable[Listener]) -> set[Need]:
    found: set[Need] = set()
    for cluster in clusters:
        found.update(cluster_needs(cluster))
    for listener in listeners:
        found.update(listener_needs(listener))
    return found


def names_by_source(
    needs: Iterable[Need],
) -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]:
    """The names to subscribe to: by type URL over ADS, and by agent cluster."""
    ads: dict[str, set[str]] = {}
    agent: dict[str, set[str]] = {}
    for need in needs:
        if need.agent is None:
            ads.setdefault(need.type_url, set()).add(need.name)
        else:
            agent.setdefault(need.agent, set()).add(need.name)
    return (
        {t: frozenset(n) for t, n in ads.items()},
        {c: frozenset(n) for c, n in agent.items()},
    )


@dataclass(frozen=True, slots=True)
class Selection:
    """The outcome of one round: the versions to run, by name; the accepted versions still
    warming; the names that stopped waiting this round because a fetch timed out; and when the
    next wait ends (None: no wait has a deadline)."""

    use: Mapping[str, Any] = field(default_factory=dict)
    warming: Mapping[str, Any] = field(default_factory=dict)
    timed_out: tuple[str, ...] = ()
    deadline: float | None = None


class Warmer:
    """Warming of one resource type (clusters, or listeners). ``needs`` says what a resource
    waits for; each version is timed from the round it was first seen in."""

    def __init__(self, needs: Callable[[Any], Needs]) -> None:
        self._needs = needs
        # name -> (the version warming, when it started)
        self._since: dict[str, tuple[Any, float]] = {}

    def select(
        self,
        accepted: Mapping[str, Any],
        active: Mapping[str, Any],
        has: Callable[[Need], bool],
        now: float,
    ) -> Selection:
        """``accepted``: the last accepted state of the world; ``active``: the versions that
        run now. A resource no longer accepted is gone at once (Envoy removes it, warm or not)."""
        use: dict[str, Any] = {}
        warming: dict[str, Any] = {}
        timed_out: list[str] = []
        deadline: float | None = None
        for name in [n for n in self._since if n not in accepted]:
            del self._since[name]
        for name, model in accepted.items():
            running = active.get(name)
            if running is not None and running == model:
                use[name] = model
                self._since.pop(name, None)
                continue
            seen = self._since.get(name)
            since = seen[1] if seen is not None and seen[0] == model else now
            missing = [t for need, t in self._needs(model).items() if not has(need)]
            # A timeout of 0 waits forever; a positive one ends the wait once it has passed.
            forever = any(t <= 0 for t in missing)
            ends = [since + t for t in missing if t > 0 and now < since + t]
            if not forever and not ends:
                use[name] = model
                self._since.pop(name, None)
                if missing:
                    timed_out.append(name)
                continue
            self._since[name] = (model, since)
            warming[name] = model
            if running is not None:
                use[name] = running
            if ends:
                deadline = min(ends) if deadline is None else min(deadline, *ends)
        return Selection(
            MappingProxyType(use), MappingProxyType(warming), tuple(timed_out), deadline
        )


class Warming:
    """Both warmers: the versions of pushed clusters and listeners that run, given the
    running snapshot and the static resources (never warmed: the bootstrap's own)."""

    def __init__(self) -> None:
        self.clusters = Warmer(cluster_needs)
        self.listeners = Warmer(listener_needs)

    def select(
        self,
        clusters: Mapping[str, Cluster],
        listeners: Mapping[str, Listener],
        live: ProxySnapshot,
        static: ProxySnapshot,
        has: Callable[[Need], bool],
        now: float,
    ) -> tuple[Selection, Selection]:
        def dynamic(running: Mapping[str, Any], fixed: Mapping[str, Any]) -> Mapping[str, Any]:
            return {name: model for name, model in running.items() if name not in fixed}

        return (
            self.clusters.select(clusters, dynamic(live.clusters, static.clusters), has, now),
            self.listeners.select(listeners, dynamic(live.listeners, static.listeners), has, now),
        )


def report(
    stats: StatsStore, clusters: Selection, listeners: Selection, active_listeners: int
) -> None:
    """Envoy's warming gauges and fetch-timeout counters, and a log line while warming."""
    stats.gauge("cluster_manager.warming_clusters").value = len(clusters.warming)
    stats.gauge("listener_manager.total_listeners_warming").value = len(listeners.warming)
    stats.gauge("listener_manager.total_listeners_active").value = active_listeners
    for name in clusters.timed_out:
        stats.counter(f"cluster.{name}.init_fetch_timeout").value += 1
        log.warning("cluster warming timed out; using it as it is", cluster=name)
    for name in listeners.timed_out:
        log.warning("listener warming timed out; using it as it is", listener=name)
    if clusters.warming or listeners.warming:
        log.info(
            "xds resources warming",
            clusters=sorted(clusters.warming),
            listeners=sorted(listeners.warming),
        )
