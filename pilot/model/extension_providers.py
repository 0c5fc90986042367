"""MeshConfig ``extensionProviders``: the external authorizers a CUSTOM AuthorizationPolicy
names (``envoyExtAuthzHttp`` / ``envoyExtAuthzGrpc``), read the way istiod reads them, and
the telemetry backends Telemetry rules name (``zipkin``, ``envoyHttpAls`` ...: their
``service`` and ``port``); plus ``defaultProviders``, the providers used when a Telemetry
names none.

Providers of other kinds are kept by name only, so a rule naming one is told it is not
supported rather than that it does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from pymesh.config.durations import parse_duration
from pymesh.errors import ValidationError

__all__ = [
    "BUILTIN_PROVIDERS",
    "ExtAuthzProvider",
    "ExtensionProvider",
    "RequestBody",
    "parse_default_providers",
    "parse_extension_providers",
]

#: providers every mesh has without declaring them (Istio's built-ins)
BUILTIN_PROVIDERS = frozenset({"prometheus", "envoy"})
#: provider kinds with a collector at ``service:port`` (tracers and access-log services)
_COLLECTOR_KINDS = frozenset(
    {"zipkin", "opentelemetry", "envoyHttpAls", "envoyTcpAls", "envoyOtelAls", "skywalking",
     "datadog", "lightstep"}
)  # fmt: skip
_DEFAULT_KINDS = ("tracing", "metrics", "accessLogging")

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_AUTHZ_KINDS = ("envoyExtAuthzHttp", "envoyExtAuthzGrpc")
_HTTP_FIELDS = frozenset(
    {
        "service",
        "port",
        "timeout",
        "pathPrefix",
        "failOpen",
        "clearRouteCache",
        "statusOnError",
        "includeRequestHeadersInCheck",
        "includeHeadersInCheck",
        "includeAdditionalHeadersInCheck",
        "includeRequestBodyInCheck",
        "headersToUpstreamOnAllow",
        "headersToDownstreamOnDeny",
        "headersToDownstreamOnAllow",
    }
)
_GRPC_FIELDS = frozenset(
    {"service", "port", "timeout", "failOpen", "clearRouteCache", "statusOnError",
     "includeRequestBodyInCheck"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class RequestBody:
    max_request_bytes: int = 0
    allow_partial_message: bool = False
    pack_as_bytes: bool = False


@dataclass(frozen=True, slots=True)
class ExtAuthzProvider:
    """An ``envoyExtAuthzHttp`` (``grpc`` False) or ``envoyExtAuthzGrpc`` provider."""

    grpc: bool
    service: str
    port: int
    timeout: float | None = None
    path_prefix: str = ""
    fail_open: bool = False
    status_on_error: int | None = None
    include_request_headers: tuple[str, ...] = ()
    include_additional_headers: tuple[tuple[str, str], ...] = ()
    request_body: RequestBody | None = None
    headers_to_upstream_on_allow: tuple[str, ...] = ()
    headers_to_downstream_on_deny: tuple[str, ...] = ()
    headers_to_downstream_on_allow: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExtensionProvider:
    name: str
    ext_authz: ExtAuthzProvider | None = None
    kind: str = field(default="")
    #: a collector's address (telemetry kinds)
    service: str = ""
    port: int = 0

    @property
    def address(self) -> str:
        return f"{self.service}:{self.port}"


def _fail(source: str, path: str, message: str) -> ValidationError:
    return ValidationError(message, source=source, path=path)


def _strings(value: Any, path: str, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(source, path, f"must be a list of non-empty strings, got {value!r}")
    for i, v in enumerate(value):
        if v == "*":
            raise _fail(
                source,
                f"{path}[{i}]",
                'a single wildcard ("*") is not supported, use a prefix or suffix match',
            )
    return tuple(value)


def _ext_authz(kind: str, body: Mapping[str, Any], path: str, source: str) -> ExtAuthzProvider:
    grpc = kind == "envoyExtAuthzGrpc"
    allowed = _GRPC_FIELDS if grpc else _HTTP_FIELDS
    for key in body:
        if key not in allowed:
            raise _fail(source, f"{path}.{key}", f"unknown field {key!r} in {kind}")
    service = body.get("service")
    if not isinstance(service, str) or not service:
        raise _fail(source, f"{path}.service", "service is required")
    port = body.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise _fail(source, f"{path}.port", f"port must be in the range [1, 65535], got {port!r}")
    timeout = None
    if "timeout" in body:
        try:
            timeout = parse_duration(body["timeout"])
        except (TypeError, ValueError) as e:
            raise _fail(source, f"{path}.timeout", str(e)) from None
    status = None
    if body.get("statusOnError"):
        raw = body["statusOnError"]
        try:
            status = int(str(raw))
            HTTPStatus(status)
        except ValueError:
            raise _fail(
                source, f"{path}.statusOnError", f"unsupported statusOnError {raw!r}"
            ) from None
    prefix = body.get("pathPrefix", "")
    if prefix and (not isinstance(prefix, str) or not prefix.startswith("/")):
        raise _fail(source, f"{path}.pathPrefix", f"pathPrefix must begin with /, got {prefix!r}")
    extra = body.get("includeAdditionalHeadersInCheck") or {}
    if not isinstance(extra, Mapping):
        raise _fail(source, f"{path}.includeAdditionalHeadersInCheck", "must be a mapping")
    request_body = None
    if body.get("includeRequestBodyInCheck") is not None:
        rb = body["includeRequestBodyInCheck"]
        if not isinstance(rb, Mapping):
            raise _fail(source, f"{path}.includeRequestBodyInCheck", "must be a mapping")
        request_body = RequestBody(
            max_request_bytes=int(rb.get("maxRequestBytes", 0)),
            allow_partial_message=bool(rb.get("allowPartialMessage", False)),
            pack_as_bytes=bool(rb.get("packAsBytes", False)),
        )
    headers = body.get("includeRequestHeadersInCheck") or body.get("includeHeadersInCheck")
    return ExtAuthzProvider(
        grpc=grpc,
        service=service,
        port=port,
        timeout=timeout,
        path_prefix=prefix,
        fail_open=bool(body.get("failOpen", False)),
        status_on_error=status,
        include_request_headers=_strings(headers, f"{path}.includeRequestHeadersInCheck", source),
        include_additional_headers=tuple(sorted((str(k), str(v)) for k, v in extra.items())),
        request_body=request_body,
        headers_to_upstream_on_allow=_strings(
            body.get("headersToUpstreamOnAllow"), f"{path}.headersToUpstreamOnAllow", source
        ),
        headers_to_downstream_on_deny=_strings(
            body.get("headersToDownstreamOnDeny"), f"{path}.headersToDownstreamOnDeny", source
        ),
        headers_to_downstream_on_allow=_strings(
            body.get("headersToDownstreamOnAllow"), f"{path}.headersToDownstreamOnAllow", source
        ),
    )


def parse_extension_providers(value: Any, source: str) -> tuple[ExtensionProvider, ...]:
    """``extensionProviders`` of a mesh config; names must be unique DNS labels."""
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise _fail(source, "extensionProviders", "must be a list")
    found: list[ExtensionProvider] = []
    for i, item in enumerate(value):
        path = f"extensionProviders[{i}]"
        if not isinstance(item, Mapping):
            raise _fail(source, path, "must be a mapping")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _fail(
                source,
                f"{path}.name",
                f"provider name must be a lower-case DNS label (a-z, 0-9, -), got {name!r}",
            )
        if any(p.name == name for p in found):
            raise _fail(source, f"{path}.name", f"duplicate extension provider name {name!r}")
        kinds = [k for k in item if k != "name"]
        if len(kinds) != 1:
            raise _fail(source, path, f"exactly one provider kind expected, got {kinds}")
        kind = kinds[0]
        body = item[kind]
        if kind in _AUTHZ_KINDS:
            if not isinstance(body, Mapping):
                raise _fail(source, f"{path}.{kind}", "must be a mapping")
            authz = _ext_authz(kind, body, f"{path}.{kind}", source)
            found.append(ExtensionProvider(name, authz, kind))
        elif kind in _COLLECTOR_KINDS:
            service, port = _collector(body, f"{path}.{kind}", source)
            found.append(ExtensionProvider(name, None, kind, service, port))
        else:
            found.append(ExtensionProvider(name, None, kind))
    return tuple(found)


def _collector(body: Any, path: str, source: str) -> tuple[str, int]:
    if not isinstance(body, Mapping):
        raise _fail(source, path, "must be a mapping")
    service, port = body.get("service"), body.get("port")
    if not isinstance(service, str) or not service:
        raise _fail(source, f"{path}.service", "service is required")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise _fail(source, f"{path}.port", f"port must be in the range [1, 65535], got {port!r}")
    return service, port


def parse_default_providers(
    value: Any, providers: Sequence[ExtensionProvider], source: str
) -> Mapping[str, tuple[str, ...]]:
    """``defaultProviders``: ``tracing``, ``metrics``, ``accessLogging`` → provider names, each
    a built-in or one of ``providers``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(source, "defaultProviders", "must be a mapping")
    out: dict[str, tuple[str, ...]] = {}
    for kind, names in value.items():
        path = f"defaultProviders.{kind}"
        if kind not in _DEFAULT_KINDS:
            raise _fail(source, path, f"unknown field, expected one of {_DEFAULT_KINDS}")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _fail(source, path, "must be a list of provider names")
        for name in names:
            if name not in BUILTIN_PROVIDERS and not any(p.name == name for p in providers):
                raise _fail(source, path, f"no extension provider named {name!r}")
        out[kind] = tuple(names)
    return out
