"""The proxy process: snapshot → runtime (clusters, route tables, listeners), admin, drain.

:class:`ProxyServer` owns every long-lived object of one proxy and is the only place where
they are wired together. Applying a snapshot builds the new runtime beside the old one and
swaps it in; requests already running keep the objects they started with.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, cast

import structlog

from proxy.access_log import AccessLogger, LogWriter, RequestLogger, compile_format
from proxy.config.model import (
    AccessLog,
    AccessLogSink,
    Bootstrap,
    FilterChain,
    HttpConnectionManager,
    Listener,
    NetworkFilter,
    RouteAction,
    RouteConfiguration,
    RouterConfig,
    Secret,
    TcpProxy,
    TrafficDirection,
    ZipkinConfig,
)
from proxy.config.snapshot import ProxySnapshot, SnapshotHolder
from proxy.filters import builtin_factory_for
from proxy.http.filter import FilterContext, FilterFactory, HttpFilter
from proxy.http.hcm import HcmRuntime
from proxy.http.router import router_factory
from proxy.http.util import DateCache
from proxy.listener import ChainRuntime, ListenerManager, ListenerRuntime
from proxy.network_filter import ReadFilterFactory
from proxy.routing.matcher import RouteTable
from proxy.runtime import RuntimeHolder, RuntimeSnapshot
from proxy.stats import HttpStats, StatsStore
from proxy.tcp_proxy import TcpProxyConnection, TcpProxyStats
from proxy.transport.tls import SecretUnavailable, local_uri_sans, server_context, validation_of
from proxy.transport.tls_server import record_sni
from proxy.upstream.manager import ClusterManager
from proxy.upstream.pool import Connector
from pymesh.errors import ConfigError, UnsupportedError

if TYPE_CHECKING:
    from proxy.als.facts import ConnectionLogger
    from proxy.als.logger import GrpcLogStreams
    from proxy.config.translate import FilterRegistry
    from proxy.istio.telemetry import IstioTelemetry
    from proxy.tracing.reporter import ZipkinReporter
    from proxy.tracing.tracer import HttpTracer

__all__ = ["ProxyServer"]

log = structlog.get_logger(__name__)


class ProxyServer:
    def __init__(
        self,
        bootstrap: Bootstrap,
        *,
        loop: asyncio.AbstractEventLoop,
        registry: FilterRegistry | None = None,
        rng: random.Random | None = None,
        connector: Connector | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.loop = loop
        self.rng = rng or random.Random()
        self.clock: Callable[[], float] = loop.time
        self.stats = StatsStore()
        # One registration per filter: translation (for xDS) and runtime factory. Without one,
        # the built-in filters' factories are found by type URL, so that a proxy with a
        # static bootstrap never imports the protos (see proxy.config.isolated).
        self.registry = registry
        self.holder = SnapshotHolder(ProxySnapshot.from_bootstrap(bootstrap))
        self.cluster_manager = ClusterManager(
            loop=loop, stats=self.stats, rng=self.rng, clock=self.clock, connector=connector
        )
        self.listener_manager = ListenerManager(loop=loop, stats=self.stats)
        self.runtime = RuntimeHolder()
        self.date = DateCache()
        self._writers: dict[str, LogWriter] = {}
        self._log_streams: GrpcLogStreams | None = None
        self._reporters: dict[tuple[str, str, str | None], ZipkinReporter] = {}
        self._istio: IstioTelemetry | None = None
        self.ready = False
        self.bind_errors: tuple[str, ...] = ()
        self.health_check_failed = False
        self.draining = False
        self.drain_timeout = 5.0
        self.stopped = asyncio.Event()
        self._started_at = loop.time()
        self.stats.gauge("server.live").value = 1

    def istio_telemetry(self) -> IstioTelemetry:
        """Istio's metrics of this proxy, made when an Istio filter is first configured."""
        if self._istio is None:
            from proxy.istio.telemetry import IstioTelemetry

            self._istio = IstioTelemetry(self.bootstrap.node)
        return self._istio

    def istio_exposition(self) -> str:
        """Istio's standard metrics in Prometheus text format ("" when none)."""
        return self._istio.exposition() if self._istio is not None else ""

    @property
    def uptime(self) -> float:
        return self.loop.time() - self._started_at

    # -- configuration -------------------------------------------------------------------------
    async def apply(self, snapshot: ProxySnapshot) -> list[str]:
        """Make ``snapshot`` the running configuration. Returns non-fatal errors (a listener
        that could not bind); raises ConfigError when the snapshot cannot run at all."""
        runtimes = self.prepare(snapshot)
        for name, running in self.listener_manager.listeners.items():
            if name in snapshot.listeners and name not in runtimes:
                runtimes[name] = running  # still warming: the running version keeps serving
        errors = await self.listener_manager.apply(
            {name: runtime.model for name, runtime in runtimes.items()},
            lambda model: runtimes[model.name],
        )
        for error in errors:
            log.error("listener failed", error=error)
        # A listener that cannot bind makes the proxy not ready (admin /ready answers 503).
        self.bind_errors = tuple(errors)
        self.holder.swap(snapshot)
        return errors

    def prepare(self, snapshot: ProxySnapshot) -> dict[str, ListenerRuntime]:
        """Build the snapshot's runtime (route tables, clusters, listener chains) and make it
        current for new streams; binding the listeners is left to :meth:`apply`."""
        # Everything that can fail is built before anything is swapped, so a snapshot that
        # cannot run leaves the running configuration untouched.
        self._validate(snapshot)
        tables = MappingProxyType(
            {
                name: RouteTable.build(rc, rng=self.rng)
                for name, rc in snapshot.route_configurations.items()
            }
        )
        runtimes: dict[str, ListenerRuntime] = {}
        for name, model in snapshot.listeners.items():
            try:
                runtimes[name] = self._build_listener(model, snapshot.secrets)
            except SecretUnavailable as exc:
                # Envoy's listener warming: it starts once its SDS secrets have arrived.
                log.info("listener warming", listener=name, reason=str(exc))
        clusters = self.cluster_manager.apply(snapshot)
        self.runtime.current = RuntimeSnapshot(clusters, tables, self.runtime.current.version + 1)
        return runtimes

    def _validate(self, snapshot: ProxySnapshot) -> None:
        """Envoy refuses inline route configs that name clusters it does not have; header
        values with a ``%COMMAND%`` the proxy cannot render are refused here too."""
        for rc in snapshot.route_configurations.values():
            _check_dynamic_headers(rc)
        for listener in snapshot.listeners.values():
            for chain in _chains(listener):
                for nf in chain.filters:
                    hcm = nf.config
                    if not isinstance(hcm, HttpConnectionManager) or hcm.route_config is None:
                        continue
                    rc = hcm.route_config
                    _check_dynamic_headers(rc)
                    if rc.validate_clusters is False:
                        continue
                    missing = sorted(n for n in rc.cluster_names if n not in snapshot.clusters)
                    if missing:
                        raise ConfigError(f"route: unknown cluster '{missing[0]}'")

    def _build_listener(self, model: Listener, secrets: Mapping[str, Secret]) -> ListenerRuntime:
        chains = tuple(self._build_chain(model, c, secrets) for c in model.filter_chains)
        runtime = ListenerRuntime(model, chains, self.stats)
        if model.default_filter_chain is not None:
            runtime.default_chain = self._build_chain(model, model.default_filter_chain, secrets)
        return runtime

    def _build_chain(
        self, listener: Listener, chain: FilterChain, secrets: Mapping[str, Secret]
    ) -> ChainRuntime:
        tls = chain.transport_socket
        context = server_context(tls, secrets) if tls is not None else None
        validation = validation_of(tls.common, secrets) if tls is not None else None
        if context is not None and "envoy.filters.listener.tls_inspector" in (
            listener.listener_filters
        ):
            context.sni_callback = record_sni
        # The workload's identity, for access logs to a service (Istio's principals).
        identity = local_uri_sans(tls, secrets) if tls is not None and _reports(chain) else ()
        read_filters: list[ReadFilterFactory] = []
        for nf in chain.filters:
            if isinstance(nf.config, HttpConnectionManager):
                hcm = self._build_hcm(listener, nf.config, identity)
                return ChainRuntime(chain, hcm, context, validation=validation)
            if isinstance(nf.config, TcpProxy):
                tcp = self._tcp_factory(nf.config, tuple(read_filters), identity)
                return ChainRuntime(chain, None, context, tcp=tcp, validation=validation)
            read_filters.append(self._read_filter(listener, nf))
        raise UnsupportedError(f"listener {listener.name}: a filter chain with no terminal filter")

    def _read_filter(self, listener: Listener, nf: NetworkFilter) -> ReadFilterFactory:
        factory = self._network_factory(nf.name, nf.type_url)
        context = FilterContext(
            loop=self.loop,
            rng=self.rng,
            clock=self.clock,
            stats=self.stats,
            stat_prefix="",
            buffer_limit=listener.per_connection_buffer_limit_bytes,
            clusters=self.cluster_manager,
            local_cluster=self.bootstrap.node.cluster,
        )
        make: ReadFilterFactory = factory(nf.config, context)
        return make

    def _network_factory(self, name: str, type_url: str) -> Callable[..., ReadFilterFactory]:
        if self.registry is not None:
            entry = self.registry.entry_for(name, type_url)
            if entry is not None and entry.factory is not None and entry.network:
                return cast("Callable[..., ReadFilterFactory]", entry.factory)
        elif (factory := builtin_factory_for(name, type_url, network=True)) is not None:
            return cast("Callable[..., ReadFilterFactory]", factory)
        raise UnsupportedError(f"network filter {name!r} has no pymesh implementation")

    def _tcp_factory(
        self,
        config: TcpProxy,
        read_filters: tuple[ReadFilterFactory, ...],
        identity: tuple[str, ...] = (),
    ) -> Callable[[tuple[str, int] | None, int], TcpProxyConnection]:
        stats = TcpProxyStats(self.stats, config.stat_prefix)
        loggers: list[ConnectionLogger] = []
        for cfg in config.access_log:
            if cfg.sink is AccessLogSink.GRPC:
                loggers.append(self.log_streams.tcp_logger(cfg, identity))
            else:
                log.warning(
                    "TCP proxy access logs are written only to gRPC services (tcp_grpc)",
                    logger=cfg.name,
                    stat_prefix=config.stat_prefix,
                )
        access_loggers = tuple(loggers)

        def make(destination: tuple[str, int] | None, connection_id: int) -> TcpProxyConnection:
            return TcpProxyConnection(
                config,
                self.cluster_manager,
                self.loop,
                self.rng,
                destination,
                stats,
                read_filters=read_filters,
                connection_id=connection_id,
                access_loggers=access_loggers,
            )

        return make

    def _build_hcm(
        self, listener: Listener, model: HttpConnectionManager, identity: tuple[str, ...] = ()
    ) -> HcmRuntime:
        context = FilterContext(
            loop=self.loop,
            rng=self.rng,
            clock=self.clock,
            stats=self.stats,
            stat_prefix=model.stat_prefix,
            buffer_limit=listener.per_connection_buffer_limit_bytes,
            clusters=self.cluster_manager,
            local_cluster=self.bootstrap.node.cluster,
            istio=self.istio_telemetry,
        )
        factories: list[Callable[[], HttpFilter]] = []
        terminal: Callable[[], HttpFilter] | None = None
        for spec in model.http_filters:
            if spec.disabled:
                continue
            factory, is_terminal = self._filter_factory(spec.name, spec.type_url)
            make = factory(spec.config, context)
            if is_terminal:
                terminal = make
                break  # Envoy refuses filters after the terminal one at config time
            factories.append(make)
        if terminal is None:
            terminal = router_factory(RouterConfig(), context)
        factories.append(terminal)
        inline: RouteTable | None = None
        if model.route_config is not None:
            inline = RouteTable.build(model.route_config, rng=self.rng)
        else:
            assert model.rds is not None
        loggers = tuple(self._request_logger(cfg, identity) for cfg in model.access_log)
        return HcmRuntime(
            model,
            tracer=self._tracer(listener, model),
            stats=HttpStats(self.stats, model.stat_prefix),
            runtime=self.runtime,
            inline_table=inline,
            filter_factories=tuple(factories),
            access_loggers=loggers,
            rng=self.rng,
            date=self.date,
            buffer_limit=listener.per_connection_buffer_limit_bytes,
        )

    def _filter_factory(self, name: str, type_url: str) -> tuple[FilterFactory, bool]:
        if self.registry is not None:
            entry = self.registry.entry_for(name, type_url)
            if entry is not None and entry.factory is not None:
                return entry.factory, entry.terminal
        else:
            factory = builtin_factory_for(name, type_url)
            if factory is not None:
                return factory, factory is router_factory
        raise UnsupportedError(f"HTTP filter {name!r} has no pymesh implementation")

    def _tracer(self, listener: Listener, model: HttpConnectionManager) -> HttpTracer | None:
        tracing = model.tracing
        if tracing is None or tracing.provider is None:
            return None
        from proxy.tracing.tracer import HttpTracer, TracerSettings

        node = self.bootstrap.node
        settings = TracerSettings(
            node_id=node.id,
            zone=node.locality.zone,
            egress=listener.traffic_direction is TrafficDirection.OUTBOUND,
        )
        return HttpTracer(tracing, settings, self._zipkin_reporter(tracing.provider), self.rng)

    def _zipkin_reporter(self, zipkin: ZipkinConfig) -> ZipkinReporter:
        """One reporter per collector, kept across snapshots (its batch survives a push)."""
        key = (zipkin.collector_cluster, zipkin.collector_endpoint, zipkin.collector_hostname)
        reporter = self._reporters.get(key)
        if reporter is None:
            from proxy.tracing.reporter import ZipkinReporter
            from proxy.tracing.span import LocalEndpoint
            from proxy.transport.local_address import local_ipv4

            node = self.bootstrap.node
            # A pod's INSTANCE_IPS is its interface address, which is what Envoy reports; a
            # proxy without it reports the host's address as Envoy does.
            ips = str(node.metadata.get("INSTANCE_IPS", "") or "").split(",")
            local = LocalEndpoint(node.cluster, ips[0].strip() or local_ipv4())
            reporter = self._reporters[key] = ZipkinReporter(
                cluster=zipkin.collector_cluster,
                endpoint=zipkin.collector_endpoint,
                hostname=zipkin.collector_hostname,
                local=local,
                clusters=self.cluster_manager.get,
                loop=self.loop,
                stats=self.stats,
            )
        return reporter

    @property
    def log_streams(self) -> GrpcLogStreams:
        """The access-log streams to gRPC services, made when a logger first needs one (the
        gRPC and protobuf modules are loaded only then)."""
        if self._log_streams is None:
            from proxy.als.logger import GrpcLogStreams

            self._log_streams = GrpcLogStreams(
                self.bootstrap.node,
                self.cluster_manager.pick_host,
                loop=self.loop,
                stats=self.stats,
                rng=self.rng,
            )
        return self._log_streams

    def _request_logger(self, cfg: AccessLog, identity: tuple[str, ...]) -> RequestLogger:
        if cfg.sink is AccessLogSink.GRPC:
            return self.log_streams.http_logger(cfg, identity)
        return AccessLogger(cfg, self._writer(cfg.sink.value, cfg.path))

    def _writer(self, sink: str, path: str | None) -> LogWriter:
        key = path or sink
        writer = self._writers.get(key)
        if writer is None:
            writer = self._writers[key] = LogWriter.open(AccessLogSink(sink), path)
        return writer

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        errors = await self.apply(self.holder.current)
        if errors:
            raise ConfigError("; ".join(errors))
        if self.bootstrap.dynamic_resources is None:
            self.ready = True

    async def drain(
        self, timeout: float, *, inbound_only: bool = False, exit_on_zero: bool = True
    ) -> None:
        """Envoy's graceful drain: stop accepting, let in-flight requests finish, close idle
        keep-alive connections, and answer what is left with ``connection: close``.

        Istio's sidecar drain is ``inbound_only``: the app, shutting down itself, may still
        call out, so the outbound listeners keep serving; and without ``exit_on_zero``
        (Istio's default for EXIT_ON_ZERO_ACTIVE_CONNECTIONS) the whole ``timeout`` is
        waited even when no connection is left."""
        self.draining = True
        self.listener_manager.stop_accepting(inbound_only=inbound_only)
        self.listener_manager.drain_connections(inbound_only=inbound_only)
        deadline = self.loop.time() + timeout
        while self.loop.time() < deadline:
            if exit_on_zero and not self.listener_manager.connection_count():
                break
            await asyncio.sleep(0.05)

    async def shutdown(self) -> None:
        self.listener_manager.close_all()
        for reporter in self._reporters.values():
            reporter.close()  # best effort, as Envoy: the clusters close next
        self.cluster_manager.close()
        for writer in self._writers.values():
            writer.flush()
        if self._log_streams is not None:
            await self._log_streams.close()
        self.stopped.set()


def _reports(chain: FilterChain) -> bool:
    """Whether the chain's connection manager or TCP proxy logs to an access log service."""
    for nf in chain.filters:
        logs = getattr(nf.config, "access_log", ())
        if isinstance(nf.config, (HttpConnectionManager, TcpProxy)) and any(
            log.sink is AccessLogSink.GRPC for log in logs
        ):
            return True
    return False


def _chains(listener: Listener) -> list[FilterChain]:
    chains = list(listener.filter_chains)
    if listener.default_filter_chain is not None:
        chains.append(listener.default_filter_chain)
    return chains


def _check_dynamic_headers(rc: RouteConfiguration) -> None:
    """Compile every header value with substitutions once, so an unknown command is a
    configuration error (a NACK) rather than a surprise on the first matching request."""
    owners: list[object] = [rc]
    for vhost in rc.virtual_hosts:
        owners.append(vhost)
        for route in vhost.routes:
            owners.append(route)
            action = route.action
            if isinstance(action, RouteAction) and action.weighted_clusters is not None:
                owners.extend(action.weighted_clusters.clusters)
    for owner in owners:
        for field in ("request_headers_to_add", "response_headers_to_add"):
            for option in getattr(owner, field):
                if option.dynamic:
                    compile_format(option.value.decode("latin-1"))
