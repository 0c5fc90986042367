"""A proxy built from a bootstrap dict, with a fake clock, fake transports and a fake connector.

``Harness(config)`` compiles the bootstrap exactly as ``pymesh proxy`` does
(:meth:`ProxyServer.prepare`), but binds nothing: :meth:`Harness.client` gives a downstream
connection on a :class:`FakeTransport`, and upstream connects wait in
:attr:`Harness.connector` until the test completes them.
"""

from __future__ import annotations

import random
from typing import Any

import h11

from proxy.config.bootstrap import bootstrap_from_dict
from proxy.config.translate import FilterRegistry
from proxy.http.connection_manager import DownstreamConnection
from proxy.http.hcm import HcmRuntime
from proxy.server import ProxyServer
from tests.proxy.fakes import FakeClock, FakeConnector, FakeTransport
from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost

__all__ = ["Client", "Harness", "Reply", "one_route", "parse_request", "parse_response"]

UPSTREAM = ("127.0.1.10", 8000)


def one_route(*, http_filters: list[dict[str, Any]] | None = None, **action: Any) -> dict:
    vh = vhost([route("/", name="default", **action)])
    return bootstrap(
        [listener(("127.0.1.1", 8080), hcm([vh], http_filters=http_filters or []))],
        [cluster("backend", [UPSTREAM])],
    )


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def parse_response(data: bytes, method: bytes = b"GET") -> Reply:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
    conn.receive_data(data)
    head = conn.next_event()
    assert isinstance(head, h11.Response), head
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        else:
            break
    headers = {k.decode(): v.decode() for k, v in head.headers}
    return Reply(head.status_code, headers, body)


def parse_request(data: bytes) -> tuple[bytes, dict[str, str], bytes]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    head = conn.next_event()
    assert isinstance(head, h11.Request), head
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
        else:
            break
    return head.target, {k.decode(): v.decode() for k, v in head.headers}, body


class Client:
    def __init__(self, conn: DownstreamConnection, transport: FakeTransport) -> None:
        self.conn = conn
        self.transport = transport

    def send(self, data: bytes) -> None:
        self.conn.data_received(data)

    def reply(self) -> Reply:
        return parse_response(self.transport.take())


class Harness:
    def __init__(
        self, config: dict[str, Any], *, registry: FilterRegistry | None = None, seed: int = 1
    ) -> None:
        self.clock = FakeClock()
        self.connector = FakeConnector()
        boot = bootstrap_from_dict(config, registry=registry)
        self.server = ProxyServer(
            boot,
            loop=self.clock,  # type: ignore[arg-type]
            registry=registry,
            rng=random.Random(seed),
            connector=self.connector,
        )
        runtimes = self.server.prepare(self.server.holder.current)
        chain = runtimes["main"].chains[0]
        assert chain.hcm is not None
        self.hcm: HcmRuntime = chain.hcm

    def client(self, peer: tuple[str, int] = ("127.0.1.100", 40000)) -> Client:
        conn = DownstreamConnection(self.hcm, self.clock, connection_id=1)  # type: ignore[arg-type]
        transport = FakeTransport(peer=peer)
        conn.connection_made(transport)  # type: ignore[arg-type]
        return Client(conn, transport)

    def upstream(self, index: int = 0) -> tuple[Any, FakeTransport]:
        """Complete a pending upstream connect."""
        return self.connector.complete(index)

    def stat(self, name: str) -> int:
        for s in (*self.server.stats.counters(), *self.server.stats.gauges()):
            if s.name == name:
                return int(s.value)
        return 0
