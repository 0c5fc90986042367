"""The HTTP/1.1 pool and connection at their seams: PoolWaiter in, RequestEncoder out,
responses and resets to UpstreamCallbacks, with a fake connector and fake transports."""

from __future__ import annotations

import asyncio

from proxy.config.model_cluster import CircuitBreakerThresholds
from proxy.routing.circuit_breaker import ResourceLimits
from proxy.stats import ClusterStats, StatsStore
from proxy.upstream.host import Host
from proxy.upstream.interfaces import PoolFailure, ResetReason
from proxy.upstream.pool import ConnectionPool
from tests.proxy.fakes import FakeConnector


class Waiter:
    """A request waiting for a connection, and the response's destination."""

    def __init__(self) -> None:
        self.encoder = None
        self.failure: PoolFailure | None = None
        self.events: list[tuple[str, object]] = []

    def on_pool_ready(self, encoder, local_address):
        self.encoder = encoder

    def on_pool_failure(self, failure, transport_failure=""):
        self.failure = failure

    def on_upstream_headers(self, response, end_stream):
        self.events.append(("headers", response.status))

    def on_upstream_data(self, data, end_stream):
        self.events.append(("data", (data, end_stream)))

    def on_upstream_trailers(self, trailers):
        self.events.append(("trailers", trailers))

    def on_upstream_reset(self, reason):
        self.events.append(("reset", reason))

    def on_upstream_watermark(self, above):
        self.events.append(("watermark", above))

    def on_upstream_batch_end(self):
        pass


def make_pool(**thresholds: int) -> tuple[ConnectionPool, FakeConnector, StatsStore, list]:
    store = StatsStore()
    connector = FakeConnector()
    failures: list = []
    limits = ResourceLimits(CircuitBreakerThresholds(**thresholds))
    pool = ConnectionPool(
        Host("127.0.1.10", 8000),
        connector=connector,
        stats=ClusterStats(store, "backend"),
        limits=limits,
        connect_timeout=1.0,
        max_requests_per_connection=None,
        on_local_failure=lambda host, kind: failures.append(kind),
    )
    return pool, connector, store, failures


def counter(store: StatsStore, name: str) -> int:
    return next((c.value for c in store.counters() if c.name == name), 0)


def test_queued_request_gets_the_new_connection_then_it_is_reused() -> None:
    pool, connector, _, _ = make_pool()
    first = Waiter()
    assert pool.new_stream(first) is None and len(connector.pending) == 1
    conn, transport = connector.complete()
    assert first.encoder is conn
    conn.encode_headers(b"GET", b"/", [(b"host", b"svc")], True)
    assert transport.take() == b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n"
    conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    # The last body piece carries the end: one call, not two.
    assert first.events == [("headers", 200), ("data", (b"ok", True))]
    second = Waiter()
    assert pool.new_stream(second) is conn and pool.idle_count == 0


def test_bodyless_post_is_framed_with_a_zero_length() -> None:
    pool, connector, _, _ = make_pool()
    pool.new_stream(Waiter())
    conn, transport = connector.complete()
    conn.encode_headers(b"POST", b"/", [(b"host", b"svc")], True)
    assert b"content-length: 0\r\n" in transport.take()


def test_overflow_is_a_pool_failure_not_a_string() -> None:
    pool, _, store, _ = make_pool(max_pending_requests=1)
    assert pool.new_stream(Waiter()) is None
    assert pool.new_stream(Waiter()) is PoolFailure.OVERFLOW
    assert counter(store, "cluster.backend.upstream_rq_pending_overflow") == 1


def test_connect_failure_reaches_the_waiter_and_outlier_detection() -> None:
    pool, connector, store, failures = make_pool()
    waiter = Waiter()
    pool.new_stream(waiter)
    connector.fail(ConnectionRefusedError())
    assert waiter.failure is PoolFailure.CONNECTION_FAILURE
    assert waiter.failure.reset_reason is ResetReason.CONNECTION_FAILURE
    assert failures == ["connect_failure"]
    assert counter(store, "cluster.backend.upstream_cx_connect_fail") == 1
    connector_timeout = make_pool()
    pool2, connector2, _, _ = connector_timeout
    waiter2 = Waiter()
    pool2.new_stream(waiter2)
    connector2.fail(TimeoutError())
    assert waiter2.failure is PoolFailure.TIMEOUT


def test_resets_say_why() -> None:
    pool, connector, _, _ = make_pool()
    waiter = Waiter()
    pool.new_stream(waiter)
    conn, _ = connector.complete()
    conn.encode_headers(b"GET", b"/", [], True)
    conn.connection_lost(None)  # closed before any response byte
    assert waiter.events == [("reset", ResetReason.CONNECTION_TERMINATION)]
    waiter = Waiter()
    pool.new_stream(waiter)
    conn, _ = connector.complete()
    conn.encode_headers(b"GET", b"/", [], True)
    conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nabc")
    conn.connection_lost(None)  # cut short mid-body: Envoy calls it a protocol error
    assert waiter.events[-1] == ("reset", ResetReason.PROTOCOL_ERROR)
    waiter = Waiter()
    pool.new_stream(waiter)
    conn, _ = connector.complete()
    conn.encode_headers(b"GET", b"/", [], True)
    conn.data_received(b"NOT HTTP\r\n\r\n")
    assert waiter.events == [("reset", ResetReason.PROTOCOL_ERROR)]


def test_drained_pool_lets_the_live_exchange_finish_then_closes() -> None:
    pool, connector, _, _ = make_pool()
    waiter = Waiter()
    pool.new_stream(waiter)
    conn, transport = connector.complete()
    conn.encode_headers(b"GET", b"/", [], True)
    pool.drain()
    conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    assert waiter.events[-1] == ("data", (b"", True))
    assert transport.aborted and pool.idle_count == 0  # never parked in the drained pool
    assert pool.new_stream(Waiter()) is PoolFailure.CLOSED


def test_close_cancels_connects_and_fails_waiters() -> None:
    pool, connector, _, _ = make_pool()
    waiter = Waiter()
    pool.new_stream(waiter)
    pool.close()
    assert waiter.failure is PoolFailure.CLOSED
    assert connector.cancelled == 1 and connector.pending == []


def test_read_disable_of_an_exchange_ends_with_it() -> None:
    pool, connector, _, _ = make_pool()
    pool.new_stream(Waiter())
    conn, transport = connector.complete()
    conn.encode_headers(b"GET", b"/", [], True)
    conn.read_disable(True)
    conn.read_disable(True)
    conn.read_disable(False)
    assert not transport.reading
    conn.data_received(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert transport.reading and pool.idle_count == 1


def test_loop_connector_reports_refusal() -> None:
    async def run() -> PoolFailure | None:
        from proxy.upstream.pool import LoopConnector

        store = StatsStore()
        pool = ConnectionPool(
            Host("127.0.1.10", 1),  # nothing listens on port 1
            connector=LoopConnector(asyncio.get_running_loop()),
            stats=ClusterStats(store, "c"),
            limits=ResourceLimits(CircuitBreakerThresholds()),
            connect_timeout=5.0,
            max_requests_per_connection=None,
            on_local_failure=lambda host, kind: None,
        )
        failed = asyncio.Event()
        waiter = Waiter()
        waiter.on_pool_failure = lambda failure: (setattr(waiter, "failure", failure), failed.set())
        pool.new_stream(waiter)
        await asyncio.wait_for(failed.wait(), 10)
        return waiter.failure

    assert asyncio.run(run()) is PoolFailure.CONNECTION_FAILURE
