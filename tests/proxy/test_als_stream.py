"""The proxy's access-log stream against a real gRPC Access Log Service on loopback: batching
by size and by time, the proxy named first on every stream, a bounded buffer while the
service is away (the rest dropped and counted), and a new stream once it is back."""

from __future__ import annotations

import asyncio
import random

from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2

from proxy.als.entry import identifier, node_proto
from proxy.als.stream import AlsStream, StreamSettings
from proxy.config.model import Node
from proxy.stats import StatsStore
from tests.proxy.als_recorder import Recorder, als_server
from tests.support.procs import free_port
from tests.support.waiting import wait_until

HOST = "127.0.0.220"


def _entry(path: str) -> bytes:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.request.path = path
    return entry.SerializeToString()


def _stream(port: int | None, stats: StatsStore, **settings: float) -> AlsStream:
    node = node_proto(Node(id="sidecar~1.2.3.4~a.ns~ns.svc.cluster.local", cluster="a.ns"))
    first = als_pb2.StreamAccessLogsMessage(identifier=identifier(node, "outbound"))
    return AlsStream(
        identifier=first.SerializeToString(),
        pick=lambda: None if port is None else f"{HOST}:{port}",
        tcp=False,
        loop=asyncio.get_running_loop(),
        stats=stats,
        settings=StreamSettings(**settings),  # type: ignore[arg-type]
        rng=random.Random(1),
    )


def _count(stats: StatsStore, name: str) -> int:
    return stats.counter(f"access_logs.grpc_access_log.{name}").value


async def test_batches_by_size_and_names_the_proxy_first() -> None:
    recorder, stats, port = Recorder(), StatsStore(), free_port(HOST)
    async with als_server(HOST, port, recorder):
        # each entry is ~8 bytes: a 20-byte buffer sends every third entry's batch at once
        stream = _stream(port, stats, buffer_size_bytes=20, buffer_flush_interval=60.0)
        for i in range(9):
            stream.log(_entry(f"/r{i}"))
        await wait_until(lambda: len(recorder.entries()) == 9, "nine entries received")
        await stream.close()
    assert _count(stats, "logs_written") == 9
    [messages] = recorder.streams
    assert [len(m.http_logs.log_entry) for m in messages] == [3, 3, 3]
    assert messages[0].identifier.log_name == "outbound"
    assert messages[0].identifier.node.id == "sidecar~1.2.3.4~a.ns~ns.svc.cluster.local"
    assert not any(m.HasField("identifier") for m in messages[1:])
    assert recorder.entries() == [f"/r{i}" for i in range(9)]


async def test_a_partial_batch_goes_after_the_flush_interval() -> None:
    recorder, stats, port = Recorder(), StatsStore(), free_port(HOST)
    async with als_server(HOST, port, recorder):
        stream = _stream(port, stats, buffer_flush_interval=0.05)
        stream.log(_entry("/one"))
        assert _count(stats, "logs_written") == 0  # below 16 KiB: held for the interval
        await wait_until(lambda: recorder.entries() == ["/one"], "the entry after 50 ms")
        await stream.close()


async def test_buffers_a_bounded_amount_while_the_service_is_away_then_reconnects() -> None:
    recorder, stats, port = Recorder(), StatsStore(), free_port(HOST)
    # one entry per batch; each batch is 11 bytes on the wire: 5 fit in 60 bytes
    stream = _stream(
        port, stats, buffer_size_bytes=1, max_pending_bytes=60, backoff_base=0.05, backoff_max=0.2
    )
    for i in range(8):
        stream.log(_entry(f"/a{i}"))
    assert _count(stats, "logs_dropped") == 3
    await asyncio.sleep(0)  # the writer's first attempt fails: nothing listens yet
    async with als_server(HOST, port, recorder):
        await wait_until(lambda: _count(stats, "logs_written") >= 1, "a write after reconnecting")
        for i in range(2):
            stream.log(_entry(f"/b{i}"))
        await wait_until(lambda: "/b1" in recorder.entries(), "the entries kept")
        await stream.close()
    kept = recorder.entries()
    # A long outage keeps the newest half of the budget; at most the oldest were dropped.
    assert kept[-2:] == ["/b0", "/b1"]
    assert set(kept[:-2]) <= {f"/a{i}" for i in range(5)}
    assert _count(stats, "logs_written") + _count(stats, "logs_dropped") == 10
    assert all(s[0].HasField("identifier") for s in recorder.streams if s)


async def test_a_restarted_service_gets_a_new_stream_that_names_the_proxy_again() -> None:
    stats, port = StatsStore(), free_port(HOST)
    stream = _stream(port, stats, buffer_size_bytes=1, backoff_base=0.05, backoff_max=0.2)
    first = Recorder()
    async with als_server(HOST, port, first):
        stream.log(_entry("/before"))
        await wait_until(lambda: first.entries() == ["/before"], "the first entry")
    second = Recorder()
    async with als_server(HOST, port, second):

        def delivered() -> bool:
            if "/after" in second.entries():
                return True
            stream.log(_entry("/after"))  # a write may go to the dead stream: try again
            return False

        await wait_until(delivered, "an entry on the new stream", timeout=20.0)
        await stream.close()
    assert second.streams[0][0].identifier.log_name == "outbound"


async def test_no_host_drops_and_counts() -> None:
    stats = StatsStore()
    stream = _stream(None, stats, buffer_size_bytes=1)
    stream.log(_entry("/x"))
    await wait_until(lambda: _count(stats, "logs_dropped") == 1, "the entry dropped")
    await stream.close()
    assert _count(stats, "logs_written") == 0


async def test_a_service_that_stops_reading_holds_back_a_bounded_amount() -> None:
    """HTTP/2 flow control: a service that grants no window beyond the first 64 KiB gets
    that much; later batches wait in the outbox, and what does not fit there is dropped and
    counted. Logging itself never waits."""
    connected = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # takes the connection, never answers nor updates a window
        connected.set()

    stats = StatsStore()
    server = await asyncio.start_server(silent, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        stream = _stream(
            port, stats, buffer_size_bytes=1, max_pending_bytes=200_000, max_backlog_bytes=1
        )
        entry = _entry("/" + "x" * 1000)
        for burst in range(60):  # 3 MB in bursts, the writer running in between
            for _ in range(50):
                stream.log(entry)
            await asyncio.sleep(0)
            if burst == 0:
                await asyncio.wait_for(connected.wait(), 10)
        written, dropped = _count(stats, "logs_written"), _count(stats, "logs_dropped")
        assert 0 < written < 100  # the 64 KiB window's worth, then no more
        assert dropped > 2000  # beyond the window and the outbox's 200 KB
        assert 3000 - written - dropped > 100  # the rest waits in the outbox
        await stream.close()
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert _count(stats, "logs_written") + _count(stats, "logs_dropped") == 3000
