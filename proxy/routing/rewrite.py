"""Path and host rewrites and redirect locations, as Envoy's route entries compute them.

``prefix_rewrite`` replaces exactly the part of the path the route matched: the configured
prefix for ``prefix`` / ``path_separated_prefix`` routes, the whole path for ``path`` and
``safe_regex`` routes; the rest (including the query string) is kept byte for byte, in its
original case even when the match was case-insensitive. Trailing slashes are therefore the
configuration's business, as Envoy documents: ``prefix: /prefix/`` + ``prefix_rewrite: /``
turns ``/prefix/etc`` into ``/etc``, while ``prefix: /prefix`` + ``prefix_rewrite: /`` turns
``/prefix/etc`` into ``//etc`` and ``/prefix`` into ``/``. Stripping a prefix cleanly takes
both routes, ``/prefix/`` first.

``regex_rewrite`` substitutes every match in the path without its query string, and keeps the
query string (and fragment) as they were.

When a path is rewritten the router sets ``x-envoy-original-path`` (unless it suppresses Envoy
headers); when the host is, and ``append_x_forwarded_host`` is set, it appends the original
host to ``x-forwarded-host``. Both are the runtime's job.
"""

from __future__ import annotations

from proxy.config.model import (
    PathMatchKind,
    RedirectAction,
    RegexRewrite,
    Route,
    RouteAction,
    WeightedCluster,
)
from proxy.routing.header_match import Headers, get_header

__all__ = ["redirect_location", "rewrite_host", "rewrite_path", "rewritten_path"]


def _path_end(path: bytes) -> int:
    """Index where the query string or fragment starts (``len(path)`` when neither)."""
    end = len(path)
    for sep in (b"?", b"#"):
        i = path.find(sep, 0, end)
        if i >= 0:
            end = i
    return end


def rewritten_path(
    route: Route,
    path: bytes,
    prefix_rewrite: bytes | None,
    regex_rewrite: RegexRewrite | None,
) -> bytes | None:
    """``path`` (the full ``:path``) after a prefix or regex rewrite, or None when neither
    is configured (an empty ``prefix_rewrite`` is Envoy's "unset")."""
    if prefix_rewrite:
        if route.match.path_kind is PathMatchKind.SAFE_REGEX:
            matched = _path_end(path)
        else:
            matched = len(route.match.path)
        return prefix_rewrite + path[matched:]
    if regex_rewrite is not None:
        end = _path_end(path)
        return regex_rewrite.pattern.sub(regex_rewrite.substitution, path[:end]) + path[end:]
    return None


def rewrite_path(route: Route, path: bytes) -> bytes | None:
    """The upstream ``:path`` for a forwarding route, or None to keep ``path``."""
    action = route.action
    if not isinstance(action, RouteAction):
        return None
    return rewritten_path(route, path, action.prefix_rewrite, action.regex_rewrite)


def rewrite_host(
    action: RouteAction,
    headers: Headers,
    *,
    weighted_cluster: WeightedCluster | None = None,
    upstream_hostname: str | None = None,
) -> bytes | None:
    """The upstream Host, or None to keep the request's.

    ``host_rewrite_literal``, else the value of ``host_rewrite_header`` when present and not
    empty; a picked weighted cluster's own ``host_rewrite_literal`` applies after the route's.
    ``auto_host_rewrite`` needs the chosen upstream host: pass its hostname once picked (Envoy
    only rewrites when the host has one, i.e. for DNS clusters); it then wins over the rest.
    """
    host: bytes | None = None
    if action.host_rewrite_literal:
        host = action.host_rewrite_literal
    elif action.host_rewrite_header is not None:
        value = get_header(headers, action.host_rewrite_header)
        if value:
            host = value
    if weighted_cluster is not None and weighted_cluster.host_rewrite_literal:
        host = weighted_cluster.host_rewrite_literal
    if action.auto_host_rewrite and upstream_hostname:
        host = upstream_hostname.encode()
    return host


def _port_start(host: bytes) -> int:
    if host.startswith(b"["):
        i = host.rfind(b"]:")
        return i + 1 if i >= 0 else -1
    return host.rfind(b":")


def _redirect_host(host: bytes, new_scheme: bytes, new_port: bytes, request_scheme: bytes) -> bytes:
    """Envoy's ``processRequestHost``: drop the request's port when the redirect sets its own,
    and drop a default port (``:80`` for http, ``:443`` for https) when the scheme changes."""
    if not host:
        return host
    start = _port_start(host)
    if start < 0:
        return host
    port = host[start:]
    remove = bool(new_port)
    if new_scheme != request_scheme:
        remove = remove or (request_scheme == b"https" and port == b":443")
        remove = remove or (request_scheme == b"http" and port == b":80")
    return host[:start] if remove else host


def redirect_location(route: Route, *, scheme: bytes, host: bytes, path: bytes) -> bytes:
    """The ``Location`` for a redirect route.

    ``scheme`` is the request's scheme as Envoy sees it (``x-forwarded-proto``), ``host`` its
    ``:authority`` and ``path`` its full ``:path``.
    """
    redirect = route.action
    if not isinstance(redirect, RedirectAction):
        raise TypeError("route is not a redirect")
    final_scheme = redirect.scheme_redirect or scheme
    port = b":%d" % redirect.port_redirect if redirect.port_redirect else b""
    final_host = redirect.host_redirect or _redirect_host(host, final_scheme, port, scheme)

    if redirect.path_redirect:
        target = redirect.path_redirect
        has_query = b"?" in target
        if not has_query:
            q = path.find(b"?")
            if q >= 0:
                target += path[q:]
    else:
        has_query = False
        rewritten = rewritten_path(route, path, redirect.prefix_rewrite, redirect.regex_rewrite)
        target = rewritten if rewritten is not None else path
    if not target.startswith(b"/"):
        target = b"/" + target
    # A query written into path_redirect is kept even with strip_query.
    if redirect.strip_query and not has_query:
        q = target.find(b"?")
        if q >= 0:
            target = target[:q]
    return final_scheme + b"://" + final_host + port + target
