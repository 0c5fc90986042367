"""The sans-I/O TLS engine, two of them wired back to back in memory: no sockets, no loop.
Ciphertext is also fed one byte at a time, as h11's readers are."""

from __future__ import annotations

import ssl

import pytest

from auth.pem import load_cert_chain
from proxy.transport.tls_engine import ReadEnd, TlsEngine
from tests.support.mesh_pki import MeshPki

VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    pki = MeshPki()
    server = pki.server_context(pki.workload("ns", "server"))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.load_verify_locations(cadata=pki.root_pem)
    cert = pki.workload("ns", "client")
    load_cert_chain(client, cert.chain, cert.key)
    for context in (server, client):
        context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    return server, client


def _pair(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], version: ssl.TLSVersion, *, bytewise: bool
) -> tuple[TlsEngine, TlsEngine]:
    server_context, client_context = contexts
    client_context.maximum_version = version
    client = TlsEngine(client_context, server_side=False)
    server = TlsEngine(server_context, server_side=True)
    for _ in range(10):
        done = [client.handshake(), server.handshake()]
        if all(done):
            break
        _send(client, server, bytewise=bytewise)
        _send(server, client, bytewise=bytewise)
    assert client.handshake_done and server.handshake_done
    assert client.ssl_object.version() == server.ssl_object.version()
    _send(client, server)  # TLS 1.3 session tickets and the client's Finished
    _send(server, client)
    return client, server


def _send(sender: TlsEngine, receiver: TlsEngine, *, bytewise: bool = False) -> None:
    data = sender.outgoing()
    if bytewise:
        for i in range(len(data)):
            receiver.receive(data[i : i + 1])
    else:
        receiver.receive(data)


def _read(engine: TlsEngine) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    ended = engine.read(chunks)
    return b"".join(chunks), ended


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_half_close_then_answer(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], version: ssl.TLSVersion, bytewise: bool
) -> None:
    client, server = _pair(contexts, version, bytewise=bytewise)
    client.write(b"request")
    assert client.shutdown([]) is False  # close_notify sent, the server has not ended
    _send(client, server, bytewise=bytewise)
    assert _read(server) == (b"request", True)
    assert server.read_end is ReadEnd.CLOSE_NOTIFY
    server.write(b"answer")  # still allowed after the client's close_notify
    server.shutdown([])
    _send(server, client, bytewise=bytewise)
    assert _read(client) == (b"answer", True)
    assert client.read_end is ReadEnd.CLOSE_NOTIFY
    with pytest.raises(ssl.SSLError):
        client.write(b"after close_notify")


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_shutdown_keeps_records_that_were_not_read(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], version: ssl.TLSVersion
) -> None:
    """Unwrapping with an application record in the incoming BIO would lose it (OpenSSL
    reads it while waiting for close_notify): the engine reads it out first."""
    client, server = _pair(contexts, version, bytewise=False)
    server.write(b"already here")
    _send(server, client)
    held: list[bytes] = []
    assert client.shutdown(held) is False
    assert held == [b"already here"]
    _send(client, server)
    assert _read(server) == (b"", True)
    server.write(b"and more")
    _send(server, client)
    assert _read(client) == (b"and more", False)


@pytest.mark.parametrize("version", VERSIONS, ids=lambda v: v.name)
def test_a_fin_without_close_notify_is_truncated_and_writing_goes_on(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], version: ssl.TLSVersion
) -> None:
    client, server = _pair(contexts, version, bytewise=False)
    client.write(b"cut")
    _send(client, server)
    held: list[bytes] = []
    assert server.receive_eof(held) is True
    assert (held, server.read_end) == ([b"cut"], ReadEnd.TRUNCATED)
    server.write(b"answer anyway")
    _send(server, client)
    assert _read(client) == (b"answer anyway", False)


def test_close_notify_then_fin_is_not_truncated(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """The close_notify sat unread (reading paused) when the FIN came: still a clean end."""
    client, server = _pair(contexts, ssl.TLSVersion.TLSv1_3, bytewise=False)
    client.write(b"last")
    client.shutdown([])
    _send(client, server)
    held: list[bytes] = []
    assert server.receive_eof(held) is True
    assert (held, server.read_end) == ([b"last"], ReadEnd.CLOSE_NOTIFY)


def test_garbage_after_the_handshake_raises(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    _, server = _pair(contexts, ssl.TLSVersion.TLSv1_3, bytewise=False)
    server.receive(b"\x17\x03\x03\x00\x05hello")
    with pytest.raises(ssl.SSLError):
        _read(server)


def test_a_fin_during_the_handshake_raises(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server = TlsEngine(contexts[0], server_side=True)
    server.receive_eof([])
    with pytest.raises(ssl.SSLEOFError):
        server.handshake()
