"""A TLS transport that can half-close: :class:`~proxy.transport.tls_engine.TlsEngine` driven
from asyncio.

:class:`TlsTransport` is the protocol of the raw socket transport and the transport of the
protocol above it. ``write_eof()`` sends ``close_notify`` and keeps reading; the peer's
``close_notify`` (or a bare TCP FIN, as Envoy takes it) is ``eof_received()`` above; once
both directions have ended the connection closes, as Envoy's does. The protocol above is
chosen only after the handshake, by ``on_ready`` (which may refuse the peer: SAN matchers and
pins are checked there).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, cast

import structlog

from proxy.transport.tls_engine import ReadEnd, TlsEngine

__all__ = ["OnReady", "TlsTransport"]

log = structlog.get_logger(__name__)

#: Called once the handshake completed: the protocol for the connection, or None to refuse
#: the peer (the connection is aborted).
OnReady = Callable[["TlsTransport"], asyncio.BaseProtocol | None]


class TlsTransport(asyncio.Transport, asyncio.Protocol):
    """Raw side: ``connection_made`` / ``data_received`` / ``eof_received`` /
    ``connection_lost`` / ``pause_writing`` / ``resume_writing`` come from the socket's
    transport. Upper side: the :class:`asyncio.Transport` API."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        engine: TlsEngine,
        on_ready: OnReady,
        *,
        handshake_timeout: float,
        on_error: Callable[[ssl.SSLError], None] | None = None,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._engine = engine
        self._on_ready = on_ready
        self._handshake_timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        # Resolved when the protocol above is connected, or failed with why it never was.
        self.waiter: asyncio.Future[None] = loop.create_future()
        # A caller that stopped waiting (cancelled) must not leave an unretrieved failure.
        self.waiter.add_done_callback(_retrieve)
        self._on_error = on_error
        self._raw: asyncio.Transport | None = None
        self._protocol: asyncio.BaseProtocol | None = None
        self._app: asyncio.Protocol | None = None  # the same, when it takes data_received
        # Plaintext decrypted but not yet delivered (reading paused, or read during a
        # shutdown): delivered in order before anything newer.
        self._held: list[bytes] = []
        self._reading_paused = False
        self._resume_scheduled = False
        self._eof_delivered = False
        self._closing = False
        self._lost = False
        self._writing_paused = False
        #: Why the connection failed, when it did (a TLS alert, a bad record, a timeout).
        self.failure: BaseException | None = None

    @property
    def read_end(self) -> ReadEnd | None:
        """How the peer's direction ended, once it has."""
        return self._engine.read_end

    @property
    def handshake_done(self) -> bool:
        return self._engine.handshake_done

    # -- raw side ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self._raw = cast(asyncio.Transport, transport)
        if self._handshake_timeout > 0:
            self._timer = self._loop.call_later(self._handshake_timeout, self._handshake_expired)
        self._step()  # a client speaks first

    def feed(self, data: bytes) -> None:
        """Ciphertext that was read before this transport took the socket (the ClientHello
        the TLS inspector saw)."""
        if data:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        self._engine.receive(data)
        self._step()

    def eof_received(self) -> bool:
        try:
            self._engine.receive_eof(self._held)
        except ssl.SSLError as exc:
            self._fail(exc)
            return False
        self._step()
        # The socket stays open for what this side still writes; it closes when both
        # directions are over.
        return not self._lost and not self._closing

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._cancel_timer()
        if not self.waiter.done():
            self.waiter.set_exception(self.failure or exc or ConnectionResetError("closed"))
        protocol, self._protocol, self._app = self._protocol, None, None
        if protocol is not None:
            protocol.connection_lost(exc if self.failure is None else _as_exception(self.failure))

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._protocol is not None:
            self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._protocol is not None:
            self._protocol.resume_writing()

    # -- the engine ------------------------------------------------------------------------
    def _step(self) -> None:
        """Advance the handshake or read what arrived, and send what the engine produced."""
        engine = self._engine
        try:
            if not engine.handshake_done:
                done = engine.handshake()
                self._flush()
                if not done:
                    return
                self._handshake_completed()
                if self._protocol is None:
                    return
            if not self._reading_paused and self._app is not None:
                chunks = self._held
                self._held = []
                ended = engine.read(chunks)
                self._flush()  # TLS 1.3 key updates and the like
                self._deliver(chunks, ended)
        except ssl.SSLError as exc:
            self._fail(exc)

    def _handshake_completed(self) -> None:
        self._cancel_timer()
        protocol = self._on_ready(self)
        if protocol is None:
            self.abort()
            return
        self.set_protocol(protocol)
        if not self.waiter.done():
            self.waiter.set_result(None)
        protocol.connection_made(self)
        if self._writing_paused and not self._lost:
            protocol.pause_writing()

    def _deliver(self, chunks: list[bytes], ended: bool) -> None:
        app = self._app
        for i, data in enumerate(chunks):
            if app is None or self._lost or self._closing:
                return
            if self._reading_paused:
                self._held = chunks[i:]
                return
            app.data_received(data)
        if ended and not self._eof_delivered and app is not None and not self._lost:
            self._eof_delivered = True
            end = self._engine.read_end
            if end is ReadEnd.TRUNCATED:
                log.debug("TLS stream ended without close_notify", peer=self._peername())
            keep_open = app.eof_received()
            if self._engine.shutdown_sent:
                self._close_raw()  # both directions are over
            elif not keep_open:
                self.close()

    def _flush(self) -> None:
        data = self._engine.outgoing()
        if data and self._raw is not None and not self._raw.is_closing():
            self._raw.write(data)

    def _fail(self, exc: ssl.SSLError) -> None:
        if self.failure is not None:
            return
        self.failure = exc
        log.debug("TLS connection failed", error=str(exc), peer=self._peername())
        if self._engine.handshake_done and self._on_error is not None:
            self._on_error(exc)
        self._flush()  # the alert, if OpenSSL wrote one
        if not self.waiter.done():
            self.waiter.set_exception(exc)
        self.abort()

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._engine.handshake_done or self._lost:
            return
        self.failure = TimeoutError("TLS handshake timed out")
        if not self.waiter.done():
            self.waiter.set_exception(self.failure)
        self.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_raw(self) -> None:
        self._closing = True
        if self._raw is not None and not self._raw.is_closing():
            self._raw.close()  # flushes what is buffered, then closes

    def _peername(self) -> object:
        return self._raw.get_extra_info("peername") if self._raw is not None else None

    # -- upper side: asyncio.Transport -----------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._engine.shutdown_sent:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._closing or self._lost or not data:
            return
        try:
            self._engine.write(data)
        except ssl.SSLError as exc:
            self._fail(exc)
            return
        self._flush()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Send ``close_notify``; the peer's data keeps coming until its own end."""
        if self._engine.shutdown_sent or self._closing or self._lost:
            return
        held: list[bytes] = []
        ended = self._engine.shutdown(held)
        self._held.extend(held)
        self._flush()
        if self._eof_delivered:
            self._close_raw()
        elif held or ended:
            self._schedule_resume()

    def close(self) -> None:
        if self._closing or self._lost:
            return
        if self._engine.handshake_done and not self._engine.shutdown_sent:
            self._engine.shutdown([])
            self._flush()
        self._close_raw()

    def abort(self) -> None:
        self._closing = True
        if self._raw is not None:
            self._raw.abort()

    def is_closing(self) -> bool:
        return self._closing or self._lost

    def pause_reading(self) -> None:
        if self._reading_paused:
            return
        self._reading_paused = True
        if self._raw is not None and not self._raw.is_closing():
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        if self._raw is not None and not self._raw.is_closing():
            self._raw.resume_reading()
        self._schedule_resume()

    def _schedule_resume(self) -> None:
        # Records already decrypted or buffered go up from the loop, not from inside the
        # caller (often the other side's data_received), as the loop's transports do.
        if not self._resume_scheduled:
            self._resume_scheduled = True
            self._loop.call_soon(self._resumed)

    def _resumed(self) -> None:
        self._resume_scheduled = False
        if not self._lost and not self._reading_paused:
            self._step()

    def is_reading(self) -> bool:
        return not self._reading_paused and not self.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size() if self._raw is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._raw.get_write_buffer_limits() if self._raw is not None else (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        # Only a plain Protocol gets data: the TCP proxy's sides are plain protocols, and a
        # BufferedProtocol would cost a copy here since SSLObject.read returns bytes anyway.
        self._protocol = protocol
        self._app = protocol if isinstance(protocol, asyncio.Protocol) else None

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        ssl_object = self._engine.ssl_object
        if name == "ssl_object":
            return ssl_object
        if name == "peercert":
            return ssl_object.getpeercert() if self._engine.handshake_done else default
        if name == "cipher":
            return ssl_object.cipher()
        if name == "compression":
            return ssl_object.compression()
        if name == "sslcontext":
            return ssl_object.context
        if self._raw is None:
            return default
        return self._raw.get_extra_info(name, default)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _as_exception(exc: BaseException) -> Exception:
    return exc if isinstance(exc, Exception) else ConnectionError(str(exc))
