"""Upstream transport sockets (Envoy's ``UpstreamTlsContext`` and ``transport_socket_matches``).

A cluster's sockets are built once per configuration and secret set (:func:`build_sockets`)
and picked per host from its ``envoy.transport_socket_match`` metadata. Plaintext is ``None``
all the way down, so a plaintext connection takes exactly the path it took before TLS existed.

A TLS connection is opened with the loop's own TLS transport (HTTP: uvloop's is in C and
faster), or with :class:`~proxy.transport.tls_transport.TlsTransport` when the connection must
carry a half-close (``half_close``: the TCP proxy). Until the peer certificate has passed the
checks OpenSSL does not make (SAN matchers, pins), the connection's protocol is not connected,
so it never sees a peer that is then refused.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import cast

import structlog

from proxy.config.model import CertificateValidation, Cluster, Secret, UpstreamTls
from proxy.transport.peer_checks import PeerCheckFailure, check_peer, peer_sans
from proxy.transport.tls import SecretUnavailable, client_context, validation_of
from proxy.transport.tls_engine import TlsEngine
from proxy.transport.tls_transport import TlsTransport

__all__ = [
    "MATCH_NAMESPACE",
    "PLAINTEXT",
    "TlsConnectError",
    "TransportSocket",
    "TransportSockets",
    "UnavailableSocket",
    "UpstreamTlsSocket",
    "build_sockets",
    "open_connection",
    "secret_names",
]

log = structlog.get_logger(__name__)

#: The endpoint metadata namespace ``transport_socket_matches`` read (Envoy's constant).
MATCH_NAMESPACE = "envoy.transport_socket_match"


class TlsConnectError(ConnectionError):
    """The TLS handshake failed or the peer was refused. ``reason`` is what Envoy puts in
    ``%UPSTREAM_TRANSPORT_FAILURE_REASON%``; ``stat`` the ``ssl.*`` counter it bumps."""

    def __init__(self, reason: str, stat: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stat = stat


@dataclass(frozen=True, slots=True)
class UpstreamTlsSocket:
    context: ssl.SSLContext
    # None sends no SNI (Envoy's default without ``sni``).
    server_hostname: str | None
    validation: CertificateValidation | None

    def check(self, ssl_object: ssl.SSLObject | None) -> PeerCheckFailure | None:
        if self.validation is None:
            return None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return check_peer(der, self.validation)


@dataclass(frozen=True, slots=True)
class UnavailableSocket:
    """A TLS socket whose SDS secrets have not arrived: connections through it fail."""

    reason: str


TransportSocket = UpstreamTlsSocket | UnavailableSocket | None


@dataclass(frozen=True, slots=True)
class TransportSockets:
    """A cluster's sockets: ``matches`` in order, then ``default``."""

    default: TransportSocket = None
    matches: tuple[tuple[Mapping[str, object], TransportSocket], ...] = ()

    def for_host(self, match_metadata: Mapping[str, object]) -> TransportSocket:
        for wanted, socket in self.matches:
            if all(match_metadata.get(k) == v for k, v in wanted.items()):
                return socket
        return self.default


PLAINTEXT = TransportSockets()


def secret_names(cluster: Cluster) -> tuple[str, ...]:
    """The SDS secrets a cluster's sockets name, in a stable order."""
    names: list[str] = []
    matched = (m.transport_socket for m in cluster.transport_socket_matches)
    for tls in (cluster.transport_socket, *matched):
        if tls is None:
            continue
        for ref in (*tls.common.tls_certificate_sds, tls.common.validation_context_sds):
            if ref is not None and ref.name not in names:
                names.append(ref.name)
    return tuple(names)


def build_sockets(cluster: Cluster, secrets: Mapping[str, Secret]) -> TransportSockets:
    """The cluster's sockets for the current secrets (one context per distinct socket)."""
    if cluster.transport_socket is None and all(
        m.transport_socket is None for m in cluster.transport_socket_matches
    ):
        return PLAINTEXT
    built: dict[UpstreamTls, TransportSocket] = {}

    def one(tls: UpstreamTls | None) -> TransportSocket:
        if tls is None:
            return None
        if tls not in built:
            built[tls] = _socket(tls, secrets)
        return built[tls]

    return TransportSockets(
        default=one(cluster.transport_socket),
        matches=tuple(
            (MappingProxyType(dict(m.match)), one(m.transport_socket))
            for m in cluster.transport_socket_matches
        ),
    )


def _socket(tls: UpstreamTls, secrets: Mapping[str, Secret]) -> TransportSocket:
    try:
        return UpstreamTlsSocket(
            client_context(tls, secrets), tls.sni, validation_of(tls.common, secrets)
        )
    except SecretUnavailable as exc:
        return UnavailableSocket(str(exc))


class _PeerGate(asyncio.Protocol):
    """The protocol of a new TLS connection until its peer passed the checks."""

    __slots__ = ("detail", "failure", "protocol", "socket")

    def __init__(self, protocol: asyncio.Protocol, socket: UpstreamTlsSocket) -> None:
        self.protocol = protocol
        self.socket = socket
        self.failure: PeerCheckFailure | None = None
        self.detail = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Runs when the handshake has completed.
        ssl_object = transport.get_extra_info("ssl_object")
        self.failure = self.socket.check(ssl_object)
        if self.failure is not None:
            self.detail = _failure_detail(self.failure, ssl_object)
            cast(asyncio.Transport, transport).abort()
            return
        transport.set_protocol(self.protocol)
        self.protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # only a refused peer's connection ends while the gate is its protocol


def _failure_detail(failure: PeerCheckFailure, ssl_object: ssl.SSLObject | None) -> str:
    if failure is PeerCheckFailure.SAN and ssl_object is not None:
        der = ssl_object.getpeercert(binary_form=True)
        sans = [v for values in peer_sans(der).values() for v in values] if der else []
        return f"SAN matcher, certificate SANs are [{','.join(sans)}]"
    if failure is PeerCheckFailure.PIN:
        return "certificate hash or SPKI pin"
    return "no peer certificate"


async def open_connection(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.Protocol,
    host: str,
    port: int,
    socket: TransportSocket,
    *,
    timeout: float,
    source: tuple[str, int] | None,
    half_close: bool = False,
    on_error: Callable[[ssl.SSLError], None] | None = None,
) -> None:
    """Connect ``protocol`` to ``host:port`` through ``socket``; ``connection_made`` has run
    when this returns. Raises OSError/TimeoutError (TlsConnectError for TLS failures).
    ``half_close`` asks for a TLS transport whose ``write_eof`` sends ``close_notify``;
    ``on_error`` hears of TLS failures after the handshake (bad records)."""
    if socket is None:
        await asyncio.wait_for(
            loop.create_connection(lambda: protocol, host, port, local_addr=source), timeout
        )
        return
    if isinstance(socket, UnavailableSocket):
        raise TlsConnectError(f"TLS_error:|{socket.reason}:TLS_error_end", "connection_error")
    if half_close:
        await _open_half_closable(loop, protocol, host, port, socket, timeout, source, on_error)
        return
    gate = _PeerGate(protocol, socket)
    make: Callable[[], asyncio.Protocol] = lambda: gate  # noqa: E731
    try:
        await asyncio.wait_for(
            loop.create_connection(
                make,
                host,
                port,
                local_addr=source,
                ssl=socket.context,
                # An empty name sends no SNI; the loop would otherwise send the address.
                server_hostname=socket.server_hostname or "",
                ssl_handshake_timeout=timeout,
            ),
            timeout,
        )
    except ssl.SSLError as exc:
        raise TlsConnectError(_reason(exc), _stat(exc)) from exc
    if gate.failure is not None:
        raise TlsConnectError(_VERIFY_FAILED.format(gate.detail), gate.failure.value)


async def _open_half_closable(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.Protocol,
    host: str,
    port: int,
    socket: UpstreamTlsSocket,
    timeout: float,
    source: tuple[str, int] | None,
    on_error: Callable[[ssl.SSLError], None] | None,
) -> None:
    refused: TlsConnectError | None = None

    def ready(transport: TlsTransport) -> asyncio.Protocol | None:
        nonlocal refused
        ssl_object = transport.get_extra_info("ssl_object")
        failure = socket.check(ssl_object)
        if failure is None:
            return protocol
        detail = _failure_detail(failure, ssl_object)
        refused = TlsConnectError(_VERIFY_FAILED.format(detail), failure.value)
        return None

    engine = TlsEngine(socket.context, server_side=False, server_hostname=socket.server_hostname)
    deadline = loop.time() + timeout
    tls = TlsTransport(loop, engine, ready, handshake_timeout=timeout, on_error=on_error)
    await asyncio.wait_for(
        loop.create_connection(lambda: tls, host, port, local_addr=source), timeout
    )
    try:
        # The transport's own timer ends the handshake too; this bounds the wait regardless.
        await asyncio.wait_for(asyncio.shield(tls.waiter), max(0.0, deadline - loop.time()) + 1)
    except ssl.SSLError as exc:
        raise TlsConnectError(_reason(exc), _stat(exc)) from exc
    except BaseException:
        tls.abort()
        if refused is not None:
            raise refused from None
        raise


# Envoy's reasons: ``TLS_error:|<BoringSSL code>:<library>:OPENSSL_internal:<reason>:<detail>
# :TLS_error_end``; BoringSSL's code is known for the one failure a verifier reports.
_VERIFY_FAILED = (
    "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:"
    "verify cert failed: {}:TLS_error_end"
)


def _reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        # Python does not say at which depth of the chain OpenSSL failed.
        detail = f"X509_verify_cert: certificate verification error: {exc.verify_message}"
        return _VERIFY_FAILED.format(detail)
    reason = exc.reason or type(exc).__name__
    return f"TLS_error:|SSL routines:OPENSSL_internal:{reason}:TLS_error_end"


def _stat(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "fail_verify_error"
    return "connection_error"
