"""The schema-driven decoder and encoder, beyond what the samples exercise."""

from __future__ import annotations

import pytest

from pymesh.config.codec import camel_name, decode, encode
from pymesh.config.issues import Reporter
from pymesh.config.model import (
    HTTPDirectResponse,
    HTTPRoute,
    OutlierDetection,
    PeerAuthentication,
    StringMatch,
)
from pymesh.errors import ValidationError


def test_camel_names_follow_protobuf() -> None:
    assert camel_name("per_try_timeout") == "perTryTimeout"
    assert camel_name("consecutive_5xx_errors") == "consecutive5xxErrors"
    assert camel_name("http1_max_pending_requests") == "http1MaxPendingRequests"
    assert camel_name("from_") == "from"


def test_decode_and_encode_round_trip() -> None:
    raw = {
        "name": "r",
        "match": [{"headers": {"end-user": {"exact": "jason"}}, "ignoreUriCase": True}],
        "route": [{"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}],
        "timeout": "500ms",
        "retries": {"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx"},
        "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 0.5}}},
    }
    route = decode(HTTPRoute, raw, "spec.http[0]", Reporter())
    assert route.timeout == 0.5
    assert route.retries.per_try_timeout == 2.0
    assert encode(route) == raw


def test_explicit_null_means_unset() -> None:
    route = decode(HTTPRoute, {"route": None, "timeout": None}, "r", Reporter())
    assert route.route == () and route.timeout is None


def test_int_keyed_maps_and_wrappers() -> None:
    pa = decode(
        PeerAuthentication,
        {"selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": {8080: {}, "9090": {}}},
        "spec",
        Reporter(),
    )
    assert set(pa.port_level_mtls) == {8080, 9090}
    od = decode(OutlierDetection, {"consecutive5xxErrors": 0}, "spec", Reporter())
    assert od.consecutive_5xx_errors == 0  # a wrapper: 0 is set, unlike None


def test_base64_bytes() -> None:
    dr = decode(HTTPDirectResponse, {"status": 200, "body": {"bytes": "aGk="}}, "d", Reporter())
    assert dr.body.body_bytes == b"hi"
    with pytest.raises(ValidationError, match="base64"):
        decode(HTTPDirectResponse, {"status": 200, "body": {"bytes": "!!"}}, "d", Reporter())


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"exact": 1}, "expected a string, got integer 1"),
        ({"exact": "a", "regex": "b"}, "only one of exact, prefix, regex"),
        ([], "expected a mapping, got list"),
        ({"Exact": "a"}, "did you mean 'exact'"),
    ],
)
def test_decode_errors(raw: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        decode(StringMatch, raw, "m", Reporter("f.yaml", 3))


def test_unsigned_fields_reject_negatives() -> None:
    with pytest.raises(ValidationError) as info:
        decode(OutlierDetection, {"consecutive5xxErrors": -1}, "od", Reporter())
    assert info.value.path == "od.consecutive5xxErrors"
