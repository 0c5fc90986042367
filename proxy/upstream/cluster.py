"""A runtime cluster: a :class:`~proxy.config.model.Cluster` plus its live hosts, load
balancer, circuit-breaker counters, outlier detector and connection pools.

Endpoint updates (EDS pushes, DNS answers) keep the :class:`Host` objects of endpoints that
stay, so their pools, active request counts and ejection state survive the update.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import structlog

from proxy.config.model import (
    Cluster,
    ClusterLoadAssignment,
    DiscoveryType,
    DnsLookupFamily,
    HealthStatus,
    LbPolicy,
    UpstreamProtocol,
)
from proxy.routing.circuit_breaker import ResourceLimits
from proxy.routing.lb import LoadBalancer, build_load_balancer
from proxy.routing.outlier import LocalFailure, OutlierAction, OutlierDetector, OutlierEvent
from proxy.stats import ClusterStats, StatsStore
from proxy.transport.upstream_tls import (
    MATCH_NAMESPACE,
    PLAINTEXT,
    TransportSocket,
    TransportSockets,
)
from proxy.upstream.h2_pool import H2ConnectionPool
from proxy.upstream.host import Host
from proxy.upstream.interfaces import LbContext, UpstreamPool
from proxy.upstream.pool import ConnectionPool, Connector, LoopConnector

__all__ = ["RuntimeCluster"]

log = structlog.get_logger(__name__)

_NO_MATCH: Mapping[str, object] = MappingProxyType({})
_UNHEALTHY = frozenset({HealthStatus.UNHEALTHY, HealthStatus.DRAINING, HealthStatus.TIMEOUT})


class RuntimeCluster:
    def __init__(
        self,
        model: Cluster,
        *,
        loop: asyncio.AbstractEventLoop,
        stats: StatsStore,
        rng: random.Random,
        clock: Callable[[], float],
        connector: Connector | None = None,
    ) -> None:
        self.model = model
        self.name = model.name
        self._loop = loop
        self._rng = rng
        self._clock = clock
        self._connector = connector if connector is not None else LoopConnector(loop)
        self.stats = ClusterStats(stats, model.name)
        # Replaced by the cluster manager when the secrets the sockets use change.
        self.sockets: TransportSockets = PLAINTEXT
        # The sockets of HTTP/1.1 and HTTP/2 connections where they differ from ``sockets``
        # (mesh mTLS: Istio's istio.alpn override, see ``istio_alpn``); None: the same.
        self.http_sockets: TransportSockets | None = None
        self.h2_sockets: TransportSockets | None = None
        self.limits = ResourceLimits(model.circuit_breakers.default)
        # Which pool a request takes, worked out once (pool_for runs on every request).
        protocol = model.http_protocol_options.protocol
        self._h2_always = protocol is UpstreamProtocol.HTTP2
        self._h2_follows = protocol is UpstreamProtocol.USE_DOWNSTREAM
        self.hosts: list[Host] = []
        self._by_key: dict[tuple[str, int], Host] = {}
        self.original_dst = model.type is DiscoveryType.ORIGINAL_DST
        # ORIGINAL_DST clusters must say CLUSTER_PROVIDED: the destination picks the host and
        # the balancer is never asked, but it still keeps the host list for the admin pages.
        self._lb_policy = LbPolicy.ROUND_ROBIN if self.original_dst else model.lb_policy
        self.lb: LoadBalancer[Host] = build_load_balancer(
            self._lb_policy, (), rng=rng, cluster_config=model
        )
        self.needs_hash = model.lb_policy in (LbPolicy.RING_HASH, LbPolicy.MAGLEV)
        self.outlier: OutlierDetector[Host] | None = None
        self._outlier_timer: asyncio.TimerHandle | None = None
        if model.outlier_detection is not None:
            self.outlier = OutlierDetector(model.outlier_detection, clock=clock, rng=rng)
            self._outlier_timer = loop.call_later(
                model.outlier_detection.interval, self._outlier_tick
            )
        self._dns_task: asyncio.Task[None] | None = None
        self.load_assignment: ClusterLoadAssignment | None = None
        if model.type in (DiscoveryType.STRICT_DNS, DiscoveryType.LOGICAL_DNS):
            self._dns_task = loop.create_task(self._dns_loop())
        elif model.load_assignment is not None and model.type is DiscoveryType.STATIC:
            self.update_endpoints(model.load_assignment)

    @property
    def connector(self) -> Connector:
        """How the cluster opens connections (a terminated CONNECT's tunnel opens its own)."""
        return self._connector

    # -- data path --------------------------------------------------------------------------
    def choose_host(self, context: LbContext | None) -> Host | None:
        """A host for one request; ``context`` None for requests that carry nothing to
        choose by (mirrors, TCP proxying)."""
        if context is None:
            return None if self.original_dst else self.lb.choose(None, None, 1)
        if self.original_dst:
            return self._original_dst_host(context)
        return self.lb.choose(
            context.hash_key, context.excluded_hosts, context.host_selection_attempts
        )

    def pool_for(self, host: Host, downstream_http2: bool = False) -> UpstreamPool:
        """The host's pool for the cluster's protocol: HTTP/2, HTTP/1.1, or with
        ``use_downstream_protocol_config`` the protocol the request came in with (a host then
        has one pool of each, as Envoy keeps one per protocol)."""
        if self._h2_always or (downstream_http2 and self._h2_follows):
            pool = host.h2_pool
            if pool is None:
                pool = host.h2_pool = self._h2_pool(host)
            return pool
        pool = host.pool
        if pool is None:
            model = self.model
            options = model.http_protocol_options
            pool = host.pool = ConnectionPool(
                host,
                connector=self._connector,
                stats=self.stats,
                limits=self.limits,
                connect_timeout=model.connect_timeout,
                max_requests_per_connection=options.common.max_requests_per_connection,
                on_local_failure=self.report_local_failure,
                source_address=model.source_address,
                socket_for=None if self.sockets is PLAINTEXT else self._http_socket_for,
                enable_trailers=options.http1.enable_trailers,
            )
        return pool

    def socket_for(self, host: Host) -> TransportSocket:
        return self.sockets.for_host(host.socket_match)

    def _http_socket_for(self, host: Host) -> TransportSocket:
        sockets = self.http_sockets or self.sockets
        return sockets.for_host(host.socket_match)

    def _h2_socket_for(self, host: Host) -> TransportSocket:
        sockets = self.h2_sockets or self.sockets
        return sockets.for_host(host.socket_match)

    def _h2_pool(self, host: Host) -> H2ConnectionPool:
        model = self.model
        options = model.http_protocol_options
        assert options.http2_settings is not None  # set for every protocol but HTTP/1.1
        return H2ConnectionPool(
            host,
            connector=self._connector,
            stats=self.stats,
            limits=self.limits,
            connect_timeout=model.connect_timeout,
            max_requests_per_connection=options.common.max_requests_per_connection,
            settings=options.http2_settings,
            buffer_limit=model.per_connection_buffer_limit_bytes,
            on_local_failure=self.report_local_failure,
            source_address=model.source_address,
            socket_for=None if self.sockets is PLAINTEXT else self._h2_socket_for,
            jitter=self._rng.random,
        )

    def report_response(self, host: Host, status: int) -> None:
        outlier = self.outlier
        if outlier is not None:
            event = outlier.record(host, status)
            if event is not None:
                self._apply_outlier_events((event,))

    def report_local_failure(self, host: Host, kind: str) -> None:
        outlier = self.outlier
        if outlier is not None:
            event = outlier.record_local_failure(host, LocalFailure(kind))
            if event is not None:
                self._apply_outlier_events((event,))

    def _apply_outlier_events(self, events: Sequence[OutlierEvent[Host]]) -> None:
        for event in events:
            ejected = event.action is OutlierAction.EJECT
            event.host.set_ejected(ejected)
            log.info(
                "outlier ejection" if ejected else "outlier unejection",
                cluster=self.name,
                host=event.host.address_str,
                type=event.type.value if event.type else None,
                num_ejections=event.num_ejections,
            )
        self._publish_outlier_stats()
        self.lb.refresh()
        self._update_membership_stats()

    def _publish_outlier_stats(self) -> None:
        outlier = self.outlier
        assert outlier is not None
        for name, value in outlier.stats.as_dict().items():
            if name == "ejections_active":
                continue  # a gauge, kept by _update_membership_stats
            self.stats.counter(f"outlier_detection.{name}").value = value

    # -- membership ----------------------------------------------------------------------------
    def update_endpoints(self, assignment: ClusterLoadAssignment) -> None:
        self.load_assignment = assignment
        hosts: list[Host] = []
        by_key: dict[tuple[str, int], Host] = {}
        for ep in assignment.endpoints:
            key = (ep.address, ep.port)
            if key in by_key:
                continue
            host = self._by_key.get(key)
            if host is None:
                host = Host(ep.address, ep.port, hostname=ep.hostname, priority=ep.priority)
            host.weight = ep.weight
            match = ep.metadata.get(MATCH_NAMESPACE)
            host.socket_match = match if isinstance(match, Mapping) else _NO_MATCH
            host.set_eds_healthy(ep.health_status not in _UNHEALTHY)
            hosts.append(host)
            by_key[key] = host
        self._set_hosts(hosts, by_key)

    def _set_hosts(self, hosts: list[Host], by_key: dict[tuple[str, int], Host]) -> None:
        removed = [h for k, h in self._by_key.items() if k not in by_key]
        self.hosts = hosts
        self._by_key = by_key
        for host in removed:
            for pool in (host.pool, host.h2_pool):
                if pool is not None:
                    pool.drain()
        if self.outlier is not None:
            self.outlier.set_hosts(hosts)
        self.lb = build_load_balancer(
            self._lb_policy, hosts, rng=self._rng, cluster_config=self.model
        )
        self._update_membership_stats()

    def _update_membership_stats(self) -> None:
        self.stats.membership_total.value = len(self.hosts)
        self.stats.membership_healthy.value = sum(1 for h in self.hosts if h.healthy)
        self.stats.ejections_active.value = sum(1 for h in self.hosts if h.ejected)

    def _original_dst_host(self, context: LbContext) -> Host | None:
        cfg = self.model.original_dst_lb_config
        target: tuple[str, int] | None = None
        if cfg.use_http_header:
            headers = context.downstream_headers
            value = _header(headers, cfg.http_header_name) if headers is not None else None
            if value:
                address, _, port = value.decode("latin-1").rpartition(":")
                if port.isdigit():
                    target = (address.strip("[]"), int(port))
        else:
            target = context.original_destination
        return self.host_for_destination(target)

    def host_for_destination(self, target: tuple[str, int] | None) -> Host | None:
        """ORIGINAL_DST: the host for the address the client meant (created on first use)."""
        if target is None:
            return None
        cfg = self.model.original_dst_lb_config
        if cfg.upstream_port_override:
            target = (target[0], cfg.upstream_port_override)
        host = self._by_key.get(target)
        if host is None:
            host = Host(target[0], target[1])
            self._by_key[target] = host
            self.hosts.append(host)
            if self.outlier is not None:
                self.outlier.add_host(host)
            self.stats.membership_total.value = len(self.hosts)
        return host

    # -- timers and tasks ----------------------------------------------------------------------
    def _outlier_tick(self) -> None:
        outlier = self.outlier
        assert outlier is not None and self.model.outlier_detection is not None
        events = outlier.tick(self._clock())
        if events:
            self._apply_outlier_events(events)
        self._outlier_timer = self._loop.call_later(
            self.model.outlier_detection.interval, self._outlier_tick
        )

    async def _dns_loop(self) -> None:
        model = self.model
        assignment = model.load_assignment
        if assignment is None:
            return
        family = {
            DnsLookupFamily.V4_ONLY: socket.AF_INET,
            DnsLookupFamily.V6_ONLY: socket.AF_INET6,
        }.get(model.dns_lookup_family, socket.AF_UNSPEC)
        logical = model.type is DiscoveryType.LOGICAL_DNS
        while True:
            hosts: list[Host] = []
            by_key: dict[tuple[str, int], Host] = {}
            ok = True
            for ep in assignment.endpoints:
                try:
                    infos = await self._loop.getaddrinfo(
                        ep.address, ep.port, family=family, type=socket.SOCK_STREAM
                    )
                except OSError as exc:
                    ok = False
                    log.warning(
                        "dns resolution failed", cluster=self.name, host=ep.address, error=str(exc)
                    )
                    continue
                addresses = [str(info[4][0]) for info in infos]
                if logical:
                    addresses = addresses[:1]
                for address in dict.fromkeys(addresses):
                    key = (address, ep.port)
                    if key in by_key:
                        continue
                    host = self._by_key.get(key) or Host(address, ep.port, hostname=ep.address)
                    host.weight = ep.weight
                    hosts.append(host)
                    by_key[key] = host
            if ok or hosts:
                self._set_hosts(hosts, by_key)
            refresh = model.dns_refresh_rate
            if not ok and model.dns_failure_refresh_rate:
                refresh = model.dns_failure_refresh_rate
            await asyncio.sleep(refresh)

    def drain(self) -> None:
        """The cluster left the configuration (or was replaced): stop its timers, let the
        requests that still use it finish, and close its connections as they come back."""
        if self._outlier_timer is not None:
            self._outlier_timer.cancel()
        if self._dns_task is not None:
            self._dns_task.cancel()
        for host in self.hosts:
            for pool in (host.pool, host.h2_pool):
                if pool is not None:
                    pool.drain()

    def close(self) -> None:
        """Shut down: fail what waits for a connection too."""
        self.drain()
        for host in self.hosts:
            for pool in (host.pool, host.h2_pool):
                if pool is not None:
                    pool.close()


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None
