"""Protocol sniffing on a port that names no protocol, end to end: a client pod's sidecar and a
server pod's sidecar configured by pilot (see :mod:`tests.integration.sniffing_harness`), run
as the real Envoy 1.40 and as ``pymesh proxy`` with the same table of verdicts.

- HTTP/1.1 and HTTP/2 prior knowledge are served as HTTP: the VirtualService's header match
  and retries apply, ``x-envoy-upstream-service-time`` comes back, the connection managers'
  stats count the request;
- anything else passes as TCP: a line is echoed by the app;
- a server-first protocol (the client sends nothing) gets its banner once the detection
  timeout has passed; without a timeout (Istio's default) the sidecar waits for the client;
- a client that sends one byte and waits is TCP after the timeout: the rest of its request
  reaches the app untouched;
- over mesh mTLS between pymesh sidecars, HTTP reaches the server sidecar's connection
  manager (the app sees ``X-Forwarded-Client-Cert``). An Envoy client sidecar offers ALPN
  ``istio`` (Envoy has no ``istio.alpn`` filter), so the server's TCP chain carries its HTTP
  as bytes: the request works, without XFCC.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.mtls_harness import admin_stats
from tests.integration.pilot_harness import start_proxy
from tests.integration.sniffing_harness import (
    BANNER,
    Ports,
    SniffApp,
    build_sniffing_mesh,
    sidecar_bootstrap,
)
from tests.support.envoy import ProxyProcess
from tests.support.h2client import H2Client
from tests.support.httpclient import AsyncConnection, Response
from tests.support.mesh_pki import MeshPki
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.envoy, pytest.mark.xdist_group("sniffing"), pytest.mark.timeout(120)]

SUBNET = "127.0.63"
CLIENT = f"{SUBNET}.2"
DETECTION = 0.5


@dataclass
class Pair:
    kind: str
    mtls: bool
    ports: Ports
    app: SniffApp
    client: ProxyProcess
    server: ProxyProcess
    workdir: Path

    async def get(self, path: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        async with await AsyncConnection.open(CLIENT, self.ports.echo, timeout=10) as conn:
            return await conn.request("GET", path, list(headers), host=self.host, timeout=10)

    def access_log(self) -> list[dict[str, Any]]:
        """The client sidecar's access log entries so far."""
        path = self.workdir / "client-access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines]

    @property
    def host(self) -> str:
        return f"echo:{self.ports.echo}"

    @property
    def http_stat(self) -> str:
        return f"http.outbound_0.0.0.0_{self.ports.echo}.downstream_rq_total"

    @property
    def tcp_stat(self) -> str:
        cluster = f"outbound|{self.ports.echo}||echo.default.svc.cluster.local"
        return f"tcp.{cluster}.downstream_cx_total"


async def _start(
    kind: str, mtls: bool, detection: float, ports: Ports, workdir: Path
) -> tuple[ProxyProcess, ProxyProcess]:
    mesh = build_sniffing_mesh(SUBNET, ports, mtls=mtls, detection=detection)
    pki = MeshPki() if mtls else None
    outbound = {f"0.0.0.0_{p}": [p] for p in (ports.echo, ports.banner)}
    client = sidecar_bootstrap(mesh, "client", outbound, pki, workdir / "client-access.log")
    inbound = {"virtualInbound": [ports.echo_app, ports.banner_app]}
    server = sidecar_bootstrap(mesh, "server", inbound, pki)
    started = []
    try:
        for name, bootstrap in (("server", server), ("client", client)):
            started.append(await start_proxy(kind, bootstrap, workdir / name, f"{kind}-{name}"))
    except BaseException:
        for proxy in started:
            await proxy.astop()
        raise
    return started[1], started[0]


@asynccontextmanager
async def _pair(kind: str, mtls: bool, detection: float, workdir: Path) -> AsyncIterator[Pair]:
    ports = Ports.allocate()
    async with SniffApp(ports) as app:
        client, server = await _start(kind, mtls, detection, ports, workdir)
        try:
            yield Pair(kind, mtls, ports, app, client, server, workdir)
        finally:
            await client.astop()
            await server.astop()


@pytest.fixture(
    params=[("envoy", False), ("pymesh", False), ("envoy", True), ("pymesh", True)],
    ids=["envoy-plaintext", "pymesh-plaintext", "envoy-mtls", "pymesh-mtls"],
)
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    kind, mtls = request.param
    async with _pair(kind, mtls, DETECTION, tmp_path) as started:
        yield started


def _seen(resp: Response) -> dict[str, str]:
    headers: dict[str, str] = json.loads(resp.body)["headers"]
    return headers


async def test_http_gets_the_virtual_service(pair: Pair) -> None:
    resp = await pair.get("/hello")
    assert resp.status == 200, resp.body
    assert resp.header("x-envoy-upstream-service-time") is not None
    seen = _seen(resp)
    assert "x-request-id" in seen  # added by the client sidecar's connection manager
    # Over mTLS the server sidecar's connection manager adds XFCC when it serves the
    # connection as HTTP: a pymesh client offers istio-http/1.1; an Envoy client offers
    # istio and lands on the TCP chain.
    xfcc = seen.get("x-forwarded-client-cert", "")
    if pair.mtls and pair.kind == "pymesh":
        assert "URI=spiffe://cluster.local/ns/default/sa/client" in xfcc
    else:
        assert xfcc == ""
    teapot = await pair.get("/hello", (("x-teapot", "yes"),))
    assert teapot.status == 418
    flaky = await pair.get("/flaky")
    assert flaky.status == 200, "the 503 of the first attempt is retried"
    assert admin_stats(pair.client, pair.http_stat) == {pair.http_stat: 3}
    await wait_until(lambda: len(pair.access_log()) == 3, "3 access log entries")
    assert [(e["protocol"], e["path"]) for e in pair.access_log()] == [
        ("HTTP/1.1", "/hello"),
        ("HTTP/1.1", "/hello"),
        ("HTTP/1.1", "/flaky"),
    ]


async def test_http2_prior_knowledge_is_detected_as_h2c(pair: Pair) -> None:
    async with await H2Client.open(CLIENT, pair.ports.echo, timeout=10) as h2:
        reply = await h2.request("GET", "/h2", authority=pair.host, timeout=10)
        teapot = await h2.request(
            "GET", "/h2", authority=pair.host, headers=[("x-teapot", "yes")], timeout=10
        )
    assert reply.status == 200
    assert reply.header("x-envoy-upstream-service-time") is not None
    assert teapot.status == 418


async def test_other_bytes_pass_as_tcp(pair: Pair) -> None:
    reader, writer = await asyncio.open_connection(CLIENT, pair.ports.echo)
    try:
        for line in (b"hello sniffing\n", b"*1\r\n"):
            writer.write(line)
            assert await asyncio.wait_for(reader.readline(), 10) == line
    finally:
        writer.close()
    assert admin_stats(pair.client, pair.tcp_stat) == {pair.tcp_stat: 1}
    # (pymesh writes TCP proxy access logs to gRPC sinks only, so the file log is not
    # compared here; the stats tell the chains apart.)
    assert not admin_stats(pair.client, pair.http_stat).get(pair.http_stat)


async def test_server_first_protocol_gets_its_banner_after_the_detection_timeout(
    pair: Pair,
) -> None:
    reader, writer = await asyncio.open_connection(CLIENT, pair.ports.banner)
    try:
        assert await asyncio.wait_for(reader.readline(), 15) == BANNER
        writer.write(b"QUIT\n")
        assert await asyncio.wait_for(reader.readline(), 10) == b"QUIT\n"
    finally:
        writer.close()


async def test_a_client_that_pauses_after_one_byte_is_tcp(pair: Pair) -> None:
    reader, writer = await asyncio.open_connection(CLIENT, pair.ports.echo)
    try:
        writer.write(b"G")
        # The app is dialled only once every sidecar on the way has chosen its TCP chain.
        await asyncio.wait_for(pair.app.connected.wait(), 15)
        writer.write(f"ET /slow HTTP/1.1\r\nHost: {pair.host}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"x-envoy-upstream-service-time" not in head.lower()
    assert "x-request-id" not in json.loads(body)["headers"]


@pytest.mark.parametrize("kind", ["envoy", "pymesh"])
async def test_without_a_detection_timeout_the_sidecar_waits_for_the_client(
    kind: str, tmp_path: Path
) -> None:
    """Istio's default (protocolDetectionTimeout 0s): a server-first protocol on an unnamed
    port hears nothing until its client speaks, which is why Istio asks to name them."""
    async with _pair(kind, False, 0.0, tmp_path) as started:
        reader, writer = await asyncio.open_connection(CLIENT, started.ports.banner)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readline(), 2.0)
            assert started.app.accepted == 0
            writer.write(b"hi\n")
            assert await asyncio.wait_for(reader.readline(), 10) == BANNER
            assert await asyncio.wait_for(reader.readline(), 10) == b"hi\n"
        finally:
            writer.close()
