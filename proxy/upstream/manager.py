"""The cluster manager: the proxy's set of runtime clusters, kept in step with snapshots."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

import structlog

from proxy.config.model import DiscoveryType
from proxy.config.snapshot import ProxySnapshot
from proxy.stats import StatsStore
from proxy.transport.upstream_tls import build_sockets, secret_names
from proxy.upstream.cluster import RuntimeCluster
from proxy.upstream.istio_alpn import http_sockets
from proxy.upstream.pool import Connector

__all__ = ["ClusterManager"]

_UNSET: tuple[object, ...] = (object(),)

log = structlog.get_logger(__name__)


class ClusterManager:
    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        stats: StatsStore,
        rng: random.Random,
        clock: Callable[[], float],
        connector: Connector | None = None,
    ) -> None:
        self._loop = loop
        self._connector = connector
        self._stats = stats
        self._rng = rng
        self._clock = clock
        self._clusters: dict[str, RuntimeCluster] = {}
        # The secrets each cluster's sockets were built with: a rotation rebuilds them.
        self._socket_secrets: dict[str, tuple[object, ...]] = {}
        self._added = stats.counter("cluster_manager.cluster_added")
        self._modified = stats.counter("cluster_manager.cluster_modified")
        self._removed = stats.counter("cluster_manager.cluster_removed")
        self._active = stats.gauge("cluster_manager.active_clusters")

    def pick_host(self, cluster: str) -> str | None:
        """``host:port`` of a host the cluster's load balancer picks (a side call such as the
        rate limit service's), or None."""
        runtime = self.get(cluster)
        host = runtime.choose_host(None) if runtime is not None else None
        return None if host is None else f"{host.address}:{host.port}"

    def get(self, name: str) -> RuntimeCluster | None:
        return self._clusters.get(name)

    def __iter__(self) -> Iterator[RuntimeCluster]:
        return iter(self._clusters.values())

    def apply(self, snapshot: ProxySnapshot) -> Mapping[str, RuntimeCluster]:
        """Add, replace and remove clusters; a cluster whose config is unchanged is kept
        (with its pools and host state) and only sees its endpoints updated. A removed or
        replaced cluster drains: requests that captured it finish on it. Returns the new
        set, for the next runtime snapshot."""
        wanted = snapshot.clusters
        for name in [n for n in self._clusters if n not in wanted]:
            self._clusters.pop(name).drain()
            self._socket_secrets.pop(name, None)
            self._removed.value += 1
        for name, model in wanted.items():
            current = self._clusters.get(name)
            if current is None or current.model != model:
                if current is not None:
                    current.drain()
                    self._modified.value += 1
                else:
                    self._added.value += 1
                current = self._clusters[name] = RuntimeCluster(
                    model,
                    loop=self._loop,
                    stats=self._stats,
                    rng=self._rng,
                    clock=self._clock,
                    connector=self._connector,
                )
                self._socket_secrets.pop(name, None)
            self._update_sockets(current, snapshot)
            if model.type is DiscoveryType.EDS:
                assignment = snapshot.load_assignments.get(model.eds_service_name or name)
                if assignment is not None and assignment is not current.load_assignment:
                    current.update_endpoints(assignment)
        self._active.value = len(self._clusters)
        return MappingProxyType(dict(self._clusters))

    def _update_sockets(self, cluster: RuntimeCluster, snapshot: ProxySnapshot) -> None:
        names = secret_names(cluster.model)
        used = tuple(snapshot.secrets.get(n) for n in names)
        if self._socket_secrets.get(cluster.name, _UNSET) == used:
            return
        self._socket_secrets[cluster.name] = used
        # New connections use the new certificate; open ones keep the one they began with.
        cluster.sockets = build_sockets(cluster.model, snapshot.secrets)
        cluster.http_sockets = http_sockets(cluster.model, snapshot.secrets, h2=False)
        cluster.h2_sockets = http_sockets(cluster.model, snapshot.secrets, h2=True)
        if names:
            log.info("cluster transport sockets built", cluster=cluster.name, secrets=names)

    def close(self) -> None:
        for cluster in self._clusters.values():
            cluster.close()
        self._clusters.clear()
