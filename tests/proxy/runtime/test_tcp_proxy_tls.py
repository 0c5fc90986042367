"""``tcp_proxy`` to a TLS upstream (``ISTIO_MUTUAL``-shaped): a client's half-close crosses as
``close_notify`` and the answer that follows arrives; a peer that fails verification counts
Envoy's ``ssl.*`` stat and the client's connection ends with nothing sent."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from proxy.transport.tls_engine import ReadEnd, TlsEngine
from proxy.transport.tls_transport import TlsTransport
from tests.proxy.runtime.bootstrap import bootstrap, cluster
from tests.proxy.runtime.conftest import StartProxy, listen_address
from tests.proxy.runtime.test_tcp_proxy import tcp_listener
from tests.proxy.runtime.test_upstream_tls import upstream_tls
from tests.support.mesh_pki import MeshPki, WorkloadCert
from tests.support.procs import free_port
from tests.support.waiting import wait_until

UPSTREAM = "127.0.62.40"
WAIT = 5.0


Ends = asyncio.Queue[tuple[ReadEnd | None, bytes]]
StartUpstream = Callable[[ssl.SSLContext], Awaitable[tuple[int, Ends]]]


class _AnswerAfterEof(asyncio.Protocol):
    """An upstream that answers once the request has ended, then ends its own side."""

    def __init__(self, ends: asyncio.Queue[tuple[ReadEnd | None, bytes]]) -> None:
        self.ends = ends
        self.transport: TlsTransport | None = None
        self.request = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, TlsTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.request += data

    def eof_received(self) -> bool:
        assert self.transport is not None
        self.ends.put_nowait((self.transport.read_end, self.request))
        self.transport.write(self.request[::-1])
        self.transport.write_eof()
        return True


@pytest.fixture
async def tls_upstream() -> AsyncIterator[StartUpstream]:
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []

    async def start(
        context: ssl.SSLContext,
    ) -> tuple[int, asyncio.Queue[tuple[ReadEnd | None, bytes]]]:
        ends: asyncio.Queue[tuple[ReadEnd | None, bytes]] = asyncio.Queue()
        port = free_port(UPSTREAM)

        def factory() -> TlsTransport:
            return TlsTransport(
                loop,
                TlsEngine(context, server_side=True),
                lambda _: _AnswerAfterEof(ends),
                handshake_timeout=WAIT,
            )

        servers.append(await loop.create_server(factory, UPSTREAM, port))
        return port, ends

    yield start
    for server in servers:
        server.close()


def _served(pki: MeshPki, case: str) -> WorkloadCert:
    if case == "wrong SPIFFE ID":
        return pki.workload("default", "impostor")
    if case == "another root":
        return MeshPki().workload("default", "server")
    return pki.workload("default", "server", ttl=600, at=time.time() - 3600)


async def test_a_half_close_crosses_upstream_tls(
    tmp_path: Path,
    tls_upstream: Callable[
        ..., asyncio.Future[tuple[int, asyncio.Queue[tuple[ReadEnd | None, bytes]]]]
    ],
    start_proxy: StartProxy,
) -> None:
    pki = MeshPki()
    port, ends = await tls_upstream(pki.server_context(pki.workload("default", "server")))
    socket = upstream_tls(pki.workload("default", "client"), tmp_path, pki.write_root(tmp_path))
    address = listen_address()
    proxy = await start_proxy(
        bootstrap(
            [tcp_listener(address, "db")],
            [cluster("db", [(UPSTREAM, port)], transport_socket=socket)],
        )
    )
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), WAIT)
    request = b"0123456789" * 50_000
    writer.write(request)
    writer.write_eof()
    assert await asyncio.wait_for(ends.get(), WAIT) == (ReadEnd.CLOSE_NOTIFY, request)
    assert await asyncio.wait_for(reader.read(), WAIT) == request[::-1]
    writer.close()
    await wait_until(
        lambda: proxy.stat("cluster.db.upstream_cx_active") == 0, "the upstream side closed"
    )
    assert proxy.stat("cluster.db.ssl.handshake") == 1


@pytest.mark.parametrize(
    ("case", "stat"),
    [
        ("wrong SPIFFE ID", "fail_verify_san"),
        ("another root", "fail_verify_error"),
        ("expired", "fail_verify_error"),
    ],
)
async def test_a_server_that_fails_verification_ends_the_client_connection(
    case: str,
    stat: str,
    tmp_path: Path,
    tls_upstream: Callable[
        ..., asyncio.Future[tuple[int, asyncio.Queue[tuple[ReadEnd | None, bytes]]]]
    ],
    start_proxy: StartProxy,
) -> None:
    pki = MeshPki()
    port, ends = await tls_upstream(pki.server_context(_served(pki, case)))
    socket = upstream_tls(pki.workload("default", "client"), tmp_path, pki.write_root(tmp_path))
    address = listen_address()
    proxy = await start_proxy(
        bootstrap(
            [tcp_listener(address, "db")],
            [cluster("db", [(UPSTREAM, port)], transport_socket=socket)],
        )
    )
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), WAIT)
    writer.write(b"secret")
    try:
        answer = await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        answer = b""  # closed with the client's bytes unread: a reset, as from Envoy
    writer.close()
    assert answer == b""
    while not ends.empty():  # a refused SAN is refused after the server's handshake
        assert ends.get_nowait()[1] == b""  # no byte of the client's went there
    assert proxy.stat(f"cluster.db.ssl.{stat}") == 1
    assert proxy.stat("cluster.db.ssl.handshake") == 0
    assert proxy.stat("cluster.db.upstream_cx_connect_fail") == 1
