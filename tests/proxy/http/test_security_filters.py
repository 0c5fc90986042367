"""The security filters at the request path's seams (fake transports, fake clock, fake
connector): jwt_authn waiting for a JWKS fetch through its cluster, ext_authz holding the
request and its body while the authorizer answers, RBAC answering before anything goes
upstream — and each letting go of what it holds when the client leaves."""

from __future__ import annotations

from typing import Any

from tests.proxy.http.harness import Harness, parse_request
from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.proxy.security.tokens import jwks_json, make_keys, tamper

_T = "type.googleapis.com/"
UPSTREAM = ("127.0.1.10", 8000)
SERVICE = ("127.0.1.11", 9000)
KEYS = make_keys()
JWKS = jwks_json(KEYS["RS256"]).encode()
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def _proxy(http_filter: dict[str, Any]) -> Harness:
    return Harness(
        bootstrap(
            [listener(("127.0.1.1", 8080), hcm([vhost([route("/")])], http_filters=[http_filter]))],
            [cluster("backend", [UPSTREAM]), cluster("service", [SERVICE])],
        )
    )


def _respond(up: Any, status: int, body: bytes, headers: bytes = b"") -> None:
    up.data_received(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status, len(body), headers, body))  # fmt: skip


# -- jwt_authn ----------------------------------------------------------------------------


def _jwt_filter() -> dict[str, Any]:
    provider = {
        "issuer": "iss",
        "payload_in_metadata": "payload",
        "remote_jwks": {
            "http_uri": {"uri": "http://keys.example/jwks", "cluster": "service", "timeout": "2s"},
            "cache_duration": "60s",
        },
    }
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {"p": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}],
        },
    }


def _bearer(token: str, path: bytes = b"/p", body: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: svc\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
        % (path, token.encode(), len(body))
    ) + body


def test_requests_wait_for_one_jwks_fetch_then_go_with_their_bodies() -> None:
    h = _proxy(_jwt_filter())
    token = KEYS["RS256"].sign({"iss": "iss", "sub": "alice", "exp": 4_000_000_000})
    first, second = h.client(), h.client(("127.0.1.100", 40001))
    first.send(_bearer(token, body=b"hello"))
    second.send(_bearer(tamper(token)))
    # One fetch for both, to the cluster's host, with the URI's host and path.
    assert len(h.connector.pending) == 1
    fetch, fetch_transport = h.upstream()
    target, headers, _ = parse_request(fetch_transport.take())
    assert (target, headers["host"]) == (b"/jwks", "keys.example")
    assert first.transport.take() == b"" and second.transport.take() == b""
    _respond(fetch, 200, JWKS)
    assert (second.reply().status, h.stat("http.ingress.jwt_authn.denied")) == (401, 1)
    _, up_transport = h.upstream()
    target, headers, body = parse_request(up_transport.take())
    assert (target, body) == (b"/p", b"hello") and "authorization" not in headers
    assert h.stat("http.ingress.jwt_authn.jwks_fetch_success") == 1
    # The keys are cached: the next request goes on at once.
    third = h.client(("127.0.1.100", 40002))
    third.send(_bearer(token))
    assert len(h.connector.pending) == 1  # the upstream request, no fetch


def test_a_failed_fetch_fails_the_waiting_requests_and_is_counted() -> None:
    h = _proxy(_jwt_filter())
    token = KEYS["RS256"].sign({"iss": "iss", "exp": 4_000_000_000})
    client = h.client()
    client.send(_bearer(token))
    fetch, _ = h.upstream()
    _respond(fetch, 503, b"down")
    reply = client.reply()
    assert (reply.status, reply.body) == (401, b"Jwks remote fetch is failed")
    assert h.stat("http.ingress.jwt_authn.jwks_fetch_failed") == 1


def test_a_client_that_leaves_stops_waiting_for_the_keys() -> None:
    h = _proxy(_jwt_filter())
    token = KEYS["RS256"].sign({"iss": "iss", "exp": 4_000_000_000})
    client = h.client()
    client.send(_bearer(token))
    client.conn.connection_lost(None)
    fetch, _ = h.upstream()
    _respond(fetch, 200, JWKS)  # the fetch completes for the cache; nobody is answered
    assert client.transport.take() == b"" and h.connector.pending == []
    assert h.stat("http.ingress.jwt_authn.jwks_fetch_success") == 1


# -- ext_authz ----------------------------------------------------------------------------


def _authz_filter(**extra: Any) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "http_service": {
                "server_uri": {"uri": "http://authz", "cluster": "service", "timeout": "1s"},
                "authorization_response": {
                    "allowed_upstream_headers": {"patterns": [{"exact": "x-verdict"}]}
                },
            },
            **extra,
        },
    }


def test_ext_authz_holds_the_request_and_body_until_allowed() -> None:
    h = _proxy(_authz_filter())
    client = h.client()
    client.send(b"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 6\r\n\r\nabc")
    check, check_transport = h.upstream()
    target, headers, body = parse_request(check_transport.take())
    assert (target, headers["host"], headers["content-length"], body) == (b"/p", "svc", "0", b"")
    client.send(b"def")
    assert h.connector.pending == []  # nothing upstream before the answer
    _respond(check, 200, b"", b"x-verdict: yes\r\n")
    _, up_transport = h.upstream()
    target, headers, body = parse_request(up_transport.take())
    assert (target, headers["x-verdict"], body) == (b"/p", "yes", b"abcdef")
    assert h.stat("http.ingress.ext_authz.ok") == 1


def test_ext_authz_buffers_the_body_it_must_send() -> None:
    h = _proxy(_authz_filter(with_request_body={"max_request_bytes": 4}))
    client = h.client()
    client.send(b"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nab")
    assert h.connector.pending == []  # the check waits for the body
    client.send(b"c")
    _, check_transport = h.upstream()
    _, headers, body = parse_request(check_transport.take())
    assert (body, headers["x-envoy-auth-partial-body"]) == (b"abc", "false")


def test_ext_authz_denial_and_a_client_that_leaves() -> None:
    h = _proxy(_authz_filter())
    client = h.client()
    client.send(b"GET /p HTTP/1.1\r\nHost: svc\r\n\r\n")
    check, check_transport = h.upstream()
    _respond(check, 401, b"nope")
    reply = client.reply()
    assert (reply.status, reply.body) == (401, b"nope")
    assert h.stat("http.ingress.ext_authz.denied") == 1
    leaving = h.client(("127.0.1.100", 40001))
    leaving.send(b"GET /p HTTP/1.1\r\nHost: svc\r\n\r\n")
    assert check_transport.take().startswith(b"GET /p ")  # the check reuses the connection
    leaving.conn.connection_lost(None)
    assert check_transport.closed  # the call was abandoned with its stream


def test_ext_authz_without_a_host_is_an_error_unless_failing_open() -> None:
    h = Harness(
        bootstrap(
            [listener(("127.0.1.1", 8080), hcm([vhost([route("/")])], http_filters=[
                _authz_filter(failure_mode_allow=True, failure_mode_allow_header_add=True)]))],
            [cluster("backend", [UPSTREAM]), cluster("service", [])],
        )
    )  # fmt: skip
    client = h.client()
    client.send(b"GET /p HTTP/1.1\r\nHost: svc\r\n\r\n")
    _, up_transport = h.upstream()
    _, headers, _ = parse_request(up_transport.take())
    assert headers["x-envoy-auth-failure-mode-allowed"] == "true"
    assert h.stat("http.ingress.ext_authz.failure_mode_allowed") == 1


# -- RBAC ---------------------------------------------------------------------------------


def test_rbac_answers_before_anything_goes_upstream() -> None:
    rbac = {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {
                "policies": {
                    "get-only": {
                        "permissions": [{"header": {"name": ":method", "exact_match": "GET"}}],
                        "principals": [{"any": True}],
                    }
                }
            },
        },
    }
    h = _proxy(rbac)
    client = h.client()
    client.send(b"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc")
    reply = client.reply()
    assert (reply.status, reply.body) == (403, b"RBAC: access denied")
    assert h.connector.pending == []
    allowed = h.client(("127.0.1.100", 40001))
    allowed.send(b"GET /p HTTP/1.1\r\nHost: svc\r\n\r\n")
    up, _ = h.upstream()
    up.data_received(OK)
    assert allowed.reply().status == 200
    assert (h.stat("http.ingress.rbac.allowed"), h.stat("http.ingress.rbac.denied")) == (1, 1)
