"""Server-side TLS on a connection that is already open (after the TLS inspector read its
ClientHello), and the peer checks a listener's validation context asks for.

The loop's own TLS protocol (uvloop's, or asyncio's on other loops) is put under the
connection with the bytes already read fed back in, so the handshake sees the whole
ClientHello; a chain that must carry a half-close (the TCP proxy) gets
:class:`~proxy.transport.tls_transport.TlsTransport` instead, whose ``write_eof`` sends
``close_notify``. The chain's protocol gets the TLS transport once the handshake has completed and
the client certificate passed the checks OpenSSL does not make.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
from collections.abc import Callable
from typing import Any, cast

import structlog

from proxy.config.model import CertificateValidation
from proxy.transport.peer_checks import PeerCheckFailure, check_peer
from proxy.transport.tls_engine import TlsEngine
from proxy.transport.tls_transport import TlsTransport

__all__ = ["HandshakeOutcome", "peer_refused", "record_sni", "start_server_tls"]

log = structlog.get_logger(__name__)

#: Called once per handshake: None when the connection was handed over, else the ``ssl.*``
#: listener counter to bump (Envoy's names); with ``half_close``, again with
#: ``connection_error`` when a record fails after the handshake (as Envoy counts it).
HandshakeOutcome = Callable[[str | None], None]


def _ssl_protocol_class(loop: asyncio.AbstractEventLoop) -> Any:
    try:
        import uvloop
        import uvloop.loop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.sslproto.SSLProtocol
    if isinstance(loop, uvloop.Loop):
        return uvloop.loop.SSLProtocol
    return asyncio.sslproto.SSLProtocol


def record_sni(ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
    """An ``sni_callback``: Python has no getter for the SNI a server received, so it is
    kept on the object for the connection's stream info (``requested_server_name``)."""
    ssl_object.pymesh_sni = server_name  # type: ignore[attr-defined]


def peer_refused(
    validation: CertificateValidation | None, ssl_object: ssl.SSLObject | None
) -> PeerCheckFailure | None:
    """The listener's SAN matchers and pins on the client certificate (a client without one
    passes here: whether one is required is OpenSSL's decision)."""
    if validation is None or ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return check_peer(der, validation)


class _Handover(asyncio.Protocol):
    """The TLS protocol's application side until the handshake completed."""

    def __init__(
        self,
        make: Callable[[asyncio.BaseTransport], asyncio.Protocol],
        validation: CertificateValidation | None,
        outcome: HandshakeOutcome,
    ) -> None:
        self._make = make
        self._validation = validation
        self._outcome = outcome

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        refused = peer_refused(self._validation, transport.get_extra_info("ssl_object"))
        if refused is not None:
            self._outcome(refused.value)
            cast(asyncio.Transport, transport).abort()
            return
        self._outcome(None)
        protocol = self._make(transport)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # a refused client's connection


def _failure_stat(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) if isinstance(exc, ssl.SSLError) else None
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "fail_verify_no_cert"
    if isinstance(exc, ssl.SSLCertVerificationError) or reason == "CERTIFICATE_VERIFY_FAILED":
        return "fail_verify_error"
    return "connection_error"


def start_server_tls(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.BaseTransport,
    make: Callable[[asyncio.BaseTransport], asyncio.Protocol],
    context: ssl.SSLContext,
    received: bytes,
    *,
    validation: CertificateValidation | None,
    handshake_timeout: float,
    outcome: HandshakeOutcome,
    half_close: bool = False,
) -> None:
    """Run the server side of a TLS handshake on ``transport``, whose first ``received``
    bytes were already read; when it succeeds, ``make`` builds the protocol for the TLS
    transport (which knows the negotiated ALPN)."""
    if half_close:
        _start_half_closable(
            loop, transport, make, context, received, validation, handshake_timeout, outcome
        )
        return
    waiter = loop.create_future()
    handover = _Handover(make, validation, outcome)
    tls = _ssl_protocol_class(loop)(
        loop,
        handover,
        context,
        waiter,
        server_side=True,
        ssl_handshake_timeout=handshake_timeout,
    )

    def failed(future: asyncio.Future[None]) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is None:
            return
        log.debug("downstream TLS handshake failed", error=str(exc))
        outcome(_failure_stat(exc))

    waiter.add_done_callback(failed)
    transport.set_protocol(tls)
    tls.connection_made(transport)
    # The TLS protocol is a buffered protocol: hand it the ClientHello read already.
    rest = memoryview(received)
    while rest:
        view = tls.get_buffer(len(rest))
        size = min(len(view), len(rest))
        view[:size] = rest[:size]
        tls.buffer_updated(size)
        rest = rest[size:]


def _start_half_closable(
    loop: asyncio.AbstractEventLoop,
    transport: asyncio.BaseTransport,
    make: Callable[[asyncio.BaseTransport], asyncio.Protocol],
    context: ssl.SSLContext,
    received: bytes,
    validation: CertificateValidation | None,
    handshake_timeout: float,
    outcome: HandshakeOutcome,
) -> None:
    def ready(tls: TlsTransport) -> asyncio.Protocol | None:
        refused = peer_refused(validation, tls.get_extra_info("ssl_object"))
        if refused is not None:
            outcome(refused.value)
            return None
        outcome(None)
        return make(tls)

    def failed(future: asyncio.Future[None]) -> None:
        exc = None if future.cancelled() else future.exception()
        if exc is not None and not tls.handshake_done:
            log.debug("downstream TLS handshake failed", error=str(exc))
            outcome(_failure_stat(exc))

    tls = TlsTransport(
        loop,
        TlsEngine(context, server_side=True),
        ready,
        handshake_timeout=handshake_timeout,
        on_error=lambda _: outcome("connection_error"),
    )
    tls.waiter.add_done_callback(failed)
    transport.set_protocol(tls)
    tls.connection_made(transport)
    tls.feed(received)
