"""What ext_authz asks and what the answers mean, without I/O (the same rules the differential
tests check against Envoy, here case by case)."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import wrappers_pb2
from google.rpc import status_pb2

from proxy.config.model_common import StringMatcher, StringMatchKind
from proxy.security.ext_authz import (
    CheckRequestFacts,
    Verdict,
    answer_from_grpc,
    answer_from_http,
    check_request,
    http_check_headers,
)


def _exact(name: str) -> StringMatcher:
    return StringMatcher(StringMatchKind.EXACT, name.encode())


def _facts(**kw: object) -> CheckRequestFacts:
    base: dict[str, object] = dict(
        source=("10.0.0.1", 40000),
        destination=("10.0.0.2", 8000),
        source_principal="spiffe://cluster.local/ns/foo/sa/sleep",
        method=b"POST",
        path=b"/p?q=1",
        host=b"h",
        scheme=b"http",
        protocol="HTTP/1.1",
        headers=[(b":method", b"POST"), (b"x-a", b"1"), (b"x-a", b"2"), (b"x-b", b"3")],
        request_id=b"rid",
        start_seconds=1.5,
    )
    base.update(kw)
    return CheckRequestFacts(**base)  # type: ignore[arg-type]


def test_the_grpc_check_request() -> None:
    request = check_request(_facts(), allowed=None, disallowed=[_exact("x-b")])
    attrs = request.attributes
    http = attrs.request.http
    assert (http.method, http.path, http.host, http.id, http.size) == (
        "POST",
        "/p?q=1",
        "h",
        "rid",
        0,
    )
    assert dict(http.headers) == {":method": "POST", "x-a": "1,2"}
    assert attrs.source.principal.endswith("/sa/sleep")
    assert attrs.source.address.socket_address.port_value == 40000
    assert attrs.request.time.ToNanoseconds() == 1_500_000_000
    only = check_request(_facts(body=b"xyz"), allowed=[_exact("x-b")], disallowed=[])
    assert dict(only.attributes.request.http.headers) == {"x-b": "3"}
    assert (only.attributes.request.http.body, only.attributes.request.http.size) == ("xyz", 3)


def _option(key: str, value: str, append: bool | None = None) -> base_pb2.HeaderValueOption:
    option = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))
    if append is not None:
        option.append.CopyFrom(wrappers_pb2.BoolValue(value=append))
    return option


def test_grpc_answers() -> None:
    ok = auth_pb2.CheckResponse(
        status=status_pb2.Status(code=0),
        ok_response=auth_pb2.OkHttpResponse(
            headers=[
                _option("X-Set", "s"),
                _option("x-app", "a", True),
                _option("x-f", "f", False),
            ],
            headers_to_remove=["x-gone"],
            response_headers_to_add=[_option("x-resp", "r")],
        ),
    )
    answer = answer_from_grpc(ok)
    assert answer.verdict is Verdict.OK
    assert answer.headers_to_set == ((b"x-set", b"s"), (b"x-f", b"f"))
    assert answer.headers_to_append == ((b"x-app", b"a"),)
    assert (answer.headers_to_remove, answer.response_headers) == (
        (b"x-gone",),
        ((b"x-resp", b"r"),),
    )
    denied = auth_pb2.CheckResponse(
        status=status_pb2.Status(code=7),
        denied_response=auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=401), body="no"
        ),
    )
    answer = answer_from_grpc(denied)
    assert (answer.verdict, answer.status, answer.body) == (Verdict.DENIED, 401, b"no")
    bare = answer_from_grpc(auth_pb2.CheckResponse(status=status_pb2.Status(code=16)))
    assert (bare.verdict, bare.status) == (Verdict.DENIED, 403)


def test_http_service_rules() -> None:
    headers = [(b"host", b"h"), (b"authorization", b"a"), (b"x-ok", b"1"), (b"x-no", b"2")]
    sent = http_check_headers(
        headers, b"h", allowed=[_exact("x-ok")], disallowed=[], headers_to_add=[(b"x-add", b"v")]
    )
    assert sent == [(b"host", b"h"), (b"authorization", b"a"), (b"x-ok", b"1"), (b"x-add", b"v")]
    defaults = http_check_headers(headers, b"h", allowed=None, disallowed=[], headers_to_add=[])
    assert [k for k, _ in defaults] == [b"host", b"authorization"]
    reply = [(b"x-up", b"1"), (b"x-client", b"2"), (b"www-authenticate", b"x"), (b"x-other", b"3")]
    rules = dict(
        upstream=[_exact("x-up")], upstream_append=[], client_on_success=[_exact("x-client")]
    )
    ok = answer_from_http(200, reply, b"", client=None, **rules)  # type: ignore[arg-type]
    assert (ok.headers_to_set, ok.response_headers) == (((b"x-up", b"1"),), ((b"x-client", b"2"),))
    denied = answer_from_http(403, reply, b"no", client=[_exact("x-client")], **rules)  # type: ignore[arg-type]
    assert denied.response_headers == ((b"x-client", b"2"), (b"www-authenticate", b"x"))
    assert answer_from_http(503, reply, b"", client=None, **rules).verdict is Verdict.ERROR  # type: ignore[arg-type]
