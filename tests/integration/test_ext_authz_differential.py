"""External authorization (``envoy.filters.http.ext_authz``, Istio's CUSTOM action) through
Envoy 1.40 and the pymesh proxy, with real authorizers: an HTTP service (the tests' upstream,
answering by path) and a gRPC ``envoy.service.auth.v3.Authorization`` server. Each row must get
the same answer from both proxies, and the authorizer must have been asked the same thing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc as auth_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import wrappers_pb2
from google.rpc import status_pb2

from tests.proxy.runtime.bootstrap import bootstrap, cluster, hcm, listener, route, vhost
from tests.support import POLICY_NET, address
from tests.support.differential import Exchange, normalize_echo
from tests.support.httpclient import build_request
from tests.support.procs import free_port
from tests.support.upstream import Delay, Echo, Fixed

pytestmark = [pytest.mark.envoy, pytest.mark.timeout(120)]

PROXY = address(POLICY_NET, 3)
BACKEND = address(POLICY_NET, 63)
AUTHZ = address(POLICY_NET, 64)
_T = "type.googleapis.com/"
_IGNORED = {"x-request-id", "content-length"}


def _ext_authz(service: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": _T + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            **service,
            **extra,
        },
    }


def _config(authz_filter: dict[str, Any], backend: Any, authz: Any) -> dict[str, Any]:
    listen = (PROXY, free_port(PROXY))
    return bootstrap(
        [listener(listen, hcm([vhost([route("/")])], http_filters=[authz_filter]))],
        [cluster("backend", [backend]), authz],
    )


def _get(name: str, path: str, method: str = "GET", body: bytes = b"", **headers: str) -> Exchange:
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    return Exchange(build_request(method, path, pairs, body, host="h"), method, name)


def _asked(requests: list[tuple[str, dict[str, str]]]) -> list[tuple[str, dict[str, str]]]:
    return [(what, {k: v for k, v in h.items() if k not in _IGNORED}) for what, h in requests]


# -- the HTTP service -----------------------------------------------------------------------


async def test_http_authorizer(differ: Any, upstream_factory: Any) -> None:
    backend = await upstream_factory(BACKEND, 0, default=Echo())
    allowed = (("x-ext-authz-check-result", "allowed"), ("x-up", "1"), ("x-client-ok", "2"))
    authorizer = await upstream_factory(
        AUTHZ,
        0,
        routes={
            "/check/allow*": Fixed(200, b"ok", (*allowed, ("x-other", "3"))),
            "/check/deny": Fixed(403, b"denied", (("x-denied", "yes"), ("www-authenticate", "x"))),
            "/check/redirect": Fixed(302, b"go", (("location", "http://login/"),)),
            "/check/json": Fixed(401, b'{"error": 1}', (("content-type", "application/json"),)),
            "/check/error": Fixed(500, b"boom"),
            "/check/slow": Delay(3, Fixed(200)),
        },
        default=Fixed(403, b"no rule"),
    )
    service = {
        "http_service": {
            "server_uri": {"uri": "http://ext-authz.foo:8000", "cluster": "authz", "timeout": "1s"},
            "path_prefix": "/check",
            "authorization_request": {"headers_to_add": [{"key": "x-added", "value": "v"}]},
            "authorization_response": {
                "allowed_upstream_headers": {
                    "patterns": [{"prefix": "x-ext-authz-", "ignore_case": True}, {"exact": "x-up"}]
                },
                "allowed_client_headers": {"patterns": [{"exact": "x-denied"}]},
                "allowed_client_headers_on_success": {"patterns": [{"exact": "x-client-ok"}]},
            },
        },
        "allowed_headers": {"patterns": [{"exact": "x-ext-authz"}, {"prefix": "x-pass"}]},
        "with_request_body": {"max_request_bytes": 8, "allow_partial_message": True},
    }
    rows = [
        _get(
            "allowed", "/allow?q=1", x_ext_authz="yes", x_pass_me="1", x_drop="2", authorization="a"
        ),
        _get("allowed with a body", "/allow", "POST", b"0123456789abc"),
        _get("denied", "/deny"),
        _get("denied, redirect", "/redirect"),
        _get("denied, a JSON body", "/json"),
        _get("authorizer error", "/error"),
        _get("authorizer too slow", "/slow"),
        _get("no rule", "/other"),
    ]
    asked: dict[str, list[tuple[str, dict[str, str]]]] = {}

    def reset(kind: str) -> None:
        authorizer.reset()
        backend.reset()

    async def record(kind: str, proxy: Any) -> None:
        asked[kind] = _asked([(r.target, r.headers) for r in authorizer.received])

    config = _config(_ext_authz(service), backend.address, cluster("authz", [authorizer.address]))
    volatile = {"date", "x-request-id", "x-envoy-upstream-service-time", "content-length"}
    report = await differ(
        config,
        rows,
        body=normalize_echo,
        before_each=reset,
        after_each=record,
        volatile_headers=volatile,
    )
    report.assert_same()
    assert asked["envoy"] == asked["pymesh"]
    statuses = [o.status for o in report.observed["envoy"]]
    assert statuses == [200, 200, 403, 302, 401, 403, 403, 403], statuses


# -- the gRPC service -----------------------------------------------------------------------


def _option(key: str, value: str, append: bool | None = None) -> Any:
    option = base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value))
    if append is not None:
        option.append.CopyFrom(wrappers_pb2.BoolValue(value=append))
    return option


class _Authorizer(auth_grpc.AuthorizationServicer):
    """Decides on the request's ``x-ext-authz`` header; remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, dict[str, str]]] = []

    async def Check(self, request: Any, context: Any) -> Any:
        http = request.attributes.request.http
        self.asked.append((f"{http.method} {http.path} {http.host}", dict(http.headers)))
        verdict = http.headers.get("x-ext-authz", "")
        if verdict == "allow":
            ok = auth_pb2.OkHttpResponse(
                headers=[_option("x-set", "s"), _option("x-app", "a", True)],
                headers_to_remove=["x-remove-me"],
                response_headers_to_add=[_option("x-resp", "r")],
            )
            return auth_pb2.CheckResponse(status=status_pb2.Status(code=0), ok_response=ok)
        if verdict == "deny":
            denied = auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=401),
                headers=[_option("x-why", "because")],
                body="go away",
            )
            return auth_pb2.CheckResponse(status=status_pb2.Status(code=7), denied_response=denied)
        if verdict == "error":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        return auth_pb2.CheckResponse(status=status_pb2.Status(code=16))


@pytest.fixture
async def grpc_authorizer() -> AsyncIterator[tuple[_Authorizer, tuple[str, int]]]:
    servicer = _Authorizer()
    server = grpc.aio.server()
    auth_grpc.add_AuthorizationServicer_to_server(servicer, server)
    where = (AUTHZ, free_port(AUTHZ))
    server.add_insecure_port(f"{where[0]}:{where[1]}")
    await server.start()
    yield servicer, where
    await server.stop(0)


async def test_grpc_authorizer(differ: Any, upstream_factory: Any, grpc_authorizer: Any) -> None:
    servicer, where = grpc_authorizer
    backend = await upstream_factory(BACKEND, 0, default=Echo())
    service = {
        "grpc_service": {
            "envoy_grpc": {"cluster_name": "authz", "authority": "ext-authz.foo"},
            "timeout": "1s",
        }
    }
    authz = cluster("authz", [where])
    # Envoy speaks gRPC through a cluster that says HTTP/2; pymesh's gRPC client speaks
    # HTTP/2 by itself and its clusters do not (yet) take HTTP/2 options.
    envoy_authz = {
        **authz,
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _T + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }
    rows = [
        _get("allowed", "/p?q=1", x_ext_authz="allow", x_remove_me="1", x_app="orig"),
        _get("denied with a status", "/p", x_ext_authz="deny"),
        _get("denied without one", "/p", x_ext_authz="other"),
        _get("authorizer error", "/p", x_ext_authz="error"),
        _get("no header", "/p", "POST", b"hello"),
    ]
    results: dict[str, Any] = {}
    asked: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for kind, authz_cluster in (("envoy", envoy_authz), ("pymesh", authz)):
        servicer.asked.clear()
        config = _config(_ext_authz(service), backend.address, authz_cluster)
        results[kind] = await differ(config, rows, kinds=(kind,), body=normalize_echo)
        asked[kind] = _asked(servicer.asked)
    assert [o for o in results["envoy"].observed["envoy"]] == [
        o for o in results["pymesh"].observed["pymesh"]
    ]
    assert asked["envoy"] == asked["pymesh"]
    statuses = [o.status for o in results["envoy"].observed["envoy"]]
    assert statuses == [200, 401, 403, 403, 403], statuses
