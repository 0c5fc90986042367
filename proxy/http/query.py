"""Edits to a request's query string the way Envoy's ``QueryParamsMulti`` makes them (a JWT
taken out of ``access_token``, an authorizer's ``query_parameters_to_set``): the query is
decoded, edited, and written back in key order as ``key=value`` pairs."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote, unquote

__all__ = ["edit_query"]

# What a decoded query may keep as it is in a request target (RFC 3986 pchar, "/" and "?").
_TARGET_SAFE = "!$&'()*+,;=:@/?-._~%"


def edit_query(
    path: bytes, to_set: Iterable[tuple[str, str]] = (), to_remove: Iterable[str] = ()
) -> bytes:
    """``path`` with the parameters of ``to_remove`` gone and those of ``to_set`` replaced.
    Unlike Envoy, what a request line may not carry once decoded (a space, a control
    character) is encoded again, so the upstream gets a valid request rather than a broken
    one."""
    base, _, rest = path.partition(b"?")
    query, _, _ = rest.partition(b"#")
    found: dict[str, list[str]] = {}
    for part in query.decode("latin-1").split("&"):
        if part:
            key, _, value = part.partition("=")
            found.setdefault(unquote(key), []).append(unquote(value))
    for key in to_remove:
        found.pop(key, None)
    for key, value in to_set:
        found[key] = [value]
    if not found:
        return base
    rebuilt = "&".join(f"{k}={v}" for k in sorted(found) for v in found[k])
    return base + b"?" + quote(rebuilt, safe=_TARGET_SAFE, encoding="latin-1").encode()
