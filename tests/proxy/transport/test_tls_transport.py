"""The half-closable TLS transport at its seam: real sockets on loopback, real OpenSSL on both
ends, a recording protocol above. Peers that misbehave (a FIN without close_notify, garbage
records) are driven by the sans-I/O engine directly over plain asyncio streams."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from auth.pem import load_cert_chain
from proxy.transport.tls_engine import ReadEnd, TlsEngine
from proxy.transport.tls_transport import TlsTransport
from tests.support.mesh_pki import MeshPki
from tests.support.procs import free_port

HOST = "127.0.62.1"
WAIT = 5.0


@dataclass
class Recorder(asyncio.Protocol):
    """What the protocol above the TLS transport sees."""

    answer_on_eof: bytes | None = None
    keep_open_on_eof: bool = True
    data: bytearray = field(default_factory=bytearray)
    transport: asyncio.Transport | None = None
    eof: asyncio.Event = field(default_factory=asyncio.Event)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    lost_with: Exception | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    paused: int = 0
    resumed: int = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.arrived.set()

    def eof_received(self) -> bool:
        self.eof.set()
        if self.answer_on_eof is not None:
            assert self.transport is not None
            self.transport.write(self.answer_on_eof)
            self.transport.write_eof()
        return self.keep_open_on_eof

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost_with = exc
        self.lost.set()

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1


@dataclass
class Pki:
    server: ssl.SSLContext
    client: ssl.SSLContext
    stranger: ssl.SSLContext  # trusts another root


def _client_context(pki: MeshPki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF  # as pymesh's own contexts
    context.load_verify_locations(cadata=pki.root_pem)
    cert = pki.workload("ns", "client")
    load_cert_chain(context, cert.chain, cert.key)
    return context


@pytest.fixture(scope="module")
def pki() -> Pki:
    mesh = MeshPki()
    server = mesh.server_context(mesh.workload("ns", "server"))
    server.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    return Pki(
        server,
        _client_context(mesh),
        _client_context(MeshPki()),
    )


StartServer = Callable[..., Awaitable["Server"]]


@dataclass
class Server:
    port: int
    accepted: asyncio.Queue[tuple[TlsTransport, Recorder]]
    errors: list[ssl.SSLError]
    failures: list[BaseException]


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[StartServer]:
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []

    async def start(make: Callable[[], Recorder] = Recorder, timeout: float = WAIT) -> Server:
        port = free_port(HOST)
        made = Server(port, asyncio.Queue(), [], [])

        def factory() -> TlsTransport:
            recorder = make()
            tls = TlsTransport(
                loop,
                TlsEngine(pki.server, server_side=True),
                lambda _: recorder,
                handshake_timeout=timeout,
                on_error=made.errors.append,
            )

            def done(future: asyncio.Future[None]) -> None:
                failure = future.exception()
                if failure is None:
                    made.accepted.put_nowait((tls, recorder))
                else:
                    made.failures.append(failure)

            tls.waiter.add_done_callback(done)
            return tls

        servers.append(await loop.create_server(factory, HOST, port))
        return made

    yield start
    for server in servers:
        server.close()


async def _connect(
    context: ssl.SSLContext, port: int, recorder: Recorder | None = None
) -> tuple[TlsTransport, Recorder]:
    loop = asyncio.get_running_loop()
    recorder = recorder or Recorder()
    tls = TlsTransport(
        loop, TlsEngine(context, server_side=False), lambda _: recorder, handshake_timeout=WAIT
    )
    await asyncio.wait_for(loop.create_connection(lambda: tls, HOST, port), WAIT)
    await asyncio.wait_for(tls.waiter, WAIT)
    return tls, recorder


async def _wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), WAIT)


async def _until(recorder: Recorder, size: int) -> None:
    async def grown() -> None:
        while len(recorder.data) < size:
            recorder.arrived.clear()
            await recorder.arrived.wait()

    await asyncio.wait_for(grown(), WAIT)


async def test_handshake_and_data_both_ways(tls_server: StartServer, pki: Pki) -> None:
    server = await tls_server()
    client, seen_by_client = await _connect(pki.client, server.port)
    tls, seen_by_server = await asyncio.wait_for(server.accepted.get(), WAIT)
    assert tls.get_extra_info("peercert")["subjectAltName"] == (
        ("URI", "spiffe://cluster.local/ns/ns/sa/client"),
    )
    assert client.get_extra_info("cipher") is not None
    assert client.get_extra_info("sslcontext") is pki.client
    assert client.get_extra_info("peername") == (HOST, server.port)
    assert client.get_extra_info("socket") is not None
    assert client.get_extra_info("ssl_object").version() == "TLSv1.3"
    client.write(b"ping")
    await _until(seen_by_server, 4)
    tls.write(b"pong")
    await _until(seen_by_client, 4)
    assert (bytes(seen_by_server.data), bytes(seen_by_client.data)) == (b"ping", b"pong")
    client.close()
    await _wait(seen_by_server.eof)  # close() sends close_notify first
    await _wait(seen_by_client.lost)
    assert tls.read_end is ReadEnd.CLOSE_NOTIFY


async def test_write_eof_lets_the_peer_answer_then_both_ends_close(
    tls_server: StartServer, pki: Pki
) -> None:
    """The request/response-with-half-close exchange: the client sends, half-closes, and
    still receives the whole answer, then the answer's end, then the connection closes."""
    answer = b"A" * 300_000
    server = await tls_server(lambda: Recorder(answer_on_eof=answer))
    client, seen_by_client = await _connect(pki.client, server.port)
    assert client.can_write_eof()
    client.write(b"request")
    client.write_eof()
    with pytest.raises(RuntimeError):
        client.write(b"more")
    _, seen_by_server = await asyncio.wait_for(server.accepted.get(), WAIT)
    await _wait(seen_by_server.eof)
    assert bytes(seen_by_server.data) == b"request"
    await _wait(seen_by_client.eof)
    assert bytes(seen_by_client.data) == answer
    # Both directions are over: both transports close without anyone calling close().
    await _wait(seen_by_client.lost)
    await _wait(seen_by_server.lost)
    assert seen_by_client.lost_with is None and seen_by_server.lost_with is None


async def test_eof_received_returning_false_closes(tls_server: StartServer, pki: Pki) -> None:
    server = await tls_server(lambda: Recorder(keep_open_on_eof=False))
    client, seen_by_client = await _connect(pki.client, server.port)
    client.write_eof()
    await _wait(seen_by_client.eof)  # the server's close() sent close_notify
    await _wait(seen_by_client.lost)
    assert client.read_end is ReadEnd.CLOSE_NOTIFY


async def _engine_peer(
    context: ssl.SSLContext, port: int
) -> tuple[TlsEngine, asyncio.StreamReader, asyncio.StreamWriter]:
    """A client whose every byte is under the test's control."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), WAIT)
    engine = TlsEngine(context, server_side=False)
    while not engine.handshake():
        writer.write(engine.outgoing())
        engine.receive(await asyncio.wait_for(reader.read(65536), WAIT))
    writer.write(engine.outgoing())
    return engine, reader, writer


async def test_a_fin_without_close_notify_is_a_truncated_end(
    tls_server: StartServer, pki: Pki
) -> None:
    server = await tls_server(lambda: Recorder(answer_on_eof=b"answer"))
    engine, reader, writer = await _engine_peer(pki.client, server.port)
    engine.write(b"request")
    writer.write(engine.outgoing())
    writer.write_eof()  # TCP FIN, no close_notify
    tls, seen_by_server = await asyncio.wait_for(server.accepted.get(), WAIT)
    await _wait(seen_by_server.eof)
    assert bytes(seen_by_server.data) == b"request"
    assert tls.read_end is ReadEnd.TRUNCATED
    # The server still answered, then closed.
    received = await asyncio.wait_for(reader.read(), WAIT)
    engine.receive(received)
    chunks: list[bytes] = []
    assert engine.read(chunks)
    assert (b"".join(chunks), engine.read_end) == (b"answer", ReadEnd.CLOSE_NOTIFY)
    await _wait(seen_by_server.lost)
    assert server.errors == []  # Envoy counts no error for a truncated stream
    writer.close()


async def test_garbage_after_the_handshake_ends_the_connection(
    tls_server: StartServer, pki: Pki
) -> None:
    server = await tls_server()
    _, reader, writer = await _engine_peer(pki.client, server.port)
    _, seen_by_server = await asyncio.wait_for(server.accepted.get(), WAIT)
    writer.write(b"\x17\x03\x03\x00\x05hello")
    await _wait(seen_by_server.lost)
    assert isinstance(seen_by_server.lost_with, ssl.SSLError)
    assert not seen_by_server.eof.is_set() and not seen_by_server.data
    assert [type(e) for e in server.errors] == [ssl.SSLError]
    assert await asyncio.wait_for(reader.read(), WAIT) is not None  # the socket closed
    writer.close()


async def test_a_refused_handshake_fails_the_waiter(tls_server: StartServer, pki: Pki) -> None:
    server = await tls_server()
    with pytest.raises(ssl.SSLCertVerificationError):
        await _connect(pki.stranger, server.port)


async def test_a_silent_client_times_the_handshake_out(
    tls_server: StartServer,
) -> None:
    server = await tls_server(timeout=0.3)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, server.port), WAIT)
    assert await asyncio.wait_for(reader.read(), WAIT) == b""  # closed by the server
    assert [type(e) for e in server.failures] == [TimeoutError]
    writer.close()


async def test_flow_control_pauses_the_writer_and_loses_nothing(
    tls_server: StartServer, pki: Pki
) -> None:
    server = await tls_server()
    client, seen_by_client = await _connect(pki.client, server.port)
    tls, seen_by_server = await asyncio.wait_for(server.accepted.get(), WAIT)
    client.pause_reading()
    assert not client.is_reading()
    tls.set_write_buffer_limits(high=64 * 1024)
    assert tls.get_write_buffer_limits()[1] == 64 * 1024
    block = bytes(range(256)) * 4096  # 1 MiB
    total = 0
    while seen_by_server.paused == 0 and total < 64 * len(block):
        tls.write(block)
        total += len(block)
        await asyncio.sleep(0)
    assert seen_by_server.paused == 1, "the write buffer never filled"
    assert tls.get_write_buffer_size() > 64 * 1024
    client.resume_reading()
    await _until(seen_by_client, total)
    assert len(seen_by_client.data) == total
    assert bytes(seen_by_client.data[: len(block)]) == block
    assert seen_by_server.resumed == 1
    client.close()


async def test_abort_drops_the_connection_without_close_notify(
    tls_server: StartServer, pki: Pki
) -> None:
    server = await tls_server()
    client, seen_by_client = await _connect(pki.client, server.port)
    tls, seen_by_server = await asyncio.wait_for(server.accepted.get(), WAIT)
    client.abort()
    assert client.is_closing()
    await _wait(seen_by_client.lost)
    await _wait(seen_by_server.eof)
    assert tls.read_end is ReadEnd.TRUNCATED


async def test_set_protocol_moves_data_to_the_new_protocol(
    tls_server: StartServer, pki: Pki
) -> None:
    server = await tls_server()
    client, _ = await _connect(pki.client, server.port)
    tls, first = await asyncio.wait_for(server.accepted.get(), WAIT)
    second = Recorder()
    tls.set_protocol(second)
    assert tls.get_protocol() is second
    client.write(b"hello")
    await _until(second, 5)
    assert not first.data
    client.close()
