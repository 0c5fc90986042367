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
from typing import cast

import structlog

from proxy.config.model import (
    CertificateValidation,
    FilterChain,
    Listener,
    SocketAddress,
    TrafficDirection,
)
from proxy.config.model_http import CodecType
from proxy.http.connection_manager import DownstreamConnection
from proxy.http.h2_connection import H2DownstreamConnection
from proxy.http.hcm import HcmRuntime
from proxy.listener_tls import TLS_INSPECTOR, listener_ssl, reset, sni_matches, tls_of
from proxy.stats import ListenerStats, StatsStore
from proxy.transport.original_dst import original_destination
from proxy.transport.tls_inspector import Inspection
from proxy.transport.tls_inspector import inspect as inspect_client_hello
from proxy.transport.tls_server import peer_refused, start_server_tls

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
        address = model.address
        stat_name = (
            f"{address.host}_{address.port}" if isinstance(address, SocketAddress) else model.name
        )
        self.stats = ListenerStats(stats, model.stat_prefix or stat_name)
        # Envoy's tls_inspector: the chain is chosen from the client's first bytes (TLS or
        # not, SNI, ALPN) before any handshake.
        self.inspect_tls = TLS_INSPECTOR in model.listener_filters

    @property
    def all_chains(self) -> tuple[ChainRuntime, ...]:
        default = (self.default_chain,) if self.default_chain is not None else ()
        return self.chains + default

    def select_chain(
        self,
        destination: tuple[str, int] | None,
        server_name: str | None = None,
        inspection: Inspection | None = None,
    ) -> ChainRuntime | None:
        """Envoy's filter chain match: destination port, destination IP ranges, SNI,
        transport protocol, application protocols, in that order of precedence. Without an
        ``inspection`` (no tls_inspector) a chain's own transport socket stands in for the
        transport protocol, and ALPN is not known."""
        if inspection is not None:
            server_name = inspection.server_name
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
            # ALPN is known from a TLS ClientHello only; plaintext chains keep matching on
            # it as before (pymesh's http_inspector does not detect protocols).
            alpn_known = inspection is not None and inspection.tls
            if (
                match.application_protocols
                and alpn_known
                and not set(match.application_protocols) & set(inspection.alpn)  # type: ignore[union-attr]
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
                and tls_of(current.model) == tls_of(model)
                and current.inspect_tls == runtime.inspect_tls
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


class _Acceptor(asyncio.Protocol):
    """Decides the listener and chain for a new connection, then hands the transport to
    that chain's protocol (the connection manager or the TCP proxy). On a listener with the
    TLS inspector it first reads the client's opening bytes, and starts TLS itself when the
    chosen chain has a transport socket."""

    def __init__(self, manager: ListenerManager, runtime: ListenerRuntime) -> None:
        self._manager = manager
        self._runtime = runtime
        self._conn: DownstreamConnection | H2DownstreamConnection | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._destination: tuple[str, int] | None = None
        self._received = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        local = transport.get_extra_info("sockname")
        local_addr = (local[0], local[1]) if isinstance(local, tuple) else None
        runtime, chain, destination = self._manager.route_connection(
            self._runtime, sock, local_addr
        )
        runtime.stats.downstream_cx_total.value += 1
        if runtime.inspect_tls:
            self._runtime, self._transport, self._destination = runtime, transport, destination
            timeout = runtime.model.listener_filters_timeout
            if timeout > 0:
                self._timer = self._manager._loop.call_later(timeout, self._inspect_timeout)
            return
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            # SNI already chose the chain during the handshake: its context is the one in use.
            chain = next(
                (c for c in runtime.all_chains if c.ssl_context is ssl_object.context), chain
            )
            refused = chain is not None and peer_refused(chain.validation, ssl_object)
            if refused:
                runtime.stats.counter(f"ssl.{refused.value}").value += 1
                cast(asyncio.Transport, transport).abort()
                return
        protocol = self._protocol_for(runtime, chain, destination, transport)
        if protocol is None:
            transport.close()
            return
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def _protocol_for(
        self,
        runtime: ListenerRuntime,
        chain: ChainRuntime | None,
        destination: tuple[str, int] | None,
        transport: asyncio.BaseTransport,
    ) -> asyncio.Protocol | None:
        """The chain's protocol for ``transport`` (after the TLS handshake, if any: the
        negotiated ALPN picks HTTP/2)."""
        if chain is not None and chain.tcp is not None:
            return chain.tcp(destination, next(self._manager.connection_ids))
        if chain is None or chain.hcm is None:
            runtime.stats.no_filter_chain_match.value += 1
            return None
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        codec = chain.hcm.model.codec_type
        scheme = b"https" if chain.ssl_context is not None else b"http"
        conn: DownstreamConnection | H2DownstreamConnection
        if codec is CodecType.HTTP2 or (codec is CodecType.AUTO and alpn == "h2"):
            conn = H2DownstreamConnection(
                chain.hcm,
                self._manager._loop,
                scheme=scheme,
                on_close=runtime.connections.discard,
                original_destination=destination,
                connection_id=next(self._manager.connection_ids),
            )
        else:
            # AUTO without ALPN h2: the first bytes decide (an HTTP/2 client preface, or not).
            sniff = codec is CodecType.AUTO and alpn in (None, "istio", "istio-peer-exchange")
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
        return conn

    # -- the TLS inspector --------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._conn is not None:  # pragma: no cover - handed over
            self._conn.data_received(data)
            return
        if self._transport is None:
            return
        self._received += data
        found = inspect_client_hello(self._received)
        if isinstance(found, Inspection):
            self._dispatch(found)

    def _inspect_timeout(self) -> None:
        self._timer = None
        if self._runtime.model.continue_on_listener_filters_timeout:
            self._dispatch(Inspection("raw_buffer"))
        elif self._transport is not None:
            self._transport.close()

    def _dispatch(self, inspection: Inspection) -> None:
        transport, runtime, destination = self._transport, self._runtime, self._destination
        assert transport is not None
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        received, self._received = self._received, b""
        chain = runtime.select_chain(destination, inspection=inspection)
        if chain is None or (chain.hcm is None and chain.tcp is None):
            runtime.stats.no_filter_chain_match.value += 1
            reset(transport)
            return
        if chain.ssl_context is None:
            protocol = self._protocol_for(runtime, chain, destination, transport)
            assert protocol is not None
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            if received:
                protocol.data_received(received)
            return
        stats = runtime.stats

        def handed_over(tls_transport: asyncio.BaseTransport) -> asyncio.Protocol:
            protocol = self._protocol_for(runtime, chain, destination, tls_transport)
            assert protocol is not None
            return protocol

        def outcome(failure: str | None) -> None:
            stats.counter("ssl.handshake" if failure is None else f"ssl.{failure}").value += 1

        start_server_tls(
            self._manager._loop,
            transport,
            handed_over,
            chain.ssl_context,
            received,
            validation=chain.validation,
            handshake_timeout=chain.model.transport_socket_connect_timeout or 60.0,
            outcome=outcome,
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        if self._conn is not None:  # pragma: no cover - handed over
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
