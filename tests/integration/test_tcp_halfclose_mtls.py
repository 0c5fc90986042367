"""A TCP half-close across mesh mTLS, sidecar to sidecar: client → sidecar A (outbound
``tcp_proxy``, ``ISTIO_MUTUAL``) → sidecar B (TLS inspector, mTLS chain, ``tcp_proxy``) → app.

The transport sockets are pilot's own (``istio_mutual``, ``inbound_mtls``) with the workload
certificate and root from files instead of the agent's SDS. Every pairing of Envoy 1.40 and
pymesh must give the verdicts the Envoy pair gives: the half-close crosses both sidecars as
``close_notify``, the answer that follows it arrives whole, then its end, and neither sidecar
keeps the connection afterwards.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pilot.generate.common import tcp_proxy
from pilot.generate.tls import inbound_mtls, istio_mutual
from tests.integration.mtls_harness import admin_stats
from tests.proxy.runtime.bootstrap import cluster, sa
from tests.support.envoy import ProxyProcess, make_proxy
from tests.support.mesh_pki import MeshPki
from tests.support.procs import free_port

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(240)]

A_IP = "127.0.62.10"  # the client's sidecar
B_IP = "127.0.62.11"  # the server's sidecar
APP_IP = "127.0.62.12"
SERVER_ID = "spiffe://cluster.local/ns/foo/sa/tcp-echo"
SNI = "outbound_.9000_._.tcp-echo.foo.svc.cluster.local"
OUTBOUND = "outbound|9000||tcp-echo.foo.svc.cluster.local"
INBOUND = "inbound|9000||"
WAIT = 10.0
ANSWER_SIZE = 512 * 1024  # more than one TLS record and more than a socket buffer


def _with_files(socket: dict[str, Any], cert: Path, key: Path, root: Path) -> dict[str, Any]:
    """Pilot's transport socket with the agent's SDS secrets replaced by files."""
    socket = copy.deepcopy(socket)
    common = socket["typed_config"]["common_tls_context"]
    del common["tls_certificate_sds_secret_configs"]
    common["tls_certificates"] = [
        {"certificate_chain": {"filename": str(cert)}, "private_key": {"filename": str(key)}}
    ]
    validation = common.pop("combined_validation_context")["default_validation_context"]
    common["validation_context"] = {**validation, "trusted_ca": {"filename": str(root)}}
    return socket


def sidecar_a(pki: MeshPki, tmp: Path, root: Path, listen: int, b_port: int) -> dict[str, Any]:
    cert, key = pki.workload("foo", "sleep").write(tmp, "sleep")
    socket = _with_files(istio_mutual(SNI, [SERVER_ID]), cert, key, root)
    return {
        "admin": {"address": sa(A_IP, free_port(A_IP))},
        "static_resources": {
            "listeners": [
                {
                    "name": "outbound_9000",
                    "address": sa(A_IP, listen),
                    "filter_chains": [{"filters": [tcp_proxy(OUTBOUND)]}],
                }
            ],
            "clusters": [cluster(OUTBOUND, [(B_IP, b_port)], transport_socket=socket)],
        },
    }


def sidecar_b(
    pki: MeshPki, tmp: Path, root: Path, listen: int, app: tuple[str, int]
) -> dict[str, Any]:
    cert, key = pki.workload("foo", "tcp-echo").write(tmp, "tcp-echo")
    socket = _with_files(inbound_mtls(http=False), cert, key, root)
    return {
        "admin": {"address": sa(B_IP, free_port(B_IP))},
        "static_resources": {
            "listeners": [
                {
                    "name": "virtualInbound",
                    "address": sa(B_IP, listen),
                    "listener_filters": [
                        {
                            "name": "envoy.filters.listener.tls_inspector",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters."
                                "listener.tls_inspector.v3.TlsInspector"
                            },
                        }
                    ],
                    "filter_chains": [
                        {
                            "filter_chain_match": {"transport_protocol": "tls"},
                            "filters": [tcp_proxy(INBOUND)],
                            "transport_socket": socket,
                        }
                    ],
                }
            ],
            "clusters": [cluster(INBOUND, [app])],
        },
    }


@dataclass
class App:
    """The workload behind sidecar B: what it read, and whether it saw the client's end."""

    address: tuple[str, int]
    received: asyncio.Queue[tuple[bytes, bool]]


async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """tcp-echo with a request/response protocol: reads to the end, then answers, closes."""
    request = await reader.read()
    writer.write(request.upper() * (ANSWER_SIZE // max(1, len(request))))
    await writer.drain()
    return request


async def greet_and_half_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """Speaks first and ends its side at once, then still reads the client to its end."""
    writer.write(b"220 ready\r\n")
    writer.write_eof()
    await writer.drain()
    return await reader.read()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bytes]]


@pytest.fixture
async def app_server() -> AsyncIterator[Callable[[Handler], Awaitable[App]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> App:
        app = App((APP_IP, free_port(APP_IP)), asyncio.Queue())

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                request = await asyncio.wait_for(handler(reader, writer), WAIT)
                app.received.put_nowait((request, reader.at_eof()))
            finally:
                writer.close()

        servers.append(await asyncio.start_server(handle, *app.address))
        return app

    yield start
    for server in servers:
        server.close()


async def _stats(a: ProxyProcess, b: ProxyProcess) -> list[dict[str, int]]:
    return await asyncio.gather(*(asyncio.to_thread(admin_stats, p, "") for p in (a, b)))


async def _connections_over(a: ProxyProcess, b: ProxyProcess) -> bool:
    """Both sidecars opened their upstream connection and hold it no longer."""
    deadline = time.monotonic() + WAIT
    while True:
        sa_, sb = (
            await asyncio.to_thread(admin_stats, a, ""),
            await asyncio.to_thread(admin_stats, b, ""),
        )
        opened = (
            sa_.get(f"cluster.{OUTBOUND}.upstream_cx_total", 0) >= 1
            and sb.get(f"cluster.{INBOUND}.upstream_cx_total", 0) >= 1
        )
        active = (
            sa_.get(f"cluster.{OUTBOUND}.upstream_cx_active", 0),
            sb.get(f"cluster.{INBOUND}.upstream_cx_active", 0),
        )
        if opened and active == (0, 0):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)  # polling another process's admin page: no event to await


@dataclass(frozen=True)
class Verdict:
    answer_whole: bool  # what the client read before EOF
    client_saw_eof: bool
    app_got_request_and_eof: bool
    sidecars_closed: bool
    handshakes: tuple[int, int]  # ssl.handshake on A's cluster, B's listener


async def _run(
    kinds: tuple[str, str],
    handler: Handler,
    start_app: Callable[[Handler], Awaitable[App]],
    tmp: Path,
) -> Verdict:
    tmp.mkdir()
    pki = MeshPki()
    root = pki.write_root(tmp)
    app = await start_app(handler)
    a_port, b_port = free_port(A_IP), free_port(B_IP)
    b = make_proxy(
        kinds[1], sidecar_b(pki, tmp, root, b_port, app.address), workdir=tmp / "b", name="b"
    )
    a = make_proxy(kinds[0], sidecar_a(pki, tmp, root, a_port, b_port), workdir=tmp / "a", name="a")
    await b.astart()
    try:
        await a.astart()
        try:
            return await _exchange(a, b, a_port, app, handler)
        finally:
            await a.astop()
    finally:
        await b.astop()


async def _exchange(
    a: ProxyProcess, b: ProxyProcess, port: int, app: App, handler: Handler
) -> Verdict:
    answer_whole = client_saw_eof = app_ok = False
    reader, writer = await asyncio.wait_for(asyncio.open_connection(A_IP, port), WAIT)
    try:
        if handler is greet_and_half_close:
            greeting = await asyncio.wait_for(reader.read(), WAIT)  # then the server's end
            answer_whole = greeting == b"220 ready\r\n"
            request = b"QUIT\r\n"
            writer.write(request)
            writer.write_eof()
            # The client's end travels on; A closes once both directions are over.
            client_saw_eof = await asyncio.wait_for(reader.read(), WAIT) == b""
        else:
            request = b"hello "
            writer.write(request)
            writer.write_eof()  # nc -N
            answer = await asyncio.wait_for(reader.read(), WAIT)
            answer_whole = answer == request.upper() * (ANSWER_SIZE // len(request))
            client_saw_eof = reader.at_eof()
        got, app_saw_eof = await asyncio.wait_for(app.received.get(), WAIT)
        app_ok = got == request and app_saw_eof
    except TimeoutError:
        pass  # the verdict says what did not happen
    finally:
        writer.close()
    over = await _connections_over(a, b)
    sa_, sb = (
        await asyncio.to_thread(admin_stats, a, ""),
        await asyncio.to_thread(admin_stats, b, ""),
    )
    handshakes_b = sum(
        v for k, v in sb.items() if k.startswith("listener.") and k.endswith(".ssl.handshake")
    )
    return Verdict(
        answer_whole=answer_whole,
        client_saw_eof=client_saw_eof,
        app_got_request_and_eof=app_ok,
        sidecars_closed=over,
        handshakes=(sa_.get(f"cluster.{OUTBOUND}.ssl.handshake", 0), handshakes_b),
    )


CASES: list[tuple[str, Handler]] = [
    ("answer-after-eof", answer_after_eof),
    ("server-half-closes-first", greet_and_half_close),
]
PAIRS = [("pymesh", "pymesh"), ("envoy", "pymesh"), ("pymesh", "envoy")]
EXPECTED = Verdict(True, True, True, True, (1, 1))


@pytest.mark.parametrize("case", [c for c, _ in CASES])
async def test_half_close_crosses_mtls_as_between_envoys(
    case: str, app_server: Callable[[Handler], Awaitable[App]], tmp_path: Path
) -> None:
    handler = dict(CASES)[case]
    reference = await _run(("envoy", "envoy"), handler, app_server, tmp_path / "envoy-envoy")
    assert reference == EXPECTED, reference  # what the table below is held to
    verdicts = {
        f"{a}-to-{b}": await _run((a, b), handler, app_server, tmp_path / f"{a}-{b}")
        for a, b in PAIRS
    }
    assert verdicts == dict.fromkeys(verdicts, reference), verdicts
