"""Listeners: bound sockets, filter-chain selection and the connections they own.

A listener with ``use_original_dst`` (Istio's ``virtualOutbound``) hands each connection to the
listener whose address matches the connection's original destination (exact ``ip:port`` first,
then ``0.0.0.0:port``), exactly as Envoy does; when none matches, its own filter chains apply.
With the ``original_dst`` listener filter (Istio's ``virtualInbound``) the connection stays on
the listener and its filter chain is chosen by the original destination.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from proxy.acceptor import HTTP_INSPECTOR, Acceptor
from proxy.config.model import (
    CertificateValidation,
    FilterChain,
    Listener,
    SocketAddress,
    TrafficDirection,
)
from proxy.http.connection_manager import DownstreamConnection
from proxy.http.h2_connection import H2DownstreamConnection
from proxy.http.hcm import HcmRuntime
from proxy.listener_tls import TLS_INSPECTOR, listener_ssl, sni_matches, tls_of
from proxy.stats import ListenerStats, StatsStore
from proxy.transport.original_dst import original_destination
from proxy.transport.tls_inspector import Inspection

__all__ = ["ChainRuntime", "ListenerManager", "ListenerRuntime"]

log = structlog.get_logger(__name__)

_ORIGINAL_DST = "envoy.filters.listener.original_dst"


@dataclass(frozen=True, slots=True)
class ChainRuntime:
    """A filter chain compiled for the data path."""

    model: FilterChain
    hcm: HcmRuntime | None
    ssl_context: ssl.SSLContext | None = None
    # For a tcp_proxy chain: builds the connection's protocol from its original destination
    # and connection id.
    tcp: Callable[[tuple[str, int] | None, int], asyncio.Protocol] | None = None
    # The SAN matchers and pins the client certificate must pass (the chain's effective
    # validation context).
    validation: CertificateValidation | None = None


class ListenerRuntime:
    def __init__(
        self, model: Listener, chains: tuple[ChainRuntime, ...], stats: StatsStore
    ) -> None:
        self.model = model
        self.chains = chains
        self.default_chain: ChainRuntime | None = None
        self.server: asyncio.Server | None = None
        self.connections: set[DownstreamConnection | H2DownstreamConnection] = set()
        # The chain each connection was accepted on: an update drains the connections of
        # the chains it replaced and leaves the others alone.
        self.chain_of: dict[DownstreamConnection | H2DownstreamConnection, FilterChain] = {}
        address = model.address
        stat_name = (
            f"{address.host}_{address.port}" if isinstance(address, SocketAddress) else model.name
        )
        self.stats = ListenerStats(stats, model.stat_prefix or stat_name)
        # Envoy's tls_inspector: the chain is chosen from the client's first bytes (TLS or
        # not, SNI, ALPN) before any handshake.
        self.inspect_tls = TLS_INSPECTOR in model.listener_filters
        # Envoy's http_inspector: a plaintext client's first bytes tell HTTP/1.x, h2c or
        # neither, which chains match with ``application_protocols``. Not on a socket that
        # terminates TLS itself (no tls_inspector): it would read decrypted bytes where
        # Envoy's inspector reads the ClientHello and passes.
        self.inspect_http = HTTP_INSPECTOR in model.listener_filters and (
            self.inspect_tls or not any(c.ssl_context is not None for c in chains)
        )

    @property
    def inspects(self) -> bool:
        """Whether the chain waits for the client's first bytes."""
        return self.inspect_tls or self.inspect_http

    def track(
        self, conn: DownstreamConnection | H2DownstreamConnection, chain: FilterChain
    ) -> None:
        self.connections.add(conn)
        self.chain_of[conn] = chain

    def forget(self, conn: DownstreamConnection | H2DownstreamConnection) -> None:
        self.connections.discard(conn)
        self.chain_of.pop(conn, None)

    @property
    def all_chains(self) -> tuple[ChainRuntime, ...]:
        default = (self.default_chain,) if self.default_chain is not None else ()
        return self.chains + default

    def select_chain(
        self,
        destination: tuple[str, int] | None,
        server_name: str | None = None,
        inspection: Inspection | None = None,
        application_protocols: tuple[str, ...] | None = None,
    ) -> ChainRuntime | None:
        """Envoy's filter chain match: destination port, destination IP ranges, SNI,
        transport protocol, application protocols, in that order of precedence. Without an
        ``inspection`` (no tls_inspector) a chain's own transport socket stands in for the
        transport protocol. ``application_protocols`` are the TLS ALPN or what the
        http_inspector detected (empty: nothing); None when no listener filter looked, where
        chains keep matching on them as they did before the inspectors existed."""
        if inspection is not None:
            server_name = inspection.server_name
            if inspection.tls:
                application_protocols = inspection.alpn
        best: ChainRuntime | None = None
        best_score: tuple[bool, ...] | None = None
        ip = None
        if destination is not None:
            try:
                ip = ipaddress.ip_address(destination[0])
            except ValueError:
                ip = None
        for chain in self.chains:
            match = chain.model.match
            if match.destination_port is not None and (
                destination is None or match.destination_port != destination[1]
            ):
                continue
            if match.prefix_ranges and (
                ip is None or not any(r.contains(ip) for r in match.prefix_ranges)
            ):
                continue
            if match.server_names and (
                server_name is None
                or not any(sni_matches(pattern, server_name) for pattern in match.server_names)
            ):
                continue
            if inspection is not None:
                protocol = inspection.transport_protocol
            else:
                protocol = "tls" if chain.ssl_context is not None else "raw_buffer"
            if match.transport_protocol not in ("", protocol):
                continue
            alpn_known = application_protocols is not None
            if (
                match.application_protocols
                and application_protocols is not None
                and not set(match.application_protocols) & set(application_protocols)
            ):
                continue
            score = (
                match.destination_port is not None,
                bool(match.prefix_ranges),
                bool(match.server_names),
                bool(match.transport_protocol),
                bool(match.application_protocols) and alpn_known,
            )
            if best_score is None or score > best_score:
                best, best_score = chain, score
        return best if best is not None else self.default_chain


class ListenerManager:
    """Binds, updates and drains listeners as snapshots change."""

    def __init__(self, *, loop: asyncio.AbstractEventLoop, stats: StatsStore) -> None:
        self._loop = loop
        self._stats = stats
        self.listeners: dict[str, ListenerRuntime] = {}
        self._by_address: dict[tuple[str, int], ListenerRuntime] = {}
        self.connection_ids = itertools.count(1)
        # Set in each worker of ``--concurrency N``: N processes bind the same addresses and
        # the kernel spreads new connections over them (off otherwise, so that a second
        # proxy on a taken port fails to bind instead of silently sharing it).
        self.reuse_port = False

    async def apply(
        self, wanted: dict[str, Listener], build: Callable[[Listener], ListenerRuntime]
    ) -> list[str]:
        """Reconcile with ``wanted``; returns errors (a listener that failed to bind)."""
        errors: list[str] = []
        for name in [n for n in self.listeners if n not in wanted]:
            self._remove(name)
        for name, model in wanted.items():
            current = self.listeners.get(name)
            runtime = build(model)
            if (
                current is not None
                and current.model.address == model.address
                and current.inspect_tls == runtime.inspect_tls
                # With the TLS inspector each connection starts TLS with its own chain's
                # context, so the socket outlives any change of the chains' TLS.
                and (runtime.inspect_tls or tls_of(current.model) == tls_of(model))
            ):
                # Same socket, never closed (a client connecting during an update, such as
                # PERMISSIVE to STRICT, is not refused): new connections get the new chains;
                # open ones keep theirs unless the update replaced it, as Envoy drains the
                # connections of a replaced filter chain (a new policy must not wait for
                # clients to reconnect).
                runtime.server = current.server
                runtime.connections = current.connections
                runtime.chain_of = current.chain_of
                _drain_replaced(current, runtime)
                self.listeners[name] = runtime
                self._index(runtime)
                continue
            if current is not None:
                self._remove(name)
            try:
                await self._bind(runtime)
            except OSError as exc:
                a = model.address
                where = f"{a.host}:{a.port}" if isinstance(a, SocketAddress) else str(a)
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                errors.append(f"listener {name}: cannot bind {where}: {reason}")
                continue
            self.listeners[name] = runtime
            self._index(runtime)
        return errors

    def _index(self, runtime: ListenerRuntime) -> None:
        address = runtime.model.address
        if isinstance(address, SocketAddress):
            self._by_address[(address.host, address.port)] = runtime

    async def _bind(self, runtime: ListenerRuntime) -> None:
        model = runtime.model
        if not model.bind_to_port:
            return
        address = model.address
        assert isinstance(address, SocketAddress)

        name = model.name

        def factory() -> asyncio.Protocol:
            # Looked up per connection: an update in place swaps the runtime under the socket.
            return Acceptor(self, self.listeners.get(name, runtime))

        runtime.server = await self._loop.create_server(
            factory,
            host=address.host,
            port=address.port,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
            backlog=1024,
            # Inspected listeners start TLS per connection, after choosing the chain.
            ssl=None if runtime.inspect_tls else listener_ssl(runtime),
        )
        log.info("listener bound", listener=model.name, address=f"{address.host}:{address.port}")

    def _remove(self, name: str) -> None:
        runtime = self.listeners.pop(name)
        address = runtime.model.address
        if isinstance(address, SocketAddress):
            self._by_address.pop((address.host, address.port), None)
        if runtime.server is not None:
            runtime.server.close()
        for conn in list(runtime.connections):
            conn.drain()

    def route_connection(
        self, runtime: ListenerRuntime, sock: socket.socket | None, local: tuple[str, int] | None
    ) -> tuple[ListenerRuntime, ChainRuntime | None, tuple[str, int] | None]:
        destination = local
        model = runtime.model
        if sock is not None and (model.use_original_dst or _ORIGINAL_DST in model.listener_filters):
            # The original_dst listener filter: chains match on the address the client dialled.
            destination = original_destination(sock) or local
        if model.use_original_dst and destination is not None:
            target = self._by_address.get(destination) or self._by_address.get(
                ("0.0.0.0", destination[1])
            )
            if target is not None and target is not runtime:
                runtime = target
        return runtime, runtime.select_chain(destination), destination

    def _selected(self, inbound_only: bool) -> list[ListenerRuntime]:
        runtimes = list(self.listeners.values())
        if inbound_only:
            return [r for r in runtimes if r.model.traffic_direction is TrafficDirection.INBOUND]
        return runtimes

    def stop_accepting(self, *, inbound_only: bool = False) -> None:
        for runtime in self._selected(inbound_only):
            if runtime.server is not None:
                runtime.server.close()

    def drain_connections(self, *, inbound_only: bool = False) -> None:
        for runtime in self._selected(inbound_only):
            for conn in list(runtime.connections):
                conn.drain()

    def connection_count(self) -> int:
        return sum(len(r.connections) for r in self.listeners.values())

    def close_all(self) -> None:
        self.stop_accepting()
        for runtime in self.listeners.values():
            for conn in list(runtime.connections):
                conn.abort()


def _drain_replaced(current: ListenerRuntime, runtime: ListenerRuntime) -> None:
    """Drain the connections whose filter chain is not among the new ones. A chain is told
    by its whole configuration (match, transport socket, filters), so the plaintext chain
    PERMISSIVE had is drained by STRICT even where its connection manager is the same as
    the mTLS chain's, and a chain an update left as it was keeps its connections."""
    if runtime is current:
        return
    kept = [chain.model for chain in runtime.all_chains]
    for conn in list(runtime.connections):
        chain = runtime.chain_of.get(conn)
        if chain is None or not any(chain == model for model in kept):
            conn.drain()
