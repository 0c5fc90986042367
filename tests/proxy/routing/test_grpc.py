"""gRPC decisions: grpc-timeout, stream duration caps, status mapping, local replies, and the
gRPC retry conditions of a route's retry policy."""

from __future__ import annotations

import random

import pytest

from proxy.config.model import RetryPolicy
from proxy.config.model_route import MaxStreamDuration
from proxy.routing.grpc import (
    GrpcStatus,
    format_grpc_timeout,
    frame_message,
    grpc_local_reply_headers,
    grpc_status_from_headers,
    http_to_grpc_status,
    is_grpc_content_type,
    parse_grpc_timeout,
    percent_decode_message,
    percent_encode_message,
    response_grpc_status,
    stream_duration_timeout,
    unframe_message,
)
from proxy.routing.retry import RetryState, parse_envoy_request_controls


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"3S", 3.0),
        (b"250m", 0.25),
        (b"1500u", 0.002),  # rounded up to whole milliseconds
        (b"1u", 0.001),
        (b"1000000n", 0.001),
        (b"1n", 0.001),
        (b"0S", 0.0),
        (b"99999999S", 99999999.0),
        (b"100000000S", None),  # nine digits
        (b"S", None),
        (b"10", None),
        (b"10x", None),
        (b"-1S", None),
        (b"1.5S", None),
        (b"", None),
        (None, None),
    ],
)
def test_parse_grpc_timeout(value, seconds) -> None:
    assert parse_grpc_timeout(value) == seconds


@pytest.mark.parametrize(
    ("seconds", "header"),
    [(0.25, b"250m"), (5.0, b"5000m"), (100_000.0, b"100000S"), (1e9, b"16666666M"),
     (1e12, b"99999999H")],
)  # fmt: skip
def test_format_grpc_timeout(seconds, header) -> None:
    assert format_grpc_timeout(seconds) == header


def test_content_types() -> None:
    assert is_grpc_content_type(b"application/grpc")
    assert is_grpc_content_type(b"application/grpc+proto")
    assert is_grpc_content_type(b"application/grpc;charset=utf-8")
    assert not is_grpc_content_type(b"application/grpc-web")
    assert not is_grpc_content_type(b"application/json")
    assert not is_grpc_content_type(None)


MSD = MaxStreamDuration


@pytest.mark.parametrize(
    ("route", "hcm", "grpc", "expected"),
    [
        (None, None, 5.0, None),  # no cap configured: grpc-timeout alone sets nothing
        (None, 30.0, 5.0, 30.0),
        (MSD(max_stream_duration=10.0), None, 5.0, 10.0),
        (MSD(max_stream_duration=0.0), 30.0, None, None),  # explicit 0: no limit
        (MSD(grpc_timeout_header_max=0.0), None, 5.0, 5.0),  # 0: uncapped
        (MSD(grpc_timeout_header_max=2.0), None, 5.0, 2.0),
        (MSD(grpc_timeout_header_max=10.0), None, 5.0, 5.0),
        (MSD(grpc_timeout_header_max=10.0, grpc_timeout_header_offset=1.0), None, 5.0, 4.0),
        (MSD(grpc_timeout_header_max=10.0, grpc_timeout_header_offset=6.0), None, 5.0, None),
        (MSD(grpc_timeout_header_max=10.0, max_stream_duration=3.0), None, None, 3.0),
        (MSD(grpc_timeout_header_max=10.0), None, 0.0, None),  # grpc-timeout 0: no deadline
    ],
)
def test_stream_duration_timeout(route, hcm, grpc, expected) -> None:
    assert stream_duration_timeout(route, hcm, grpc) == expected


@pytest.mark.parametrize(
    ("http", "grpc"),
    [(400, 13), (401, 16), (403, 7), (404, 12), (429, 14), (502, 14), (503, 14), (504, 14),
     (500, 2), (200, 2), (408, 2)],
)  # fmt: skip
def test_http_to_grpc_status(http, grpc) -> None:
    assert http_to_grpc_status(http) == grpc


def test_status_names_are_envoys() -> None:
    assert GrpcStatus.OK.camel == "OK"
    assert GrpcStatus.CANCELLED.camel == "Canceled"
    assert GrpcStatus.DEADLINE_EXCEEDED.camel == "DeadlineExceeded"
    assert GrpcStatus.UNAVAILABLE.snake == "UNAVAILABLE"


def test_response_status_order() -> None:
    ok = [(b"grpc-status", b"0")]
    assert response_grpc_status([(b"grpc-status", b"14")], ok, 200) == 0
    assert response_grpc_status([(b"grpc-status", b"14")], None, 200) == 14
    assert response_grpc_status([], [], 503) == GrpcStatus.UNAVAILABLE
    assert response_grpc_status([], [], None) is None
    assert grpc_status_from_headers([(b"grpc-status", b"x")]) is None
    assert grpc_status_from_headers([(b"grpc-status", b"42")]) == 42


def test_local_reply_is_trailers_only() -> None:
    assert grpc_local_reply_headers(504, "upstream request timeout") == [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"14"),
        (b"grpc-message", b"upstream request timeout"),
    ]
    assert grpc_local_reply_headers(403, "RBAC: access denied\n")[1:] == [
        (b"grpc-status", b"7"),
        (b"grpc-message", b"RBAC: access denied"),
    ]
    assert grpc_local_reply_headers(408, "", GrpcStatus.DEADLINE_EXCEEDED) == [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"4"),
    ]


def test_percent_encoding() -> None:
    assert percent_encode_message("a 100% ok\tü") == b"a 100%25 ok%09%C3%BC"


def _state(retry_on: str, headers=()) -> RetryState:
    names = frozenset(n.strip() for n in retry_on.split(",") if n.strip())
    controls = parse_envoy_request_controls(list(headers))
    created = RetryState.create(RetryPolicy(retry_on=names), controls, random.Random(1))
    assert created is not None
    return created


@pytest.mark.parametrize(
    ("retry_on", "grpc_status", "expected"),
    [
        ("unavailable", b"14", True),
        ("unavailable", b"4", False),
        ("cancelled,deadline-exceeded,internal,resource-exhausted", b"1", True),
        ("cancelled,deadline-exceeded,internal,resource-exhausted", b"4", True),
        ("cancelled,deadline-exceeded,internal,resource-exhausted", b"13", True),
        ("cancelled,deadline-exceeded,internal,resource-exhausted", b"8", True),
        ("cancelled,deadline-exceeded,internal,resource-exhausted", b"14", False),
        ("unavailable", b"0", False),
        ("5xx,unavailable", b"2", False),  # a 200 with UNKNOWN is no 5xx
    ],
)
def test_grpc_retry_on_trailers_only_status(retry_on, grpc_status, expected) -> None:
    headers = [(b"content-type", b"application/grpc"), (b"grpc-status", grpc_status)]
    assert _state(retry_on).would_retry_response(200, headers) is expected


def test_grpc_conditions_from_request_headers() -> None:
    unavailable = [(b"grpc-status", b"14")]
    # x-envoy-retry-grpc-on takes the gRPC conditions...
    s = _state("", [(b"x-envoy-retry-grpc-on", b"unavailable")])
    assert s.would_retry_response(200, unavailable)
    # ...and x-envoy-retry-on does not (Envoy parses it for HTTP conditions only).
    assert (
        RetryState.create(
            RetryPolicy(retry_on=frozenset()),
            parse_envoy_request_controls([(b"x-envoy-retry-on", b"unavailable")]),
            random.Random(1),
        )
        is None
    )


def test_overloaded_response_is_never_retried() -> None:
    headers = [(b"grpc-status", b"14"), (b"x-envoy-overloaded", b"true")]
    assert not _state("unavailable").would_retry_response(200, headers)


def test_a_message_framed_is_unframed_and_bad_bodies_say_why() -> None:
    assert frame_message(b"abc") == b"\x00\x00\x00\x00\x03abc"
    assert unframe_message(frame_message(b"abc")) == b"abc"
    assert unframe_message(frame_message(b"")) == b""
    assert unframe_message(b"\x00\x00") == "no message"
    assert unframe_message(b"\x01" + frame_message(b"abc")[1:]) == (
        "compressed messages are not supported"
    )
    assert unframe_message(frame_message(b"abc")[:-1]) == "exactly one message expected"
    assert unframe_message(frame_message(b"a") * 2) == "exactly one message expected"


def test_grpc_message_round_trips_through_percent_encoding() -> None:
    for message in ("plain", "100% used ✓", "line\nbreak"):
        assert percent_decode_message(percent_encode_message(message)) == message
    assert percent_decode_message(b"bad %zz and %E2%9C") == "bad %zz and \ufffd"
