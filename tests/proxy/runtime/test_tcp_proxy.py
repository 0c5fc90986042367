"""``envoy.filters.network.tcp_proxy``: bytes both ways, half-close, a dead upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pymesh.errors import ValidationError
from tests.proxy.runtime.bootstrap import bootstrap, cluster, sa
from tests.proxy.runtime.conftest import StartProxy, listen_address, upstream_ip
from tests.support import H2_NET
from tests.support.procs import free_port
from tests.support.waiting import wait_until

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


async def test_a_connection_half_closed_both_ways_is_closed(start_proxy: StartProxy) -> None:
    """The upstream answers and half-closes, then the client half-closes: both directions
    have ended, so the proxy closes both sockets rather than waiting for the idle timeout."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        writer.write_eof()
        await reader.read()  # until the client's FIN comes through the proxy
        upstream_closed.set()

    upstream_closed = asyncio.Event()
    host = upstream_ip(5)
    server = await asyncio.start_server(answer, host, free_port(host))
    address = listen_address()
    upstream = (host, server.sockets[0].getsockname()[1])
    proxy = await start_proxy(bootstrap([tcp_listener(address, "db")], [cluster("db", [upstream])]))
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b"bye"
    writer.write_eof()
    await asyncio.wait_for(upstream_closed.wait(), 5)
    await wait_until(
        lambda: proxy.stat("cluster.db.upstream_cx_active") == 0, "the upstream side closed"
    )
    writer.close()
    server.close()
    await server.wait_closed()


async def test_a_dead_upstream_closes_the_client_connection(start_proxy: StartProxy) -> None:
    address = listen_address()
    dead = (upstream_ip(4), free_port(upstream_ip(4)))
    await start_proxy(bootstrap([tcp_listener(address, "db")], [cluster("db", [dead])]))
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


# -- Istio's TCP traffic shifting, timeouts and stats (127.0.10.0/24) --------------------------

H2 = H2_NET


def shifting_listener(
    address: tuple[str, int], weights: dict[str, int], **extra: Any
) -> dict[str, Any]:
    config = {
        "@type": TCP_PROXY,
        "stat_prefix": "shift",
        "weighted_clusters": {"clusters": [{"name": n, "weight": w} for n, w in weights.items()]},
        **extra,
    }
    return {
        "name": "tcp",
        "address": sa(*address),
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": config}]}
        ],
    }


@pytest.fixture
async def tagged_servers() -> AsyncIterator[dict[str, tuple[str, int]]]:
    """Two echo servers that prefix what they echo with their name, like tcp-echo v1/v2."""
    servers = []
    addresses = {}
    for index, tag in enumerate(("one", "two")):

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tag: str = tag
        ) -> None:
            line = await reader.readline()
            writer.write(tag.encode() + b" " + line)
            await writer.drain()
            writer.close()

        host = f"{H2}.{10 + index}"
        server = await asyncio.start_server(handle, host, free_port(host))
        servers.append(server)
        addresses[tag] = (host, server.sockets[0].getsockname()[1])
    yield addresses
    for server in servers:
        server.close()
        await server.wait_closed()


async def _ask(address: tuple[str, int]) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
    writer.write(b"hello\n")
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_weighted_clusters_shift_connections(
    tagged_servers: dict[str, tuple[str, int]], start_proxy: StartProxy
) -> None:
    address = listen_address(f"{H2}.1")
    clusters = [cluster(tag, [addr]) for tag, addr in tagged_servers.items()]
    proxy = await start_proxy(
        bootstrap([shifting_listener(address, {"one": 80, "two": 20})], clusters)
    )
    answers = [await _ask(address) for _ in range(60)]
    assert set(answers) == {b"one hello\n", b"two hello\n"}
    share = answers.count(b"one hello\n") / len(answers)
    assert 0.55 < share < 0.97  # 80 % expected; wide bounds, the pick is random
    assert proxy.stat("tcp.shift.downstream_cx_total") == 60
    assert proxy.stat("tcp.shift.downstream_cx_rx_bytes_total") == 60 * len(b"hello\n")
    sent = sum(len(a) for a in answers)
    assert proxy.stat("tcp.shift.downstream_cx_tx_bytes_total") == sent
    assert (
        proxy.stat("cluster.one.upstream_cx_total") + proxy.stat("cluster.two.upstream_cx_total")
        == 60
    )


async def test_all_weight_on_one_cluster(
    tagged_servers: dict[str, tuple[str, int]], start_proxy: StartProxy
) -> None:
    # Istio leaves a 0 % destination out of the list (Envoy refuses a weight of 0).
    address = listen_address(f"{H2}.1")
    clusters = [cluster(tag, [addr]) for tag, addr in tagged_servers.items()]
    await start_proxy(bootstrap([shifting_listener(address, {"two": 100})], clusters))
    assert {await _ask(address) for _ in range(10)} == {b"two hello\n"}


async def test_zero_weight_is_refused_as_envoy_does(start_proxy: StartProxy) -> None:
    address = listen_address(f"{H2}.1")
    with pytest.raises(ValidationError) as caught:
        await start_proxy(bootstrap([shifting_listener(address, {"one": 0, "two": 1})], []))
    assert str(caught.value.path).endswith("weighted_clusters.clusters[0].weight")


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[str, int]]:
    """Accepts, reads, never answers; closes when the peer does."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    host = f"{H2}.12"
    server = await asyncio.start_server(handle, host, free_port(host))
    yield host, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_idle_timeout_closes_a_quiet_connection(
    silent_server: tuple[str, int], start_proxy: StartProxy
) -> None:
    address = listen_address(f"{H2}.1")
    proxy = await start_proxy(
        bootstrap(
            [shifting_listener(address, {"db": 1}, idle_timeout="2s")],
            [cluster("db", [silent_server])],
        )
    )
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
    for i in range(3):
        if i:
            await asyncio.sleep(0.05)
        writer.write(b"ping\n")
        await writer.drain()
    # Taken right after the last write: the proxy reads that byte later, never earlier, so
    # its timer fires at least 2 s from here however late this task is scheduled.
    last_write = loop.time()
    assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    # Closed by the timer, counted from the last byte, not from the connection's start.
    assert loop.time() - last_write >= 1.9
    assert proxy.stat("tcp.shift.idle_timeout") == 1


async def test_max_downstream_connection_duration(
    silent_server: tuple[str, int], start_proxy: StartProxy
) -> None:
    address = listen_address(f"{H2}.1")
    proxy = await start_proxy(
        bootstrap(
            [shifting_listener(address, {"db": 1}, max_downstream_connection_duration="0.2s")],
            [cluster("db", [silent_server])],
        )
    )
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
    writer.write(b"x")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert proxy.stat("tcp.shift.max_downstream_connection_duration") == 1


async def test_connect_attempts_exhausted(start_proxy: StartProxy) -> None:
    address = listen_address(f"{H2}.1")
    dead = (f"{H2}.13", free_port(f"{H2}.13"))
    proxy = await start_proxy(
        bootstrap(
            [shifting_listener(address, {"db": 1}, max_connect_attempts=3)],
            [cluster("db", [dead])],
        )
    )
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert proxy.stat("cluster.db.upstream_cx_connect_fail") == 3
    assert proxy.stat("tcp.shift.upstream_cx_connect_attempts_exceeded") == 1


async def test_unknown_cluster_counts_no_route(start_proxy: StartProxy) -> None:
    address = listen_address(f"{H2}.1")
    proxy = await start_proxy(bootstrap([shifting_listener(address, {"db": 1})], []))
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert proxy.stat("tcp.shift.downstream_cx_no_route") == 1
