"""``envoy.filters.http.ext_authz`` / ``envoy.filters.network.ext_authz`` (and the HTTP filter's
``ExtAuthzPerRoute``) → :class:`ExtAuthzConfig`. Fields outside ``EXT_AUTHZ_SUPPORTED`` are
refused with their path (retries of the HTTP service, header mutation rules, CEL ...)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.config.model_common import StringMatcher
from proxy.config.translate.common import at, duration, fractional_percent, join, string_matcher
from proxy.config.translate.rbac import metadata_matcher
from proxy.security.matchers import MetadataMatcher
from pymesh.errors import ValidationError

__all__ = [
    "EXT_AUTHZ_SUPPORTED",
    "BodySettings",
    "ExtAuthzConfig",
    "ExtAuthzPerRoute",
    "GrpcAuthzService",
    "HttpAuthzService",
    "ext_authz",
    "ext_authz_per_route",
    "network_ext_authz",
]

_HTTP = "envoy.extensions.filters.http.ext_authz.v3."
_MATCHER = "envoy.type.matcher.v3."

EXT_AUTHZ_SUPPORTED: dict[str, frozenset[str]] = {
    name: frozenset(fields.split())
    for name, fields in {
        _HTTP + "ExtAuthz": "grpc_service http_service transport_api_version failure_mode_allow "
        "failure_mode_allow_header_add with_request_body status_on_error filter_enabled "
        "filter_enabled_metadata deny_at_disable include_peer_certificate include_tls_session "
        "stat_prefix allowed_headers disallowed_headers metadata_context_namespaces "
        "clear_route_cache",
        "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz": "stat_prefix grpc_service "
        "failure_mode_allow include_peer_certificate transport_api_version "
        "filter_enabled_metadata include_tls_session",
        _HTTP + "HttpService": "server_uri path_prefix authorization_request "
        "authorization_response",
        _HTTP + "AuthorizationRequest": "headers_to_add",
        _HTTP + "AuthorizationResponse": "allowed_upstream_headers "
        "allowed_upstream_headers_to_append allowed_client_headers "
        "allowed_client_headers_on_success",
        _HTTP + "BufferSettings": "max_request_bytes allow_partial_message pack_as_bytes",
        _HTTP + "ExtAuthzPerRoute": "disabled check_settings",
        _HTTP + "CheckSettings": "context_extensions disable_request_body_buffering",
        "envoy.config.core.v3.HttpUri": "uri cluster timeout",
        "envoy.config.core.v3.GrpcService": "envoy_grpc timeout",
        "envoy.config.core.v3.GrpcService.EnvoyGrpc": "cluster_name authority",
        "envoy.config.core.v3.HeaderValue": "key value raw_value",
        "envoy.type.v3.HttpStatus": "code",
        "envoy.config.core.v3.RuntimeFeatureFlag": "default_value runtime_key",
        _MATCHER + "ListStringMatcher": "patterns",
    }.items()
}


@dataclass(frozen=True, slots=True)
class GrpcAuthzService:
    cluster: str
    authority: str
    timeout: float


@dataclass(frozen=True, slots=True)
class HttpAuthzService:
    uri: str
    cluster: str
    timeout: float
    path_prefix: bytes = b""
    headers_to_add: tuple[tuple[bytes, bytes], ...] = ()
    upstream: tuple[StringMatcher, ...] = ()
    upstream_append: tuple[StringMatcher, ...] = ()
    client: tuple[StringMatcher, ...] | None = None  # None: every header but Host
    client_on_success: tuple[StringMatcher, ...] = ()


@dataclass(frozen=True, slots=True)
class BodySettings:
    max_request_bytes: int
    allow_partial_message: bool = False
    pack_as_bytes: bool = False


@dataclass(frozen=True, slots=True)
class ExtAuthzConfig:
    """``allowed_headers`` None sends every header (gRPC) or only the defaults (HTTP)."""

    service: GrpcAuthzService | HttpAuthzService
    failure_mode_allow: bool = False
    failure_mode_allow_header_add: bool = False
    status_on_error: int = 403
    with_request_body: BodySettings | None = None
    filter_enabled: float | None = None
    filter_enabled_metadata: MetadataMatcher | None = None
    deny_at_disable: bool = False
    include_peer_certificate: bool = False
    include_tls_session: bool = False
    stat_prefix: str = ""
    allowed_headers: tuple[StringMatcher, ...] | None = None
    disallowed_headers: tuple[StringMatcher, ...] = ()
    metadata_context_namespaces: tuple[str, ...] = ()
    clear_route_cache: bool = False


@dataclass(frozen=True, slots=True)
class ExtAuthzPerRoute:
    disabled: bool = False
    context_extensions: Mapping[str, str] = field(default_factory=dict)
    disable_request_body_buffering: bool = False


def _patterns(message: Any, path: str) -> tuple[StringMatcher, ...]:
    return tuple(
        string_matcher(item, at(join(path, "patterns"), index))
        for index, item in enumerate(message.patterns)
    )


def _grpc(message: Any, path: str) -> GrpcAuthzService:
    if message.WhichOneof("target_specifier") != "envoy_grpc":
        raise ValidationError("only envoy_grpc is supported", path=path)
    target = message.envoy_grpc
    if not target.cluster_name:
        raise ValidationError(
            "cluster_name must not be empty", path=join(path, "envoy_grpc.cluster_name")
        )
    timeout = duration(message.timeout) if message.HasField("timeout") else 0.2
    return GrpcAuthzService(target.cluster_name, target.authority or target.cluster_name, timeout)


def _http(message: Any, path: str) -> HttpAuthzService:
    uri = message.server_uri
    if not uri.uri or not uri.cluster:
        raise ValidationError("server_uri needs uri and cluster", path=join(path, "server_uri"))
    request = message.authorization_request
    response = message.authorization_response
    client = (
        _patterns(response.allowed_client_headers, join(path, "allowed_client_headers"))
        if response.HasField("allowed_client_headers")
        else None
    )
    return HttpAuthzService(
        uri=uri.uri,
        cluster=uri.cluster,
        timeout=duration(uri.timeout),
        path_prefix=message.path_prefix.encode("latin-1"),
        headers_to_add=tuple(
            (h.key.lower().encode("latin-1"), (h.value or h.raw_value.decode()).encode("latin-1"))
            for h in request.headers_to_add
        ),
        upstream=_patterns(response.allowed_upstream_headers, path),
        upstream_append=_patterns(response.allowed_upstream_headers_to_append, path),
        client=client,
        client_on_success=_patterns(response.allowed_client_headers_on_success, path),
    )


def ext_authz(message: Any, path: str) -> ExtAuthzConfig:
    kind = message.WhichOneof("services")
    if kind == "grpc_service":
        service: GrpcAuthzService | HttpAuthzService = _grpc(
            message.grpc_service, join(path, "grpc_service")
        )
    elif kind == "http_service":
        service = _http(message.http_service, join(path, "http_service"))
    else:
        raise ValidationError(
            "one of [grpc_service, http_service] is required", path=join(path, "services")
        )
    body = None
    if message.HasField("with_request_body"):
        spec = message.with_request_body
        body = BodySettings(spec.max_request_bytes, spec.allow_partial_message, spec.pack_as_bytes)
    return ExtAuthzConfig(
        service=service,
        failure_mode_allow=message.failure_mode_allow,
        failure_mode_allow_header_add=message.failure_mode_allow_header_add,
        status_on_error=message.status_on_error.code or 403,
        with_request_body=body,
        filter_enabled=(
            fractional_percent(message.filter_enabled.default_value)
            if message.HasField("filter_enabled")
            else None
        ),
        filter_enabled_metadata=(
            metadata_matcher(message.filter_enabled_metadata, join(path, "filter_enabled_metadata"))
            if message.HasField("filter_enabled_metadata")
            else None
        ),
        deny_at_disable=message.deny_at_disable.default_value.value,
        include_peer_certificate=message.include_peer_certificate,
        include_tls_session=message.include_tls_session,
        stat_prefix=message.stat_prefix,
        allowed_headers=(
            _patterns(message.allowed_headers, join(path, "allowed_headers"))
            if message.HasField("allowed_headers")
            else None
        ),
        disallowed_headers=_patterns(message.disallowed_headers, join(path, "disallowed_headers")),
        metadata_context_namespaces=tuple(message.metadata_context_namespaces),
        clear_route_cache=message.clear_route_cache,
    )


def ext_authz_per_route(message: Any, path: str) -> ExtAuthzPerRoute:
    settings = message.check_settings
    return ExtAuthzPerRoute(
        disabled=message.disabled,
        context_extensions=dict(settings.context_extensions),
        disable_request_body_buffering=settings.disable_request_body_buffering,
    )


def network_ext_authz(message: Any, path: str) -> ExtAuthzConfig:
    if not message.HasField("grpc_service"):
        raise ValidationError("grpc_service is required", path=join(path, "grpc_service"))
    return ExtAuthzConfig(
        service=_grpc(message.grpc_service, join(path, "grpc_service")),
        failure_mode_allow=message.failure_mode_allow,
        filter_enabled_metadata=(
            metadata_matcher(message.filter_enabled_metadata, join(path, "filter_enabled_metadata"))
            if message.HasField("filter_enabled_metadata")
            else None
        ),
        include_peer_certificate=message.include_peer_certificate,
        include_tls_session=message.include_tls_session,
        stat_prefix=message.stat_prefix,
    )
