"""The request path at its seams: the real connection manager, stream, filters, router, pool and
codecs, on fake transports and a fake clock (no sockets, no sleeps)."""

from __future__ import annotations

import dataclasses

from proxy.http.local_reply import ResponseFlag
from tests.proxy.http.filters import Hold, HoldResponse, Recorder, filter_spec, filters_registry
from tests.proxy.http.harness import Harness, one_route, parse_request, parse_response

GET = b"GET /a?q=1 HTTP/1.1\r\nHost: svc\r\nUser-Agent: t\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def test_round_trip_fills_stream_info() -> None:
    registry, made = filters_registry()
    h = Harness(one_route(http_filters=[filter_spec("recorder")]), registry=registry)
    client = h.client(peer=("127.0.1.100", 41000))
    client.send(GET)
    assert client.transport.take() == b""  # nothing before the upstream answers
    up, up_transport = h.upstream()
    target, headers, body = parse_request(up_transport.take())
    assert target == b"/a?q=1" and headers["host"] == "svc" and body == b""
    assert headers["x-forwarded-proto"] == "http" and "x-request-id" in headers
    h.clock.advance(0.003)
    up.data_received(OK)
    reply = client.reply()
    assert (reply.status, reply.body) == (200, b"ok")
    assert reply.headers["x-envoy-upstream-service-time"] == "3"
    recorder = made[0]
    assert isinstance(recorder, Recorder) and recorder.destroyed
    assert recorder.seen[0] == ("decode_headers", True)
    assert recorder.cb is not None
    info = recorder.cb.stream_info
    assert (info.response_code, info.response_code_details) == (200, "via_upstream")
    assert info.upstream_cluster == "backend" and info.route_name == "default"
    assert info.upstream_host == "127.0.1.10:8000"
    assert info.upstream_local_address == "127.0.1.200:50000"
    assert info.connection.remote_address == ("127.0.1.100", 41000)
    assert info.bytes_sent == 2 and info.attempt_count == 1
    assert info.response_flags_text() == "-"
    assert info.end_time is not None and info.end_time - info.start_time >= 0.003
    # The upstream connection went back to the pool and serves the next request.
    client.send(GET)
    assert h.connector.pending == [] and parse_request(up_transport.take())[0] == b"/a?q=1"


def test_route_timeout_on_the_fake_clock() -> None:
    h = Harness(one_route(timeout="2s"))
    client = h.client()
    client.send(GET)
    _up, up_transport = h.upstream()
    h.clock.advance(1.9)
    assert client.transport.take() == b""
    h.clock.advance(0.2)
    reply = client.reply()
    assert (reply.status, reply.body) == (504, b"upstream request timeout")
    assert up_transport.aborted  # the late response can never reach anyone
    assert h.stat("cluster.backend.upstream_rq_timeout") == 1


def test_async_filter_holds_request_and_body_until_it_continues() -> None:
    registry, made = filters_registry()
    h = Harness(one_route(http_filters=[filter_spec("hold")]), registry=registry)
    client = h.client()
    client.send(b"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 6\r\n\r\nabc")
    client.send(b"def")
    hold = made[0]
    assert isinstance(hold, Hold) and hold.cb is not None
    assert h.connector.pending == []  # nothing went upstream while the check runs
    hold.cb.continue_decoding()
    _, up_transport = h.upstream()
    target, headers, body = parse_request(up_transport.take())
    assert (target, headers["x-held"], body) == (b"/p", "yes", b"abcdef")


def test_async_filter_may_answer_instead() -> None:
    registry, made = filters_registry()
    h = Harness(one_route(http_filters=[filter_spec("hold")]), registry=registry)
    client = h.client()
    client.send(GET)
    hold = made[0]
    assert isinstance(hold, Hold) and hold.cb is not None
    hold.cb.send_local_reply(403, b"denied", flag=ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE)
    reply = client.reply()
    assert (reply.status, reply.body) == (403, b"denied")
    assert hold.cb.stream_info.response_flags_text() == "UAEX"
    assert h.connector.pending == []


def test_buffer_filter_sees_every_chunk_then_lets_the_body_go_whole() -> None:
    registry, made = filters_registry()
    h = Harness(one_route(http_filters=[filter_spec("buffer")]), registry=registry)
    client = h.client()
    client.send(b"POST /p HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n")
    client.send(b"3\r\nabc\r\n")
    client.send(b"2\r\nde\r\n")
    assert h.connector.pending == []
    client.send(b"0\r\n\r\n")
    _, up_transport = h.upstream()
    _, headers, body = parse_request(up_transport.take())
    # The whole body was here before a connection: it goes with a length, not chunked.
    assert body == b"abcde" and headers["content-length"] == "5"
    assert made[0].chunks == 3  # type: ignore[attr-defined]


def test_encoder_filter_holds_the_response_and_changes_its_status() -> None:
    registry, made = filters_registry()
    h = Harness(
        one_route(http_filters=[filter_spec("hold_response", status=203)]), registry=registry
    )
    client = h.client()
    client.send(GET)
    up, _ = h.upstream()
    up.data_received(OK)
    assert client.transport.take() == b""
    held = made[0]
    assert isinstance(held, HoldResponse) and held.cb is not None
    held.cb.continue_encoding()
    reply = client.reply()
    assert (reply.status, reply.body, reply.headers["x-held-response"]) == (203, b"ok", "yes")


def test_read_disable_is_counted_across_reasons() -> None:
    registry, made = filters_registry()
    h = Harness(one_route(http_filters=[filter_spec("recorder")]), registry=registry)
    client = h.client()
    client.send(b"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 4\r\n\r\n")
    cb = made[0].cb  # type: ignore[attr-defined]
    up, _up_transport = h.upstream()
    cb.read_disable(True)  # a filter's reason
    up.pause_writing()  # the upstream's write buffer is full: a second reason
    assert not client.transport.reading and client.transport.pauses == 1
    up.resume_writing()
    assert not client.transport.reading  # the filter's reason still holds
    cb.read_disable(False)
    assert client.transport.reading


def test_stream_gives_back_what_it_disabled_when_it_ends() -> None:
    registry, made = filters_registry()
    h = Harness(one_route(http_filters=[filter_spec("recorder")]), registry=registry)
    client = h.client()
    client.send(GET)
    made[0].cb.read_disable(True)  # type: ignore[attr-defined]
    up, _ = h.upstream()
    up.data_received(OK)
    assert client.reply().status == 200
    assert client.transport.reading  # the next request can be read


def test_full_client_buffer_stops_upstream_reads() -> None:
    h = Harness(one_route())
    client = h.client()
    client.send(GET)
    up, up_transport = h.upstream()
    up.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    client.conn.pause_writing()
    assert not up_transport.reading
    client.conn.resume_writing()
    assert up_transport.reading
    client.conn.pause_writing()
    up.data_received(b"defghij")  # the end: the connection forgets the exchange's reasons
    assert parse_response(client.transport.take()).body == b"abcdefghij"
    assert up_transport.reading and not up_transport.closed


def test_a_push_never_closes_a_cluster_under_a_live_request() -> None:
    h = Harness(one_route())
    client = h.client()
    client.send(GET)
    up, up_transport = h.upstream()
    old = h.server.runtime.current.clusters["backend"]
    # A push that changes the cluster: new streams get a new one...
    snapshot = h.server.holder.current
    changed = dataclasses.replace(snapshot.clusters["backend"], connect_timeout=3.0)
    h.server.prepare(dataclasses.replace(snapshot, clusters={"backend": changed}))
    assert h.server.runtime.current.clusters["backend"] is not old
    # ...but the request that captured the old one finishes on it,
    up.data_received(OK)
    assert client.reply().status == 200
    # and its connection is closed on release instead of parked in the drained pool.
    assert up_transport.aborted
    client.send(GET)
    assert len(h.connector.pending) == 1  # the new cluster opens its own connection


def test_connect_failure_reports_the_transport_failure_reason() -> None:
    registry, made = filters_registry()
    h = Harness(one_route(http_filters=[filter_spec("recorder")]), registry=registry)
    client = h.client()
    client.send(GET)
    h.connector.fail(ConnectionRefusedError())
    reply = client.reply()
    assert reply.status == 503
    assert reply.body.endswith(b"reset reason: remote connection failure")
    info = made[0].cb.stream_info  # type: ignore[attr-defined]
    assert info.response_flags_text() == "UF"
    assert info.upstream_transport_failure_reason == "remote connection failure"
    assert info.response_code_details == (
        "upstream_reset_before_response_started{remote_connection_failure}"
    )


def test_drain_serves_a_fresh_connections_first_request_and_closes_an_idle_one() -> None:
    """A listener update or a shutdown drains open connections. One just accepted may have
    its request in flight: closing it would reset that request, so it is served with
    ``connection: close``. One idle between requests closes at once."""
    h = Harness(one_route(cluster="backend"))
    fresh = h.client()
    fresh.conn.drain()
    assert not fresh.transport.closed
    fresh.send(GET)
    up, _ = h.upstream()
    up.data_received(OK)
    reply = fresh.reply()
    assert reply.status == 200 and reply.headers["connection"] == "close"
    assert fresh.transport.closed
    idle = h.client(peer=("127.0.1.100", 40001))
    idle.send(GET)
    up.data_received(OK)
    assert idle.reply().status == 200 and not idle.transport.closed
    idle.conn.drain()
    assert idle.transport.closed
