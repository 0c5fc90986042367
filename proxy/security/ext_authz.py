"""External authorization, sans I/O: what ``ext_authz`` asks an authorizer and what its answer
means, for the gRPC service (``envoy.service.auth.v3.Authorization/Check``) and the plain HTTP
one, with Envoy 1.40's rules.

* gRPC: the ``CheckRequest`` carries the peers (addresses, the client's principal), the
  request (id, method, headers, path, host, scheme, size, protocol, body) and the route's
  context extensions. ``status.code`` 0 allows, with the ``ok_response`` edits (headers to set,
  append and remove, query parameters, headers for the client, dynamic metadata); anything
  else denies with ``denied_response`` (403 unless it names a status).
* HTTP: the authorizer gets the request's method, the path after ``path_prefix``, the Host
  and the allowed headers (always ``authorization``, plus ``allowed_headers``), the added
  headers and the buffered body. 200 allows (its headers matching ``allowed_upstream_headers``
  go upstream, those matching ``allowed_client_headers_on_success`` to the client); a 5xx is
  an error; any other status denies with its status, body and the headers matching
  ``allowed_client_headers`` (plus ``WWW-Authenticate``, ``Location`` and the like, as Envoy
  always passes them).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import address_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2
from google.protobuf import json_format, struct_pb2

from proxy.config.model_common import StringMatcher

__all__ = [
    "CheckAnswer",
    "CheckRequestFacts",
    "Verdict",
    "answer_from_grpc",
    "answer_from_http",
    "check_request",
    "http_check_headers",
]

Headers = list[tuple[bytes, bytes]]

# Headers the HTTP service always sends the authorizer (Envoy's defaults, with the pseudo
# headers it turns into the request line and Host).
_HTTP_ALWAYS = frozenset({b"authorization"})
# Headers a denial from the HTTP service always passes to the client.
_DENIAL_ALWAYS = frozenset({b"www-authenticate", b"location"})
_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te"})


class Verdict(enum.Enum):
    OK = "ok"
    DENIED = "denied"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class CheckAnswer:
    """What to do with the request: on OK, the edits; on DENIED, the reply."""

    verdict: Verdict
    status: int = 403
    body: bytes = b""
    headers_to_set: tuple[tuple[bytes, bytes], ...] = ()
    headers_to_append: tuple[tuple[bytes, bytes], ...] = ()
    headers_to_remove: tuple[bytes, ...] = ()
    response_headers: tuple[tuple[bytes, bytes], ...] = ()
    query_to_set: tuple[tuple[str, str], ...] = ()
    query_to_remove: tuple[str, ...] = ()
    dynamic_metadata: Mapping[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass(frozen=True, slots=True)
class CheckRequestFacts:
    """What the filter knows about the request, as plain values."""

    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    source_principal: str
    method: bytes
    path: bytes
    host: bytes
    scheme: bytes
    protocol: str
    headers: Headers
    request_id: bytes
    start_seconds: float
    body: bytes | None = None
    sni: str | None = None
    context_extensions: Mapping[str, str] = field(default_factory=dict)
    metadata_context: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _allowed(name: bytes, allowed: Sequence[StringMatcher] | None) -> bool:
    return allowed is None or any(m.matches(name) for m in allowed)


def _address(addr: tuple[str, int] | None) -> address_pb2.Address:
    if addr is None:
        return address_pb2.Address()
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=addr[0], port_value=addr[1])
    )


def check_request(
    facts: CheckRequestFacts,
    *,
    allowed: Sequence[StringMatcher] | None,
    disallowed: Sequence[StringMatcher],
    pack_as_bytes: bool = False,
) -> external_auth_pb2.CheckRequest:
    """The gRPC ``CheckRequest`` for one request (``facts.headers`` already include the
    pseudo-headers' values as Envoy's header map has them)."""
    joined: dict[str, str] = {}
    for name, value in facts.headers:
        if not _allowed(name, allowed) or any(m.matches(name) for m in disallowed):
            continue
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        joined[key] = f"{joined[key]},{text}" if key in joined else text
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        id=facts.request_id.decode("latin-1"),
        method=facts.method.decode("latin-1"),
        headers=joined,
        path=facts.path.decode("latin-1"),
        host=facts.host.decode("latin-1"),
        scheme=facts.scheme.decode("latin-1"),
        # Envoy reports the size of the body it buffered for the check, 0 otherwise.
        size=len(facts.body) if facts.body is not None else 0,
        protocol=facts.protocol,
    )
    if facts.body is not None:
        if pack_as_bytes:
            http.raw_body = facts.body
        else:
            http.body = facts.body.decode("utf-8", "replace")
    attributes = attribute_context_pb2.AttributeContext(
        source=attribute_context_pb2.AttributeContext.Peer(
            address=_address(facts.source), principal=facts.source_principal
        ),
        destination=attribute_context_pb2.AttributeContext.Peer(
            address=_address(facts.destination)
        ),
        request=attribute_context_pb2.AttributeContext.Request(http=http),
        context_extensions=dict(facts.context_extensions),
    )
    attributes.request.time.FromNanoseconds(int(facts.start_seconds * 1e9))
    for namespace, values in facts.metadata_context.items():
        struct = struct_pb2.Struct()
        struct.update(dict(values))
        attributes.metadata_context.filter_metadata[namespace].CopyFrom(struct)
    if facts.sni is not None:
        attributes.tls_session.sni = facts.sni
    return external_auth_pb2.CheckRequest(attributes=attributes)


def _pairs(options: Any) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """HeaderValueOptions → (to set, to append): ``append: true`` appends; unset or false
    overwrites, as ext_authz reads them."""
    to_set: list[tuple[bytes, bytes]] = []
    to_append: list[tuple[bytes, bytes]] = []
    for option in options:
        pair = (
            option.header.key.lower().encode("latin-1"),
            (option.header.value or option.header.raw_value.decode("latin-1")).encode("latin-1"),
        )
        append = option.HasField("append") and option.append.value
        (to_append if append else to_set).append(pair)
    return to_set, to_append


def answer_from_grpc(response: Any) -> CheckAnswer:
    metadata = json_format.MessageToDict(response.dynamic_metadata)
    if response.status.code == 0:
        ok = response.ok_response
        to_set, to_append = _pairs(ok.headers)
        client_set, client_append = _pairs(ok.response_headers_to_add)
        ok_metadata = json_format.MessageToDict(ok.dynamic_metadata)
        return CheckAnswer(
            Verdict.OK,
            headers_to_set=tuple(to_set),
            headers_to_append=tuple(to_append),
            headers_to_remove=tuple(h.lower().encode("latin-1") for h in ok.headers_to_remove),
            response_headers=tuple(client_set + client_append),
            query_to_set=tuple((q.key, q.value) for q in ok.query_parameters_to_set),
            query_to_remove=tuple(ok.query_parameters_to_remove),
            dynamic_metadata={**metadata, **ok_metadata},
        )
    denied = response.denied_response
    to_set, to_append = _pairs(denied.headers)
    return CheckAnswer(
        Verdict.DENIED,
        status=denied.status.code or 403,
        body=denied.body.encode("utf-8"),
        response_headers=tuple(to_set + to_append),
        dynamic_metadata=metadata,
    )


def http_check_headers(
    headers: Headers,
    host: bytes,
    *,
    allowed: Sequence[StringMatcher] | None,
    disallowed: Sequence[StringMatcher],
    headers_to_add: Sequence[tuple[bytes, bytes]],
) -> Headers:
    """The authorizer's request headers: Host, ``authorization`` and the allowed ones (none
    more by default), then the configured additions."""
    out: Headers = [(b"host", host)]
    for name, value in headers:
        if name in (b"host", b"content-length", b"transfer-encoding") or name in _HOP:
            continue
        if any(m.matches(name) for m in disallowed):
            continue
        if name in _HTTP_ALWAYS or (allowed is not None and _allowed(name, allowed)):
            out.append((name, value))
    out.extend(headers_to_add)
    return out


def answer_from_http(
    status: int,
    headers: Headers,
    body: bytes,
    *,
    upstream: Sequence[StringMatcher],
    upstream_append: Sequence[StringMatcher],
    client: Sequence[StringMatcher] | None,
    client_on_success: Sequence[StringMatcher],
) -> CheckAnswer:
    if status >= 500:
        return CheckAnswer(Verdict.ERROR, error=f"authorization server answered {status}")
    if status == 200:
        return CheckAnswer(
            Verdict.OK,
            headers_to_set=tuple((k, v) for k, v in headers if any(m.matches(k) for m in upstream)),
            headers_to_append=tuple(
                (k, v) for k, v in headers if any(m.matches(k) for m in upstream_append)
            ),
            response_headers=tuple(
                (k, v) for k, v in headers if any(m.matches(k) for m in client_on_success)
            ),
        )
    passed = tuple(
        (k, v)
        for k, v in headers
        if k not in _HOP
        and k not in (b"content-length", b"date", b"server")
        and (k in _DENIAL_ALWAYS or client is None or any(m.matches(k) for m in client))
    )
    return CheckAnswer(Verdict.DENIED, status=status, body=body, response_headers=passed)
