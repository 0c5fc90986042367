"""Properties of the HTTP/1.1 codec: round trips through both directions, robustness on
arbitrary input, and agreement with h11 (the reference) on valid messages."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.codec import (
    NEED_DATA,
    ClientConnection,
    ConnectionClosed,
    Data,
    EndOfMessage,
    InformationalResponse,
    Request,
    Response,
    ServerConnection,
)
from pymesh.errors import RemoteProtocolError
from tests.proxy.codec.helpers import fetch, merge, serve, split_at

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
# Names the parser or the codec give a meaning to; the generic strategies leave them out.
SPECIAL = {
    b"connection",
    b"content-length",
    b"expect",
    b"host",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"upgrade",
}
VCHAR = [bytes([c]) for c in [*range(0x21, 0x7F), *range(0x80, 0x100)]]
PCHAR = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@%/?"

names = st.text(TCHAR, min_size=1, max_size=10).map(str.encode).filter(lambda n: n not in SPECIAL)
values = (
    st.lists(st.sampled_from([*VCHAR, b" ", b"\t"]), max_size=16)
    .map(b"".join)
    .map(lambda v: v.strip(b" \t"))
)
fields = st.lists(st.tuples(names, values), max_size=6)
methods = st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"])
targets = st.text(PCHAR, max_size=20).map(lambda t: b"/" + t.encode())
bodies = st.binary(max_size=120)
cuts = st.lists(st.integers(0, 1200), max_size=8)


def pieces_of(body: bytes, points: list[int]) -> list[bytes]:
    return split_at(body, points) or [b""]


# -- (1) round trips --------------------------------------------------------------------------


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, Request, bytes, list[tuple[bytes, bytes]]]:
    """Wire bytes from ClientConnection, and the Request, body and trailers they must parse to."""
    method, target, headers = draw(methods), draw(targets), [(b"host", b"h"), *draw(fields)]
    body = draw(bodies)
    framing = draw(st.sampled_from(["length", "chunked", "none"]))
    if framing == "none":
        body = b""
    elif framing == "length":
        headers.append((b"content-length", b"%d" % len(body)))
    trailers = draw(fields) if framing == "chunked" else []
    client = ClientConnection()
    wire = client.send_request(method, target, headers, chunked=framing == "chunked")
    for piece in pieces_of(body, draw(cuts)):
        wire += client.send_data(piece)
    wire += client.send_end(trailers)
    chunked = framing == "chunked"
    parsed = [*headers, (b"transfer-encoding", b"chunked")] if chunked else headers
    length = len(body) if framing == "length" else None
    expected = Request(method, target, parsed, b"1.1", True, length, chunked, False, False)
    return wire, expected, body, trailers


@FAST
@given(st.lists(requests(), min_size=1, max_size=3), cuts)
def test_requests_round_trip(messages, points) -> None:
    wire = b"".join(message[0] for message in messages)
    expected: list[Any] = []
    for _, request, body, trailers in messages:
        expected += [request, Data(body)] if body else [request]
        expected.append(EndOfMessage(trailers))
    expected.append(ConnectionClosed())
    assert serve(split_at(wire, points)) == expected


statuses = st.sampled_from([200, 201, 204, 206, 301, 304, 400, 404, 418, 500, 503, 599])
reasons = st.one_of(st.none(), st.text(TCHAR + " ", max_size=12).map(str.encode))


@FAST
@given(
    method=st.sampled_from([b"GET", b"HEAD"]),
    version=st.sampled_from([b"1.1", b"1.0"]),
    status=statuses,
    reason=reasons,
    headers=fields,
    body=bodies,
    framing=st.sampled_from(["length", True, False, None]),
    trailers=fields,
    points=cuts,
)
def test_responses_round_trip(
    method, version, status, reason, headers, body, framing, trailers, points
) -> None:
    server = ServerConnection()
    server.receive_data(b"%b / HTTP/%b\r\n\r\n" % (method, version))
    assert isinstance(server.next_event(), Request)
    assert server.next_event() == EndOfMessage()
    bodyless = method == b"HEAD" or status in (204, 304)
    sent = list(headers)
    if framing == "length":
        sent.append((b"content-length", b"%d" % len(body)))
    wire = server.send_response(
        status, sent, reason=reason, chunked=None if framing == "length" else framing
    )
    if bodyless:
        body = b""
    for piece in pieces_of(body, points):
        wire += server.send_data(piece)
    wire += server.send_end(trailers)
    chunked = b"transfer-encoding: chunked" in wire.split(b"\r\n\r\n", 1)[0]

    client = ClientConnection()
    client.send_request(method, b"/", [])
    chunks = split_at(wire, points)
    if not server.keep_alive:
        chunks.append(b"")
    events = fetch_events(client, chunks)
    response = events[0]
    assert type(response) is Response
    assert response.status == status
    phrase = HTTPStatus(status).phrase.encode() if status in HTTPStatus._value2member_map_ else b""
    assert response.reason == (phrase if reason is None else reason)
    assert response.headers[: len(sent)] == sent
    assert response.chunked is chunked
    rest = [e for e in events[1:] if type(e) is not ConnectionClosed]
    assert rest == ([Data(body)] if body else []) + [EndOfMessage(trailers if chunked else [])]
    if method == b"GET":
        assert client.keep_alive is server.keep_alive  # both ends agree on reuse


def fetch_events(client: ClientConnection, chunks: list[bytes]) -> list[Any]:
    out: list[Any] = []
    for chunk in chunks:
        client.receive_data(chunk)
        while (event := client.next_event()) is not NEED_DATA:
            out.append(event)
            if type(event) is ConnectionClosed:
                break
    return merge(out)


# -- (2) arbitrary input: RemoteProtocolError or events, nothing else --------------------------

INTERESTING = [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"\x00", b"0", b";", b",", b"\x7f", b"9"]
SEEDS = [
    b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: v\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    b"GET /b HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    b"POST / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\n"
    b"hiGET / HTTP/1.1\r\n\r\n",
    b"CONNECT a:1 HTTP/1.1\r\n\r\nxx",
]
RESPONSE_SEEDS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nclose-delimited",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        blob = draw(st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=3)))
        if op == "insert":
            data[pos:pos] = blob
        elif op == "delete":
            del data[pos : pos + len(blob)]
        elif op == "replace":
            data[pos : pos + len(blob)] = blob
        else:
            data[pos:pos] = data[max(0, pos - 8) : pos]
    return bytes(data)


def survives(run: Any) -> None:
    try:
        run()
    except RemoteProtocolError as exc:
        assert 400 <= exc.status <= 599 and str(exc)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), mutated(SEEDS)), cuts)
def test_server_survives_arbitrary_bytes(data, points) -> None:
    survives(lambda: serve(split_at(data, points)))


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.binary(max_size=300), mutated(RESPONSE_SEEDS)),
    cuts,
    st.sampled_from([b"GET", b"HEAD"]),
)
def test_client_survives_arbitrary_bytes(data, points, method) -> None:
    survives(lambda: fetch([(method, [*split_at(data, points), b""])]))


# -- (3) differential against h11 ------------------------------------------------------------

ows = st.sampled_from([b"", b" ", b"\t", b"  ", b" \t"])


@st.composite
def raw_fields(draw: st.DrawFn) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Header lines with random name case and padding, and the fields they stand for."""
    lines, parsed = b"", []
    for name, value in draw(fields):
        cased = bytes(c ^ 0x20 if 0x61 <= c <= 0x7A and draw(st.booleans()) else c for c in name)
        lines += cased + b":" + draw(ows) + value + draw(ows) + b"\r\n"
        parsed.append((name, value))
    return lines, parsed


@st.composite
def raw_body(draw: st.DrawFn) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]:
    """(framing header lines, encoded body, body, trailers) with hand-made chunking."""
    body = draw(bodies)
    framing = draw(st.sampled_from(["length", "chunked"]))
    if framing == "length":
        return b"Content-Length: %d\r\n" % len(body), body, body, []
    encoded = b""
    for piece in split_at(body, draw(cuts)):
        ext = draw(st.sampled_from([b"", b";a=b", b";flag", b";x=1;y"]))
        encoded += b"%X%b\r\n%b\r\n" % (len(piece), ext, piece)
    trailer_lines, trailers = draw(raw_fields())
    return (
        b"Transfer-Encoding: chunked\r\n",
        encoded + b"0\r\n" + trailer_lines + b"\r\n",
        body,
        trailers,
    )


def h11_view(events: list[Any]) -> list[Any]:
    out: list[Any] = []
    for event in events:
        if isinstance(event, h11.Request):
            out.append(("head", event.method, event.target, list(event.headers)))
        elif isinstance(event, h11.Response | h11.InformationalResponse):
            out.append(("head", event.status_code, event.reason, list(event.headers)))
        elif isinstance(event, h11.Data):
            out.append(Data(bytes(event.data)))
        elif isinstance(event, h11.EndOfMessage):
            out.append(EndOfMessage(list(event.headers)))
    return merge(out)


def our_view(events: list[Any]) -> list[Any]:
    out: list[Any] = []
    for event in events:
        if type(event) is Request:
            out.append(("head", event.method, event.target, event.headers))
        elif type(event) in (Response, InformationalResponse):
            reason = event.reason if type(event) is Response else h11_reason(event.status)
            out.append(("head", event.status, reason, event.headers))
        elif type(event) in (Data, EndOfMessage):
            out.append(event)
    return out


def h11_reason(status: int) -> bytes:
    return b"Continue" if status == 100 else b"Early Hints"


@FAST
@given(methods, targets, raw_fields(), raw_body())
def test_requests_agree_with_h11(method, target, head_fields, framing) -> None:
    lines, _ = head_fields
    framing_line, encoded, body, trailers = framing
    data = b"%b %b HTTP/1.1\r\nHost: h\r\n%b%b\r\n%b" % (
        method,
        target,
        lines,
        framing_line,
        encoded,
    )

    reference = h11.Connection(h11.SERVER)
    reference.receive_data(data)
    theirs = []
    while (event := reference.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
        theirs.append(event)
    ours = serve([data], eof=False)
    assert our_view(ours) == h11_view(theirs)
    assert ours[-1] == EndOfMessage(trailers)
    assert b"".join(e.data for e in ours if type(e) is Data) == body


@FAST
@given(
    statuses.filter(lambda s: s not in (204, 304)),
    st.text(TCHAR + " ", max_size=12).map(str.encode),
    raw_fields(),
    raw_body(),
    st.lists(st.sampled_from([100, 103]), max_size=2),
    st.booleans(),
)
def test_responses_agree_with_h11(status, reason, head_fields, framing, interim, until_eof) -> None:
    lines, _ = head_fields
    framing_line, encoded, body, _ = framing
    if until_eof:
        framing_line, encoded = b"", body
    data = b"".join(
        b"HTTP/1.1 %d %b\r\n\r\n" % (code, h11_reason(code)) for code in interim
    ) + b"HTTP/1.1 %d %b\r\n%b%b\r\n%b" % (status, reason, lines, framing_line, encoded)

    reference = h11.Connection(h11.CLIENT)
    reference.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
    reference.send(h11.EndOfMessage())
    reference.receive_data(data)
    reference.receive_data(b"")
    theirs = []
    while (event := reference.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
        theirs.append(event)
        if isinstance(event, h11.ConnectionClosed):
            break
    ours = fetch([(b"GET", [data, b""])])
    assert our_view(ours) == h11_view(theirs)
    assert b"".join(e.data for e in ours if type(e) is Data) == body
