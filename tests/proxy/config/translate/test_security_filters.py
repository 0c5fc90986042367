"""The security filters' configs: what the proxy takes, and what it refuses with the field's
path (never accepted and ignored)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from google.protobuf import json_format

from proxy.config.translate import default_registry, translate_listener
from proxy.config.translate.ext_authz import ExtAuthzConfig, GrpcAuthzService
from proxy.config.translate.jwt_authn import JwtAuthnConfig
from pymesh.errors import UnsupportedError, ValidationError

_T = "type.googleapis.com/envoy.extensions.filters."
_HCM = "network.http_connection_manager.v3.HttpConnectionManager"
JWKS = '{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}'


def _listener(http_filters: list[dict[str, Any]], network: tuple[Any, ...] = ()) -> Any:
    hcm = {
        "name": "hcm",
        "typed_config": {
            "@type": _T + _HCM,
            "stat_prefix": "x",
            "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"]}]},
            "http_filters": [
                *http_filters,
                {"name": "r", "typed_config": {"@type": _T + "http.router.v3.Router"}},
            ],
        },
    }
    body = {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [*network, hcm]}],
    }
    registry = default_registry()  # imports the filters' protos, which parsing needs
    return translate_listener(json_format.ParseDict(body, listener_pb2.Listener()), registry)


def _jwt(**config: Any) -> dict[str, Any]:
    providers = {"p": {"issuer": "i", "local_jwks": {"inline_string": JWKS}}}
    body = {
        "providers": providers,
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}],
    }
    body.update(config)
    kind = _T + "http.jwt_authn.v3.JwtAuthentication"
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {"@type": kind, **body}}


def _filters(listener: Any) -> list[Any]:
    return list(listener.filter_chains[0].filters[-1].config.http_filters)


def test_jwt_authn_translates() -> None:
    [jwt, _] = _filters(_listener([_jwt()]))
    assert isinstance(jwt.config, JwtAuthnConfig)
    assert list(jwt.config.providers) == ["p"]


@pytest.mark.parametrize(
    ("change", "error", "path"),
    [
        ({"filter_state_rules": {"name": "x"}}, UnsupportedError, "filter_state_rules"),
        ({"providers": {"p": {"issuer": "i", "local_jwks": {"inline_string": JWKS},
                              "jwt_cache_config": {"jwt_cache_size": 10}}}},
         UnsupportedError, "providers[p].jwt_cache_config"),
        ({"rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "nope"}}]},
         ValidationError, "rules[0].requires.provider_name"),
        ({"rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
            {"provider_name": "p"}]}}}]}, ValidationError, "requires_any.requirements"),
        ({"rules": [{"match": {"prefix": "/"}, "requirement_name": "missing"}]},
         ValidationError, "rules[0].requirement_name"),
    ],
)  # fmt: skip
def test_jwt_authn_refusals(change: dict[str, Any], error: type[Exception], path: str) -> None:
    with pytest.raises(error) as caught:
        _listener([_jwt(**change)])
    assert path in str(caught.value)


def _ext_authz(**config: Any) -> dict[str, Any]:
    body = {"grpc_service": {"envoy_grpc": {"cluster_name": "authz"}}, **config}
    kind = _T + "http.ext_authz.v3.ExtAuthz"
    return {"name": "envoy.filters.http.ext_authz", "typed_config": {"@type": kind, **body}}


def test_ext_authz_translates_and_refuses() -> None:
    [authz, _] = _filters(_listener([_ext_authz(status_on_error={"code": 503})]))
    assert isinstance(authz.config, ExtAuthzConfig)
    assert authz.config.service == GrpcAuthzService("authz", "authz", 0.2)
    assert authz.config.status_on_error == 503
    with pytest.raises(UnsupportedError, match="validate_mutations"):
        _listener([_ext_authz(validate_mutations=True)])
    with pytest.raises(ValidationError, match="grpc_service, http_service"):
        _listener([{"name": "a", "typed_config": {"@type": _T + "http.ext_authz.v3.ExtAuthz"}}])


def test_network_filters_go_before_the_tcp_proxy_only() -> None:
    rbac = {
        "name": "envoy.filters.network.rbac",
        "typed_config": {"@type": _T + "network.rbac.v3.RBAC", "stat_prefix": "tcp."},
    }
    with pytest.raises(UnsupportedError, match="before the HTTP connection manager"):
        _listener([], (rbac,))
    # A network filter's type URL is no HTTP filter.
    with pytest.raises(UnsupportedError, match="not supported by pymesh"):
        _listener([{"name": "x", "typed_config": rbac["typed_config"]}])
