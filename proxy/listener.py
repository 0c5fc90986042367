"""Listeners: bound sockets, filter-chain selection and the connections they own.

A listener with ``use_original_dst`` (Istio's ``virtualOutbound``) hands each connection to the
listener whose address matches the connection's original destination (exact ``ip:port`` first,
then ``0.0.0.0:port``), exactly as Envoy does; when none matches, its own filter chains apply.
With the ``original_dst`` listener filter (Istio's ``virtualInbound``) the connection stays on
the listener and its filter chain is chosen by the original destination.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from proxy.config.model import FilterChain, Listener, SocketAddress, TrafficDirection
from proxy.config.model_http import CodecType
from proxy.http.connection_manager import DownstreamConnection
from proxy.http.h2_connection import H2DownstreamConnection
from proxy.http.hcm import HcmRuntime
from proxy.stats import ListenerStats, StatsStore
from proxy.transport.original_dst import original_destination
from pymesh.errors import UnsupportedError

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


class ListenerRuntime:
    def __init__(
        self, model: Listener, chains: tuple[ChainRuntime, ...], stats: StatsStore
    ) -> None:
        self.model = model
        self.chains = chains
        self.default_chain: ChainRuntime | None = None
        self.server: asyncio.Server | None = None
        self.connections: set[DownstreamConnection | H2DownstreamConnection] = set()
        address = model.address
        stat_name = (
            f"{address.host}_{address.port}" if isinstance(address, SocketAddress) else model.name
        )
        self.stats = ListenerStats(stats, model.stat_prefix or stat_name)

    @property
    def all_chains(self) -> tuple[ChainRuntime, ...]:
        default = (self.default_chain,) if self.default_chain is not None else ()
        return self.chains + default

    def select_chain(
        self, destination: tuple[str, int] | None, server_name: str | None = None
    ) -> ChainRuntime | None:
        """Envoy's filter chain match, on destination port, destination IP ranges, transport
        protocol and SNI."""
        best: ChainRuntime | None = None
        best_score = -1
        ip = None
        if destination is not None:
            try:
                ip = ipaddress.ip_address(destination[0])
            except ValueError:
                ip = None
        for chain in self.chains:
            match = chain.model.match
            score = 0
            if match.destination_port is not None:
                if destination is None or match.destination_port != destination[1]:
                    continue
                score += 2
            if match.prefix_ranges:
                if ip is None or not any(r.contains(ip) for r in match.prefix_ranges):
                    continue
                score += 1
            tls = chain.ssl_context is not None
            if match.transport_protocol not in ("", "tls" if tls else "raw_buffer"):
                continue
            if match.server_names:
                if server_name is None or not any(
                    _sni_matches(pattern, server_name) for pattern in match.server_names
                ):
                    continue
                score += 1
            if score > best_score:
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
                and _tls_of(current.model) == _tls_of(model)
            ):
                # Same socket: new connections get the new chains; open ones keep theirs
                # unless theirs changed, as Envoy drains the connections of a filter chain
                # an update replaced (a new policy must not wait for clients to reconnect).
                runtime.server = current.server
                runtime.connections = current.connections
                _drain_replaced(current.connections, runtime)
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
            return _Acceptor(self, self.listeners.get(name, runtime))

        runtime.server = await self._loop.create_server(
            factory,
            host=address.host,
            port=address.port,
            reuse_address=True,
            backlog=1024,
            ssl=_listener_ssl(runtime),
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


class _Acceptor(asyncio.Protocol):
    """Decides the listener and chain for a new connection, then becomes that chain's
    connection manager (the transport is handed over on ``connection_made``)."""

    def __init__(self, manager: ListenerManager, runtime: ListenerRuntime) -> None:
        self._manager = manager
        self._runtime = runtime
        self._conn: DownstreamConnection | H2DownstreamConnection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        local = transport.get_extra_info("sockname")
        local_addr = (local[0], local[1]) if isinstance(local, tuple) else None
        runtime, chain, destination = self._manager.route_connection(
            self._runtime, sock, local_addr
        )
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            # SNI already chose the chain during the handshake: its context is the one in use.
            chain = next(
                (c for c in runtime.all_chains if c.ssl_context is ssl_object.context), chain
            )
        runtime.stats.downstream_cx_total.value += 1
        if chain is not None and chain.tcp is not None:
            tcp = chain.tcp(destination, next(self._manager.connection_ids))
            transport.set_protocol(tcp)
            tcp.connection_made(transport)
            return
        if chain is None or chain.hcm is None:
            runtime.stats.no_filter_chain_match.value += 1
            transport.close()
            return
        codec = chain.hcm.model.codec_type
        scheme = b"https" if chain.ssl_context is not None else b"http"
        conn: DownstreamConnection | H2DownstreamConnection
        if codec is CodecType.HTTP2 or (
            codec is CodecType.AUTO
            and ssl_object is not None
            and ssl_object.selected_alpn_protocol() == "h2"
        ):
            conn = H2DownstreamConnection(
                chain.hcm,
                self._manager._loop,
                scheme=scheme,
                on_close=runtime.connections.discard,
                original_destination=destination,
                connection_id=next(self._manager.connection_ids),
            )
        else:
            # AUTO without ALPN: the first bytes decide (an HTTP/2 client preface, or not).
            sniff = codec is CodecType.AUTO and (
                ssl_object is None or ssl_object.selected_alpn_protocol() is None
            )
            conn = DownstreamConnection(
                chain.hcm,
                self._manager._loop,
                scheme=scheme,
                on_close=runtime.connections.discard,
                original_destination=destination,
                connection_id=next(self._manager.connection_ids),
                on_h2_preface=(
                    functools.partial(_switch_to_h2, transport, runtime) if sniff else None
                ),
            )
        runtime.connections.add(conn)
        self._conn = conn
        transport.set_protocol(conn)
        conn.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - handed over
        if self._conn is not None:
            self._conn.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._conn.connection_lost(exc)


def _switch_to_h2(
    transport: asyncio.BaseTransport,
    runtime: ListenerRuntime,
    http1: DownstreamConnection,
    data: bytes,
) -> None:
    """``codec_type: AUTO`` saw the HTTP/2 client preface: the connection is HTTP/2 from its
    first byte, as in Envoy."""
    runtime.connections.discard(http1)
    conn = H2DownstreamConnection(
        http1.hcm,
        http1.loop,
        scheme=http1.scheme,
        on_close=runtime.connections.discard,
        original_destination=http1.original_destination,
        connection_id=http1.connection_id,
    )
    runtime.connections.add(conn)
    transport.set_protocol(conn)
    conn.adopt(transport, counted=True, data=data)


def _drain_replaced(
    connections: set[DownstreamConnection | H2DownstreamConnection], runtime: ListenerRuntime
) -> None:
    kept = [chain.hcm.model for chain in runtime.all_chains if chain.hcm is not None]
    for conn in list(connections):
        if not any(conn.hcm.model == model for model in kept):
            conn.drain()


def _tls_of(model: Listener) -> tuple[object, ...]:
    chains = (*model.filter_chains, model.default_filter_chain)
    return tuple(c.transport_socket if c is not None else None for c in chains)


def _sni_matches(pattern: str, server_name: str) -> bool:
    if pattern.startswith("*."):
        return (
            server_name.lower().endswith(pattern[1:].lower())
            and len(server_name) > len(pattern) - 1
        )
    return pattern.lower() == server_name.lower()


def _listener_ssl(runtime: ListenerRuntime) -> ssl.SSLContext | None:
    """The server context for the socket. TLS chains are told apart by SNI during the
    handshake (the chosen chain's own context is swapped in); plaintext and TLS chains cannot
    share a socket without the tls_inspector, which pymesh does not implement."""
    chains = runtime.all_chains
    contexts = [c.ssl_context for c in chains]
    if not any(contexts):
        return None
    if not all(contexts):
        raise UnsupportedError(
            f"listener {runtime.model.name}: TLS and plaintext filter chains on one socket "
            "(needs envoy.filters.listener.tls_inspector, not implemented)"
        )
    first = contexts[0]
    assert first is not None
    several = len(chains) > 1

    # Envoy learns the client's SNI (requested_server_name, which RBAC and access logs read)
    # through the tls_inspector listener filter only.
    inspected = "envoy.filters.listener.tls_inspector" in runtime.model.listener_filters

    def pick(sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        # Python has no getter for the SNI a server received: keep it for the stream info.
        if inspected:
            sslobj.pymesh_sni = server_name  # type: ignore[attr-defined]
        if several:
            chain = runtime.select_chain(None, server_name)
            if chain is not None and chain.ssl_context is not None:
                sslobj.context = chain.ssl_context

    for context in contexts:
        assert context is not None
        context.sni_callback = pick
    return first
