"""``envoy.filters.network.tcp_proxy``: bytes both ways, half-close, a dead upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.proxy.runtime.bootstrap import bootstrap, cluster, sa
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support.procs import free_port

TCP_PROXY = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def tcp_listener(address: tuple[str, int], cluster_name: str) -> dict[str, Any]:
    return {
        "name": "tcp",
        "address": sa(*address),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {
                            "@type": TCP_PROXY,
                            "stat_prefix": "tcp",
                            "cluster": cluster_name,
                        },
                    }
                ]
            }
        ],
    }


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    """Echoes everything, upper-cased, and closes after the client's FIN."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    host = upstream_ip(3)
    server = await asyncio.start_server(handle, host, free_port(host))
    yield host, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_bytes_flow_both_ways_through_a_half_close(
    echo_server: tuple[str, int], start_proxy: StartProxy
) -> None:
    address = listen_address()
    await start_proxy(bootstrap([tcp_listener(address, "db")], [cluster("db", [echo_server])]))
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
    payload = b"select 1;\n" * 10_000
    writer.write(payload)
    writer.write_eof()
    echoed = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert echoed == payload.upper()


async def test_a_dead_upstream_closes_the_client_connection(start_proxy: StartProxy) -> None:
    address = listen_address()
    dead = (upstream_ip(4), free_port(upstream_ip(4)))
    await start_proxy(bootstrap([tcp_listener(address, "db")], [cluster("db", [dead])]))
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
