"""VirtualService pieces → Envoy route pieces: matches, retries, fault, CORS, headers, redirect.

Each function is a direct translation of one Istio field group, following Istio's
``pilot/pkg/networking/core/route`` (names and defaults included).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from pilot.generate.common import duration, fractional, typed
from pilot.model.mesh import MeshConfig
from pymesh.config.model.networking import (
    CorsPolicy,
    HeaderOperations,
    Headers,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRedirect,
    HTTPRetry,
    Percent,
    RedirectPortSelection,
    StringMatch,
    UnmatchedPreflights,
)

__all__ = [
    "cors_policy",
    "default_retry_policy",
    "direct_response",
    "fault_config",
    "header_mutations",
    "redirect",
    "retry_policy",
    "route_match",
]

_REDIRECT_CODES = {
    301: "MOVED_PERMANENTLY",
    302: "FOUND",
    303: "SEE_OTHER",
    307: "TEMPORARY_REDIRECT",
    308: "PERMANENT_REDIRECT",
}
_GRPC_NAMES = (
    "OK CANCELLED UNKNOWN INVALID_ARGUMENT DEADLINE_EXCEEDED NOT_FOUND ALREADY_EXISTS "
    "PERMISSION_DENIED RESOURCE_EXHAUSTED FAILED_PRECONDITION ABORTED OUT_OF_RANGE "
    "UNIMPLEMENTED INTERNAL UNAVAILABLE DATA_LOSS UNAUTHENTICATED"
)
_GRPC_CODES = {name: code for code, name in enumerate(_GRPC_NAMES.split())}
_PREVIOUS_HOSTS = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": typed("previous_hosts"),
}


#: A VirtualService header match on a JWT claim (``@request.auth.claims.groups``).
JWT_CLAIM_HEADER = "@request.auth.claims"


def _string_match(sm: StringMatch, *, ignore_case: bool = False) -> dict[str, Any]:
    out: dict[str, Any]
    if sm.exact is not None:
        out = {"exact": sm.exact}
    elif sm.prefix is not None:
        out = {"prefix": sm.prefix}
    else:
        out = {"safe_regex": {"regex": sm.regex or ""}}
    if ignore_case and "safe_regex" not in out:
        out["ignore_case"] = True
    return out


def _header(name: str, sm: StringMatch, *, invert: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if sm.is_empty:
        out["present_match"] = True
    else:
        out["string_match"] = _string_match(sm)
    if invert:
        out["invert_match"] = True
    return out


def _claim_matcher(name: str, sm: StringMatch, invert: bool) -> dict[str, Any]:
    """``@request.auth.claims.a.b`` (or ``[a][b]``): istiod matches the verified JWT payload
    that jwt_authn left in dynamic metadata, as an element of a list claim or the claim."""
    rest = name[len(JWT_CLAIM_HEADER) :]
    keys = (
        re.findall(r"\[([^\]]*)\]", rest) if rest.startswith("[") else rest.lstrip(".").split(".")
    )
    value = {"string_match": _string_match(sm)}
    out: dict[str, Any] = {
        "filter": "envoy.filters.http.jwt_authn",
        "path": [{"key": k} for k in ("payload", *keys)],
        "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": value}}, value]}},
    }
    if invert:
        out["invert"] = True
    return out


def route_match(match: HTTPMatchRequest | None) -> dict[str, Any]:
    """An Envoy ``RouteMatch``; no match (or no ``uri``) is prefix ``/``."""
    out: dict[str, Any] = {}
    uri = match.uri if match is not None else None
    if uri is None or uri.is_empty:
        out["prefix"] = "/"
    elif uri.exact is not None:
        out["path"] = uri.exact
    elif uri.prefix is not None:
        out["prefix"] = uri.prefix
    else:
        out["safe_regex"] = {"regex": uri.regex}
    if match is None:
        return out
    if match.ignore_uri_case:
        out["case_sensitive"] = False
    claims = [
        _claim_matcher(name, sm, invert)
        for items, invert in ((match.headers, False), (match.without_headers, True))
        for name, sm in items.items()
        if name.lower().startswith(JWT_CLAIM_HEADER)
    ]
    if claims:
        out["dynamic_metadata"] = claims
    headers = [
        _header(name, sm)
        for name, sm in match.headers.items()
        if not name.lower().startswith(JWT_CLAIM_HEADER)
    ]
    for pseudo, sm in (
        (":authority", match.authority),
        (":method", match.method),
        (":scheme", match.scheme),
    ):
        if sm is not None:
            headers.append(_header(pseudo, sm))
    headers.extend(
        _header(name, sm, invert=True)
        for name, sm in match.without_headers.items()
        if not name.lower().startswith(JWT_CLAIM_HEADER)
    )
    if headers:
        out["headers"] = headers
    params = []
    for name, sm in match.query_params.items():
        if sm.is_empty:
            params.append({"name": name, "present_match": True})
        else:
            params.append({"name": name, "string_match": _string_match(sm)})
    if params:
        out["query_parameters"] = params
    return out


def _retry_on(text: str) -> tuple[str, list[int]]:
    """Istio's ``retryOn``: numbers are status codes, which need ``retriable-status-codes``."""
    conditions, codes = [], []
    for part in (p.strip() for p in text.split(",")):
        if part.isdigit():
            codes.append(int(part))
        elif part and part not in conditions:
            conditions.append(part)
    if codes and "retriable-status-codes" not in conditions:
        conditions.append("retriable-status-codes")
    return ",".join(conditions), codes


def _policy(attempts: int, retry_on: str) -> dict[str, Any]:
    conditions, codes = _retry_on(retry_on)
    out: dict[str, Any] = {
        "retry_on": conditions,
        "num_retries": attempts,
        "retry_host_predicate": [_PREVIOUS_HOSTS],
        "host_selection_retry_max_attempts": "5",
    }
    if codes:
        out["retriable_status_codes"] = codes
    return out


def default_retry_policy(mesh: MeshConfig) -> dict[str, Any] | None:
    """Istio's retry policy for routes whose VirtualService says nothing about retries."""
    if mesh.default_retries <= 0:
        return None
    return _policy(mesh.default_retries, mesh.default_retry_on)


def retry_policy(retries: HTTPRetry | None, mesh: MeshConfig) -> dict[str, Any] | None:
    """``retries`` → ``RetryPolicy``; None when retries are off (``attempts: 0``)."""
    if retries is None:
        return default_retry_policy(mesh)
    if retries.attempts <= 0:
        return None
    out = _policy(retries.attempts, retries.retry_on or mesh.default_retry_on)
    if retries.per_try_timeout is not None:
        out["per_try_timeout"] = duration(retries.per_try_timeout)
    if retries.retry_ignore_previous_hosts is False:
        del out["retry_host_predicate"]
    if retries.backoff is not None:
        out["retry_back_off"] = {"base_interval": duration(retries.backoff)}
    return out


def _percentage(percentage: Percent | None, legacy: int = 0) -> dict[str, Any]:
    # Unset means every request: what users of the Istio samples expect of a fault rule.
    if percentage is not None:
        return fractional(percentage.value)
    return fractional(float(legacy) if legacy > 0 else 100.0)


def fault_config(fault: HTTPFaultInjection) -> dict[str, Any] | None:
    """``typed_per_filter_config`` value for ``envoy.filters.http.fault``."""
    out: dict[str, Any] = {}
    delay = fault.delay
    if delay is not None and delay.fixed_delay is not None:
        out["delay"] = {
            "fixed_delay": duration(delay.fixed_delay),
            "percentage": _percentage(delay.percentage, delay.percent),
        }
    abort = fault.abort
    if abort is not None and (abort.http_status is not None or abort.grpc_status is not None):
        body: dict[str, Any] = {"percentage": _percentage(abort.percentage)}
        if abort.http_status is not None:
            body["http_status"] = abort.http_status
        else:
            code = abort.grpc_status or ""
            body["grpc_status"] = int(code) if code.isdigit() else _GRPC_CODES.get(code, 2)
        out["abort"] = body
    return typed("fault", out) if out else None


def cors_policy(cors: CorsPolicy) -> dict[str, Any]:
    """``typed_per_filter_config`` value for ``envoy.filters.http.cors``."""
    origins = [_string_match(o) for o in cors.allow_origins]
    origins += [{"exact": o} for o in cors.allow_origin]
    out: dict[str, Any] = {
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    }
    if origins:
        out["allow_origin_string_match"] = origins
    for attr in ("allow_methods", "allow_headers", "expose_headers"):
        values = getattr(cors, attr)
        if values:
            out[attr] = ",".join(values)
    if cors.max_age is not None:
        out["max_age"] = str(int(cors.max_age))
    if cors.allow_credentials is not None:
        out["allow_credentials"] = cors.allow_credentials
    if cors.unmatched_preflights is not UnmatchedPreflights.UNSPECIFIED:
        forward = cors.unmatched_preflights is UnmatchedPreflights.FORWARD
        out["forward_not_matching_preflights"] = forward
    return typed("cors_policy", out)


def _ops(ops: HeaderOperations | None, side: str, out: dict[str, Any]) -> None:
    if ops is None:
        return
    adds = [
        {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for k, v in ops.set.items()
    ]
    adds += [
        {"header": {"key": k, "value": v}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
        for k, v in ops.add.items()
    ]
    if adds:
        out.setdefault(f"{side}_headers_to_add", []).extend(adds)
    if ops.remove:
        out.setdefault(f"{side}_headers_to_remove", []).extend(ops.remove)


def header_mutations(headers: Headers | None) -> dict[str, Any]:
    """``request_headers_to_add`` / ``..._to_remove`` (and response) for a route or a
    weighted cluster."""
    out: dict[str, Any] = {}
    if headers is not None:
        _ops(headers.request, "request", out)
        _ops(headers.response, "response", out)
    return out


def redirect(rd: HTTPRedirect) -> dict[str, Any]:
    out: dict[str, Any] = {"response_code": _REDIRECT_CODES.get(rd.redirect_code or 301, "FOUND")}
    if rd.uri:
        out["path_redirect"] = rd.uri
    elif rd.prefix_rewrite:
        out["prefix_rewrite"] = rd.prefix_rewrite
    if rd.authority:
        out["host_redirect"] = rd.authority
    if rd.scheme:
        out["scheme_redirect"] = rd.scheme
    if rd.port:
        out["port_redirect"] = rd.port
    elif rd.derive_port is RedirectPortSelection.FROM_PROTOCOL_DEFAULT:
        out["port_redirect"] = 443 if rd.scheme == "https" else 80
    return out


def direct_response(dr: HTTPDirectResponse) -> dict[str, Any]:
    out: dict[str, Any] = {"status": dr.status}
    if dr.body is not None:
        if dr.body.string is not None:
            out["body"] = {"inline_string": dr.body.string}
        elif dr.body.body_bytes is not None:
            out["body"] = {"inline_bytes": base64.b64encode(dr.body.body_bytes).decode()}
    return out
