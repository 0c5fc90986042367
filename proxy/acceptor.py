"""A new connection on a listener: the chain it belongs to, and the protocol it is handed to
(the connection manager, HTTP/1.1 or HTTP/2, or the TCP proxy). With the TLS inspector the
chain is chosen from the client's first bytes and TLS is started here, per connection; with
the HTTP inspector the same bytes tell HTTP from anything else."""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING, cast

from proxy.config.model_http import CodecType
from proxy.http.connection_manager import DownstreamConnection
from proxy.http.h2_connection import H2DownstreamConnection
from proxy.listener_tls import TLS_INSPECTOR, reset
from proxy.transport.http_inspector import NeedData
from proxy.transport.http_inspector import detect as detect_http
from proxy.transport.tls_inspector import Inspection
from proxy.transport.tls_inspector import inspect as inspect_client_hello
from proxy.transport.tls_server import peer_refused, start_server_tls

HTTP_INSPECTOR = "envoy.filters.listener.http_inspector"

if TYPE_CHECKING:
    from proxy.listener import ChainRuntime, ListenerManager, ListenerRuntime

__all__ = ["Acceptor"]

_RAW = Inspection("raw_buffer")
# ALPNs that do not name the HTTP version: Istio's own (a client sidecar's istio.alpn sets
# istio-http/1.x or istio-h2, which a server may accept), or none.
_SNIFF_ALPNS = frozenset(
    {None, "istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"}
)


class Acceptor(asyncio.Protocol):
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
        self._inspect_tls = False
        self._inspect_http = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        local = transport.get_extra_info("sockname")
        local_addr = (local[0], local[1]) if isinstance(local, tuple) else None
        runtime, chain, destination = self._manager.route_connection(
            self._runtime, sock, local_addr
        )
        runtime.stats.downstream_cx_total.value += 1
        if runtime.inspects:
            self._runtime, self._transport, self._destination = runtime, transport, destination
            # ``filter_disabled`` turns an inspector off by the destination port.
            port, model = destination[1] if destination else None, runtime.model
            self._inspect_tls = runtime.inspect_tls and model.filter_enabled(TLS_INSPECTOR, port)
            self._inspect_http = runtime.inspect_http and model.filter_enabled(HTTP_INSPECTOR, port)
            if not (self._inspect_tls or self._inspect_http):
                self._dispatch(_RAW, self._undetected())
                return
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
                on_close=runtime.forget,
                original_destination=destination,
                connection_id=next(self._manager.connection_ids),
            )
        else:
            # AUTO without ALPN h2: the first bytes decide (an HTTP/2 client preface, or not).
            sniff = codec is CodecType.AUTO and alpn in _SNIFF_ALPNS
            conn = DownstreamConnection(
                chain.hcm,
                self._manager._loop,
                scheme=scheme,
                on_close=runtime.forget,
                original_destination=destination,
                connection_id=next(self._manager.connection_ids),
                on_h2_preface=(
                    functools.partial(_switch_to_h2, transport, runtime) if sniff else None
                ),
            )
        runtime.track(conn, chain.model)
        self._conn = conn
        return conn

    # -- the listener filters: tls_inspector, http_inspector ----------------------------------
    def data_received(self, data: bytes) -> None:
        if self._conn is not None:  # pragma: no cover - handed over
            self._conn.data_received(data)
            return
        if self._transport is None:
            return
        self._received += data
        decided = self._inspect(self._received)
        if decided is not None:
            self._dispatch(*decided)

    def _inspect(self, data: bytes) -> tuple[Inspection, tuple[str, ...] | None] | None:
        """The transport protocol and the application protocols (None: not inspected) once
        every inspector of the listener has decided; None while one still waits for bytes.
        The http_inspector only looks at plaintext, as Envoy's passes on TLS."""
        inspection = _RAW
        if self._inspect_tls:
            found = inspect_client_hello(data)
            if not isinstance(found, Inspection):
                return None
            if found.tls:
                return found, None
            inspection = found
        if not self._inspect_http:
            return inspection, self._undetected()
        protocol = detect_http(data)
        if isinstance(protocol, NeedData):
            return None
        return inspection, (protocol,) if protocol is not None else ()

    def _undetected(self) -> tuple[str, ...] | None:
        """No application protocol. On a listener with the http_inspector (even where
        ``filter_disabled`` turned it off) that is known: chains that ask for one do not match,
        as in Envoy; without it they keep matching as before the inspector existed."""
        return () if self._runtime.inspect_http else None

    def _inspect_timeout(self) -> None:
        # Envoy's continue_on_listener_filters_timeout: the filters that had not decided set
        # nothing (no application protocol), and the chain is chosen without them.
        self._timer = None
        if self._runtime.model.continue_on_listener_filters_timeout:
            self._dispatch(_RAW, self._undetected())
        elif self._transport is not None:
            self._transport.close()

    def _dispatch(
        self, inspection: Inspection, application_protocols: tuple[str, ...] | None
    ) -> None:
        transport, runtime, destination = self._transport, self._runtime, self._destination
        assert transport is not None
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        received, self._received = self._received, b""
        chain = runtime.select_chain(
            destination, inspection=inspection, application_protocols=application_protocols
        )
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
            # The TCP proxy passes a half-close through as close_notify; HTTP keeps the
            # loop's faster TLS (docs/proxy/data-path.md, "TLS and half-close").
            half_close=chain.tcp is not None,
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
    chain = runtime.chain_of.get(http1)
    runtime.forget(http1)
    conn = H2DownstreamConnection(
        http1.hcm,
        http1.loop,
        scheme=http1.scheme,
        on_close=runtime.forget,
        original_destination=http1.original_destination,
        connection_id=http1.connection_id,
    )
    if chain is not None:
        runtime.track(conn, chain)
    else:
        runtime.connections.add(conn)
    transport.set_protocol(conn)
    conn.adopt(transport, counted=True, data=data)
