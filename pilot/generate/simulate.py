"""Envoy's request matching, replayed on generated resources (in their JSON dict form):
virtual host selection by Host header, then the first route whose path, headers and query
parameters match. Used by ``explain`` and by the simulation tests."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Request", "match_route", "match_virtual_host", "parse_duration"]


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the router sees it: header names lower-case, pseudo headers included."""

    host: str
    path: str
    method: str = "GET"
    scheme: str = "http"
    headers: Mapping[str, str] | None = None
    query: Sequence[tuple[str, str]] = ()

    def header(self, name: str) -> str | None:
        pseudo = {
            ":authority": self.host,
            ":method": self.method,
            ":scheme": self.scheme,
            ":path": self.path,
            "host": self.host,
        }
        if name in pseudo:
            return pseudo[name]
        return (self.headers or {}).get(name)


def parse_duration(text: str | None) -> float | None:
    """``"0.500s"`` (protobuf JSON) -> 0.5."""
    if text is None:
        return None
    return float(text.rstrip("s"))


def _domain_rank(domain: str, host: str) -> tuple[int, int] | None:
    """Envoy's precedence: exact, then longest suffix wildcard, prefix wildcard, then ``*``."""
    domain = domain.lower()
    if domain == host:
        return (0, 0)
    if domain == "*":
        return (3, 0)
    if domain.startswith("*") and host.endswith(domain[1:]) and len(host) > len(domain) - 1:
        return (1, -len(domain))
    if domain.endswith("*") and host.startswith(domain[:-1]) and len(host) > len(domain) - 1:
        return (2, -len(domain))
    return None


def match_virtual_host(route_config: Mapping[str, Any], host: str) -> Mapping[str, Any] | None:
    host = host.lower()
    best: tuple[tuple[int, int], Mapping[str, Any]] | None = None
    for vhost in route_config.get("virtual_hosts", ()):
        for domain in vhost.get("domains", ()):
            rank = _domain_rank(domain, host)
            if rank is not None and (best is None or rank < best[0]):
                best = (rank, vhost)
    return best[1] if best else None


def _string_match(matcher: Mapping[str, Any], value: str) -> bool:
    ignore = matcher.get("ignore_case", False)
    candidate = value.lower() if ignore else value

    def norm(text: str) -> str:
        return text.lower() if ignore else text

    if "exact" in matcher:
        return candidate == norm(matcher["exact"])
    if "prefix" in matcher:
        return candidate.startswith(norm(matcher["prefix"]))
    if "suffix" in matcher:
        return candidate.endswith(norm(matcher["suffix"]))
    if "contains" in matcher:
        return norm(matcher["contains"]) in candidate
    if "safe_regex" in matcher:
        return re.fullmatch(matcher["safe_regex"]["regex"], value) is not None
    return False


def _header_ok(matcher: Mapping[str, Any], request: Request) -> bool:
    value = request.header(matcher["name"].lower())
    if matcher.get("present_match"):
        result = value is not None
    elif value is None:
        result = False
    elif "string_match" in matcher:
        result = _string_match(matcher["string_match"], value)
    elif "exact_match" in matcher:
        result = value == matcher["exact_match"]
    else:
        result = True
    return result != bool(matcher.get("invert_match", False))


def _query_ok(matcher: Mapping[str, Any], request: Request) -> bool:
    values = [v for k, v in request.query if k == matcher["name"]]
    if matcher.get("present_match"):
        return bool(values)
    if not values:
        return False
    return "string_match" not in matcher or _string_match(matcher["string_match"], values[0])


def _path_ok(match: Mapping[str, Any], path: str) -> bool:
    path = path.split("?", 1)[0]
    sensitive = bool(match.get("case_sensitive", True))
    if "safe_regex" in match:
        return re.fullmatch(match["safe_regex"]["regex"], path) is not None
    if "path" in match:
        exact = str(match["path"])
        return path == exact if sensitive else path.lower() == exact.lower()
    prefix = str(match.get("prefix", ""))
    return path.startswith(prefix) if sensitive else path.lower().startswith(prefix.lower())


def match_route(vhost: Mapping[str, Any], request: Request) -> tuple[int, Mapping[str, Any]] | None:
    """The index and dict of the first route of ``vhost`` that matches ``request``."""
    for index, route in enumerate(vhost.get("routes", ())):
        match = route.get("match", {})
        if not _path_ok(match, request.path):
            continue
        if not all(_header_ok(h, request) for h in match.get("headers", ())):
            continue
        if not all(_query_ok(q, request) for q in match.get("query_parameters", ())):
            continue
        return index, route
    return None
