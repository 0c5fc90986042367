"""The TLS side of listeners: the server context of a listener whose chains are told apart
during the handshake (no TLS inspector), SNI patterns, and the reset a refused connection
gets."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from typing import TYPE_CHECKING, cast

from proxy.config.model import Listener
from pymesh.errors import UnsupportedError

if TYPE_CHECKING:
    from proxy.listener import ListenerRuntime

__all__ = ["TLS_INSPECTOR", "listener_ssl", "reset", "sni_matches", "tls_of"]

TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"


def reset(transport: asyncio.BaseTransport) -> None:
    """Close with a reset, as Envoy does a connection no filter chain takes (it closes with
    the client's bytes unread)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    cast(asyncio.Transport, transport).abort()


def tls_of(model: Listener) -> tuple[object, ...]:
    chains = (*model.filter_chains, model.default_filter_chain)
    return tuple(c.transport_socket if c is not None else None for c in chains)


def sni_matches(pattern: str, server_name: str) -> bool:
    if pattern.startswith("*."):
        return (
            server_name.lower().endswith(pattern[1:].lower())
            and len(server_name) > len(pattern) - 1
        )
    return pattern.lower() == server_name.lower()


def listener_ssl(runtime: ListenerRuntime) -> ssl.SSLContext | None:
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
    inspected = TLS_INSPECTOR in runtime.model.listener_filters

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
