"""CPU per HTTP/2 exchange of the candidate codec libraries, both roles, in memory.

``python -m benchmarks.h2codec`` runs each library's client and server connections against
each other with no sockets: the client sends a request, the server reads it and answers, the
client reads the answer. One *exchange* therefore costs what a proxy spends in its codecs for
one proxied request (it decodes and encodes once as a server downstream and once as a client
upstream). Connections and HPACK tables are reused, as they are on a busy proxy; the
handshake is outside the timer. Libraries run interleaved (A B A B ...) in one process and
the medians are reported; CPU time is ``time.process_time``.

Scenarios:
* ``small``: GET with 8 request fields, 200 with 4 fields and a 100-byte body.
* ``grpc``: gRPC unary: POST with the gRPC fields and a 32-byte message, a 200 with a 64-byte
  message and ``grpc-status`` trailers.
* ``batch``: 100 ``small`` exchanges multiplexed, each side flushing once per batch.
* ``pymesh``: ``small`` through pymesh's own codec (``proxy.codec.h2``), for the overhead of
  the seam over the library it wraps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["main"]

REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":path", b"/productpage?u=normal"),
    (b":authority", b"productpage.default.svc.cluster.local:9080"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
    (b"accept", b"*/*"),
    (b"x-request-id", b"2f0c1e9e-8a41-4d52-9a25-0c2a67f4d1b3"),
    (b"x-b3-traceid", b"80f198ee56343ba864fe8b2a57d3eff7"),
]
RESPONSE = [
    (b":status", b"200"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"100"),
    (b"server", b"envoy"),
]
BODY = b"x" * 100
AUTHORITY = REQUEST[3][1]
FIELDS = REQUEST[4:]
GRPC_REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/grpc.testing.TestService/UnaryCall"),
    (b":authority", b"echo.default.svc.cluster.local:7070"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"grpc-timeout", b"1S"),
    (b"user-agent", b"grpc-python/1.85.0"),
]
AUTHORITY_GRPC = GRPC_REQUEST[3][1]
GRPC_FIELDS = GRPC_REQUEST[4:]
GRPC_RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
GRPC_TRAILERS = [(b"grpc-status", b"0"), (b"grpc-message", b"")]
GRPC_IN = b"\x00\x00\x00\x00\x20" + b"q" * 32
GRPC_OUT = b"\x00\x00\x00\x00\x40" + b"r" * 64


class _Pair:
    """A client and a server connection of one library, wired back to back."""

    client: Any
    server: Any

    def _feed(self, conn: Any, data: bytes) -> None:
        raise NotImplementedError

    def _pump(self) -> None:
        """Move bytes both ways until both sides are quiet (handshake, window updates)."""
        while True:
            out = self.client.data_to_send()
            back = self.server.data_to_send()
            if not out and not back:
                return
            if out:
                self._feed(self.server, out)
            if back:
                self._feed(self.client, back)


class _H2Pair(_Pair):
    """python-hyper's h2: pure Python."""

    name = "h2 (pure Python)"

    def __init__(self) -> None:
        import h2.config
        import h2.connection

        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.client.initiate_connection()
        self.server.initiate_connection()
        self._pump()

    def _feed(self, conn: Any, data: bytes) -> None:
        conn.receive_data(data)

    def exchanges(self, count: int, grpc: bool) -> None:
        import h2.events

        client, server = self.client, self.server
        request = GRPC_REQUEST if grpc else REQUEST
        ids = []
        for _ in range(count):
            sid = client.get_next_available_stream_id()
            ids.append(sid)
            if grpc:
                client.send_headers(sid, request)
                client.send_data(sid, GRPC_IN, end_stream=True)
            else:
                client.send_headers(sid, request, end_stream=True)
        for event in server.receive_data(client.data_to_send()):
            cls = event.__class__
            if cls is h2.events.DataReceived:
                server.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif cls is h2.events.RequestReceived and not grpc:
                server.send_headers(event.stream_id, RESPONSE)
                server.send_data(event.stream_id, BODY, end_stream=True)
            elif cls is h2.events.StreamEnded and grpc:
                server.send_headers(event.stream_id, GRPC_RESPONSE)
                server.send_data(event.stream_id, GRPC_OUT)
                server.send_headers(event.stream_id, GRPC_TRAILERS, end_stream=True)
        ended = 0
        for event in client.receive_data(server.data_to_send()):
            cls = event.__class__
            if cls is h2.events.DataReceived:
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif cls is h2.events.StreamEnded:
                ended += 1
        assert ended == count, (ended, count)
        # WINDOW_UPDATEs travel back, as they would on a socket.
        self._pump()


class _Ngh2Pair(_Pair):
    """ngh2: libnghttp2 behind a sans-I/O Python API."""

    name = "ngh2 (libnghttp2)"

    def __init__(self) -> None:
        import ngh2

        self.client = ngh2.Connection(ngh2.Role.CLIENT)
        self.server = ngh2.Connection(ngh2.Role.SERVER)
        self.client.initiate_connection()
        self.server.initiate_connection()
        self._pump()

    def _feed(self, conn: Any, data: bytes) -> None:
        conn.receive_data(data)
        conn.events()

    def exchanges(self, count: int, grpc: bool) -> None:
        import ngh2

        client, server = self.client, self.server
        for _ in range(count):
            if grpc:
                sid = client.send_request(GRPC_REQUEST)
                client.send_data(sid, GRPC_IN, end_stream=True)
            else:
                client.send_request(REQUEST, end_stream=True)
        server.receive_data(client.data_to_send())
        for event in server.events():
            cls = event.__class__
            if cls is ngh2.RequestReceived and event.end_stream:
                server.send_response(event.stream_id, RESPONSE)
                server.send_data(event.stream_id, BODY, end_stream=True)
            elif cls is ngh2.DataReceived and event.end_stream:
                server.send_response(event.stream_id, GRPC_RESPONSE)
                server.send_data(event.stream_id, GRPC_OUT)
                server.send_trailers(event.stream_id, GRPC_TRAILERS)
        client.receive_data(server.data_to_send())
        ended = 0
        for event in client.events():
            if event.__class__ is ngh2.StreamClosed:
                ended += 1
        assert ended == count, (ended, count)
        self._pump()


class _PymeshPair(_Pair):
    """pymesh's own sans-I/O HTTP/2 codec (the seam the proxy uses)."""

    name = "pymesh proxy.codec.h2"

    def __init__(self) -> None:
        from proxy.codec import h2 as codec
        from proxy.codec import h2_events

        self.ev = h2_events
        self.client = codec.H2ClientConnection()
        self.server = codec.H2ServerConnection()
        self._pump()

    def _feed(self, conn: Any, data: bytes) -> None:
        conn.receive_data(data)
        self._drain(conn)

    @staticmethod
    def _drain(conn: Any) -> list[Any]:
        from proxy.codec import NEED_DATA

        events = []
        while (event := conn.next_event()) is not NEED_DATA:
            events.append(event)
        return events

    def exchanges(self, count: int, grpc: bool) -> None:
        ev = self.ev
        client, server = self.client, self.server
        for _ in range(count):
            if grpc:
                sid = client.send_request(
                    b"POST",
                    b"http",
                    AUTHORITY_GRPC,
                    b"/grpc.testing.TestService/UnaryCall",
                    GRPC_FIELDS,
                )
                client.send_data(sid, GRPC_IN, end_stream=True)
            else:
                client.send_request(
                    b"GET", b"http", AUTHORITY, b"/productpage?u=normal", FIELDS, end_stream=True
                )
        server.receive_data(client.data_to_send())
        for event in self._drain(server):
            cls = event.__class__
            if cls is ev.H2Request:
                if event.end_stream:
                    server.send_response(event.stream_id, 200, RESPONSE[1:])
                    server.send_data(event.stream_id, BODY, end_stream=True)
            elif cls is ev.H2Data:
                server.consumed(event.stream_id, len(event.data))
                if event.end_stream:
                    server.send_response(event.stream_id, 200, GRPC_RESPONSE[1:])
                    server.send_data(event.stream_id, GRPC_OUT)
                    server.send_trailers(event.stream_id, GRPC_TRAILERS)
        client.receive_data(server.data_to_send())
        ended = 0
        for event in self._drain(client):
            cls = event.__class__
            if cls is ev.H2Data:
                client.consumed(event.stream_id, len(event.data))
                ended += event.end_stream
            elif cls is ev.H2Trailers:
                ended += 1
        assert ended == count, (ended, count)
        self._pump()


SCENARIOS: dict[str, tuple[int, bool]] = {
    "small": (1, False),
    "grpc": (1, True),
    "batch": (100, False),
}


def _measure(pair: Any, batch: int, grpc: bool, exchanges: int) -> float:
    """CPU microseconds per exchange."""
    rounds = max(1, exchanges // batch)
    run: Callable[[int, bool], None] = pair.exchanges
    for _ in range(max(1, rounds // 10)):  # warm-up
        run(batch, grpc)
    start = time.process_time()
    for _ in range(rounds):
        run(batch, grpc)
    return (time.process_time() - start) * 1e6 / (rounds * batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default="h2,ngh2,pymesh")
    parser.add_argument("--json", help="write the raw results here")
    args = parser.parse_args(argv)
    makers: dict[str, Callable[[], Any]] = {
        "h2": _H2Pair,
        "ngh2": _Ngh2Pair,
        "pymesh": _PymeshPair,
    }
    chosen = [name for name in args.only.split(",") if name]
    results: dict[str, dict[str, list[float]]] = {}
    for scenario, (batch, grpc) in SCENARIOS.items():
        for _ in range(args.reps):
            for name in chosen:
                pair = makers[name]()
                # The pure-Python library gets fewer exchanges: its per-exchange cost is what
                # is measured, not its total, and the run should stay under a minute.
                count = args.exchanges // (10 if name == "h2" else 1)
                value = _measure(pair, batch, grpc, count)
                results.setdefault(scenario, {}).setdefault(pair.name, []).append(value)
    print(f"{'scenario':8} {'codec':24} {'µs/exchange (median, min-max)':>32}")
    for scenario, per_codec in results.items():
        for name, values in per_codec.items():
            med = statistics.median(values)
            print(f"{scenario:8} {name:24} {med:10.2f} ({min(values):.2f}-{max(values):.2f})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
