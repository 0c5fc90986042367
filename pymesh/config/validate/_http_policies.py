"""Checks of an HTTP route's policies: header edits, CORS, faults, redirect, retries, rewrite."""

from __future__ import annotations

from collections.abc import Iterable

from pymesh.config.issues import Reporter
from pymesh.config.model.networking import (
    CorsPolicy,
    Headers,
    HTTPDirectResponse,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRedirect,
    HTTPRetry,
    HTTPRoute,
)
from pymesh.config.validate._common import (
    HEADER_NAME,
    check_header_value,
    check_percentage,
    check_port,
    check_regex,
    check_string_match,
)

__all__ = [
    "check_cors",
    "check_direct_response",
    "check_fault",
    "check_headers",
    "check_http_status",
    "check_percent_0_100",
    "check_redirect",
    "check_retries",
    "check_rewrite",
]

_CORS_METHODS = frozenset(
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE"]
)
_RETRY_ON = frozenset(
    [
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    ]
)
_GRPC_STATUS = frozenset(
    [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ]
)
_KB = 1024


def check_headers(headers: Headers | None, path: str, rep: Reporter) -> None:
    if headers is None:
        return
    for part, ops in (("request", headers.request), ("response", headers.response)):
        if ops is None:
            continue
        for op in ("set", "add"):
            for name, value in getattr(ops, op).items():
                hpath = f"{path}.{part}.{op}[{name}]"
                authority = name.lower() in (":authority", "host")
                if not name:
                    rep.fail(hpath, "header name must not be empty")
                if name.startswith(":") and not (part == "request" and authority):
                    rep.fail(hpath, f"header {name!r} cannot be modified (':' prefix)")
                if part == "response" and name.lower() == "host":
                    rep.fail(hpath, "cannot set the Host header on a response")
                check_header_value(rep, hpath, value)
        for i, name in enumerate(ops.remove):
            if not name or name.startswith(":") or name.lower() == "host":
                rep.fail(f"{path}.{part}.remove[{i}]", f"header {name!r} cannot be removed")


def check_cors(cors: CorsPolicy, path: str, rep: Reporter) -> None:
    for i, origin in enumerate(cors.allow_origins):
        opath = f"{path}.allowOrigins[{i}]"
        check_string_match(rep, opath, origin)
        if origin.exact == "":
            rep.fail(opath, "allowOrigins entries must not be empty")
    for i, method in enumerate(cors.allow_methods):
        if method not in _CORS_METHODS:
            rep.fail(f"{path}.allowMethods[{i}]", f"{method!r} is not a supported HTTP method")
    for field, label in (("allow_headers", "allowHeaders"), ("expose_headers", "exposeHeaders")):
        for i, name in enumerate(getattr(cors, field)):
            if name != "*" and not HEADER_NAME.match(name):
                rep.fail(f"{path}.{label}[{i}]", f"invalid header name {name!r}")
    if cors.max_age is not None and cors.max_age != int(cors.max_age):
        rep.fail(f"{path}.maxAge", "maxAge is accurate to whole seconds only")


def check_fault(fault: HTTPFaultInjection, path: str, rep: Reporter) -> None:
    if fault.abort is None and fault.delay is None:
        rep.fail(path, "fault injection needs an abort and/or a delay")
    if (abort := fault.abort) is not None:
        apath = f"{path}.abort"
        check_percentage(rep, f"{apath}.percentage.value", abort.percentage)
        if abort.http_status is not None:
            check_http_status(rep, f"{apath}.httpStatus", abort.http_status)
        elif abort.grpc_status is not None:
            if abort.grpc_status not in _GRPC_STATUS:
                rep.fail(f"{apath}.grpcStatus", f"unknown gRPC status {abort.grpc_status!r}")
        elif abort.http2_error is not None:
            rep.fail(f"{apath}.http2Error", "HTTP/2 error abort is not supported")
        else:
            rep.warn(apath, "abort configured, but no httpStatus or grpcStatus set")
    if (delay := fault.delay) is not None:
        dpath = f"{path}.delay"
        check_percentage(rep, f"{dpath}.percentage.value", delay.percentage)
        if not 0 <= delay.percent <= 100:
            rep.fail(f"{dpath}.percent", f"percent {delay.percent} is not in range 0..100")
        if delay.exponential_delay is not None:
            rep.fail(f"{dpath}.exponentialDelay", "exponentialDelay is not supported")
        if delay.fixed_delay is None:
            rep.warn(dpath, "delay configured, but fixedDelay not set")


def check_direct_response(dr: HTTPDirectResponse, path: str, rep: Reporter) -> None:
    check_http_status(rep, f"{path}.status", dr.status)
    body = dr.body
    size = 0 if body is None else len(body.string or "") + len(body.body_bytes or b"")
    if size > _KB * _KB:
        rep.fail(f"{path}.body", "direct response body must be under 1MB")
    if size > 100 * _KB:
        rep.warn(f"{path}.body", "large direct responses slow the control plane")


def check_http_status(rep: Reporter, path: str, status: int) -> None:
    if not 200 <= status <= 599:
        rep.fail(path, f"HTTP status {status} is not in range 200..599")


def check_percent_0_100(rep: Reporter, path: str, value: float) -> None:
    if not 0 <= value <= 100:
        rep.fail(path, f"percentage {value:g} is not in range 0..100")


def check_redirect(
    redirect: HTTPRedirect, matches: Iterable[HTTPMatchRequest], path: str, rep: Reporter
) -> None:
    if redirect.uri and redirect.prefix_rewrite:
        rep.fail(path, "redirect may set only one of uri and prefixRewrite")
    if redirect.prefix_rewrite and any(m.uri is not None and m.uri.prefix is None for m in matches):
        rep.fail(f"{path}.prefixRewrite", "prefixRewrite requires every uri match to be a prefix")
    if not (
        redirect.uri
        or redirect.prefix_rewrite
        or redirect.authority
        or redirect.scheme
        or redirect.port is not None
        or redirect.derive_port is not None
    ):
        rep.fail(path, "redirect must set uri, prefixRewrite, authority, scheme or port")
    if redirect.redirect_code and not 300 <= redirect.redirect_code <= 399:
        rep.fail(f"{path}.redirectCode", f"{redirect.redirect_code} is not a 3xx code")
    if redirect.scheme and redirect.scheme not in ("http", "https"):
        rep.fail(f"{path}.scheme", 'redirect scheme must be "http" or "https"')
    if redirect.port:
        check_port(rep, f"{path}.port", redirect.port)


def check_retries(retries: HTTPRetry, path: str, rep: Reporter) -> None:
    if retries.attempts < 0:
        rep.fail(f"{path}.attempts", "attempts must not be negative")
    if retries.attempts == 0 and (
        retries.per_try_timeout is not None
        or retries.retry_on
        or retries.retry_remote_localities is not None
    ):
        rep.fail(path, "retry policy set while attempts is 0 (retries disabled)")
    for policy in filter(None, retries.retry_on.split(",")):
        code = policy.strip()
        if code not in _RETRY_ON and not (code.isdigit() and 100 <= int(code) <= 599):
            rep.fail(f"{path}.retryOn", f"{code!r} is not a valid retryOn policy")


def check_rewrite(route: HTTPRoute, path: str, rep: Reporter) -> None:
    rw = route.rewrite
    authority = rw.authority if rw is not None else ""
    if rw is not None:
        if rw.uri and rw.uri_regex_rewrite is not None:
            rep.fail(f"{path}.rewrite", "rewrite may set only one of uri and uriRegexRewrite")
        if not (rw.uri or rw.uri_regex_rewrite is not None or rw.authority):
            rep.fail(f"{path}.rewrite", "rewrite must set uri, uriRegexRewrite or authority")
        if (rr := rw.uri_regex_rewrite) is not None:
            rpath = f"{path}.rewrite.uriRegexRewrite"
            if not rr.match or not rr.rewrite:
                rep.fail(rpath, "uriRegexRewrite needs both match and rewrite")
            check_regex(rep, f"{rpath}.match", rr.match)
    request = route.headers.request if route.headers is not None else None
    if request is not None:
        for name in (*request.set, *request.add):
            if name.lower() in (":authority", "host"):
                if authority:
                    rep.fail(f"{path}.headers.request", "the authority is rewritten twice")
                authority = name
