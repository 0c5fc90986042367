"""A sans-I/O TLS engine: ciphertext in, plaintext and the stream's end out, and the other
way round. It never touches a socket or a loop; :mod:`proxy.transport.tls_transport` drives
it from asyncio.

Why not the loop's own TLS protocol: it cannot half-close. A TLS stream carries its end as a
``close_notify`` alert, and both TLS 1.2 and 1.3 let a peer that sent one keep reading (TLS 1.3
says so outright). OpenSSL behind ``ssl.SSLObject`` with memory BIOs does the same:

- ``unwrap()`` writes ``close_notify`` and then, as Python calls ``SSL_shutdown`` a second
  time, tries to read the peer's; that second call *consumes* an application record already
  in the incoming BIO and fails with ``APPLICATION_DATA_AFTER_CLOSE_NOTIFY``. So every
  complete record is read out before :meth:`TlsEngine.shutdown` unwraps, and what it read is
  handed back rather than lost.
- After our ``close_notify``, ``read()`` still returns the peer's data.
- After the peer's ``close_notify``, ``read()`` returns ``b""`` (or raises
  ``SSLZeroReturnError`` once both sides have sent theirs), and ``write()`` still works.
- A transport EOF without ``close_notify`` raises ``SSLEOFError`` (OpenSSL 3's
  ``UNEXPECTED_EOF_WHILE_READING``): a truncated stream, after which OpenSSL refuses to write
  too. With ``OP_IGNORE_UNEXPECTED_EOF`` on the context (pymesh's contexts set it) it reads
  as a ``close_notify`` instead and writing goes on; the engine then tells the two apart by
  reading every complete record *before* it passes the EOF in (:meth:`TlsEngine.receive_eof`):
  a ``close_notify`` found after that can only be the EOF's.
"""

from __future__ import annotations

import enum
import ssl

__all__ = ["ReadEnd", "TlsEngine"]

# One TLS record's worth of plaintext at most comes back from each ``read`` call.
_READ_SIZE = 256 * 1024


class ReadEnd(enum.Enum):
    """How the peer's direction of the stream ended."""

    #: The peer sent ``close_notify``: a clean half-close.
    CLOSE_NOTIFY = "close_notify"
    #: The transport ended without ``close_notify``. Envoy's SSL socket takes this as the end
    #: of the stream too (BoringSSL's ``SSL_ERROR_SYSCALL`` with a zero return), counting
    #: nothing; it is logged here so a truncating peer can be found.
    TRUNCATED = "truncated"


class TlsEngine:
    """One TLS connection's state. ``receive`` ciphertext, then ``handshake`` until it
    returns True and ``read`` plaintext; ``write`` plaintext; ``outgoing`` is the ciphertext
    to send after any of these. Failures raise :class:`ssl.SSLError`."""

    __slots__ = (
        "_eof_fed",
        "_in",
        "_out",
        "_read_end",
        "_shutdown_sent",
        "handshake_done",
        "ssl_object",
    )

    def __init__(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname or None
        )
        self.handshake_done = False
        self._shutdown_sent = False
        self._read_end: ReadEnd | None = None
        self._eof_fed = False

    @property
    def shutdown_sent(self) -> bool:
        return self._shutdown_sent

    @property
    def read_end(self) -> ReadEnd | None:
        return self._read_end

    def receive(self, data: bytes) -> None:
        self._in.write(data)

    def receive_eof(self, held: list[bytes]) -> bool:
        """The transport's EOF (TCP FIN): nothing more will arrive. Complete records still
        unread are read into ``held`` first (so that a ``close_notify`` among them is told
        from the EOF); returns True when the peer's direction ended."""
        ended = self.read(held) if self.handshake_done else False
        self._in.write_eof()
        self._eof_fed = True
        return ended or (self.handshake_done and self.read(held))

    def handshake(self) -> bool:
        """Advance the handshake; True once it has completed."""
        if self.handshake_done:
            return True
        try:
            self.ssl_object.do_handshake()
        except ssl.SSLWantReadError:
            if self._in.eof:
                # The peer went away mid-handshake: OpenSSL would only ask for more.
                raise ssl.SSLEOFError("EOF during the TLS handshake") from None
            return False
        except ssl.SSLZeroReturnError:
            # What an EOF looks like with OP_IGNORE_UNEXPECTED_EOF; mid-handshake it is not a
            # clean end.
            raise ssl.SSLEOFError("EOF during the TLS handshake") from None
        self.handshake_done = True
        return True

    def read(self, chunks: list[bytes]) -> bool:
        """Append decrypted data to ``chunks`` until nothing complete is left; returns True
        when the peer's direction has ended (:attr:`read_end` says how)."""
        if self._read_end is not None:
            return True
        incoming = self._in
        ssl_object = self.ssl_object
        read = ssl_object.read
        while True:
            try:
                data = read(_READ_SIZE)
            except ssl.SSLWantReadError:
                return False
            except ssl.SSLZeroReturnError:
                self._read_end = ReadEnd.TRUNCATED if self._eof_fed else ReadEnd.CLOSE_NOTIFY
                return True
            except ssl.SSLEOFError:
                self._read_end = ReadEnd.TRUNCATED
                return True
            if not data:
                # Python's way of saying close_notify arrived while ours is not sent yet.
                self._read_end = ReadEnd.TRUNCATED if self._eof_fed else ReadEnd.CLOSE_NOTIFY
                return True
            chunks.append(data)
            # Every byte that came is consumed and none is decrypted but unread: another
            # read could only raise SSLWantReadError, which costs more than this check.
            if not incoming.pending and not self._eof_fed and not ssl_object.pending():
                return False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.ssl_object.write(data)

    def shutdown(self, held: list[bytes]) -> bool:
        """Send ``close_notify`` (once). Complete records still unread are read into
        ``held`` first, since unwrapping would consume and refuse them; returns True when the
        peer's direction ended meanwhile."""
        if self._shutdown_sent:
            return self._read_end is not None
        ended = self.read(held) if self.handshake_done else False
        self._shutdown_sent = True
        if not self.handshake_done:
            return ended
        try:
            self.ssl_object.unwrap()
        except ssl.SSLWantReadError:
            pass  # ours is sent; the peer's comes through read()
        except ssl.SSLError:
            # The peer's direction was already over (a truncated stream): nothing to say.
            pass
        return ended

    def outgoing(self) -> bytes:
        """Ciphertext to send (empty when there is none)."""
        return self._out.read() if self._out.pending else b""
