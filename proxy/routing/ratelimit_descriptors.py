"""Rate limit descriptors from a route's ``rate_limits`` actions (Envoy's
``RateLimitPolicyEntryImpl::populateDescriptors``), as pure functions over the request.

Each policy entry of the asked ``stage`` makes one descriptor: its actions add one entry each,
in order. An action that cannot produce its entry (a missing header without
``skip_if_absent``, a ``header_value_match`` whose result is not ``expect_match``, a remote
address that is not IP) drops the whole descriptor; a skipped header adds nothing and the
descriptor goes on. Pseudo-headers are readable as ``:path``, ``:method``, ``:authority`` and
``:scheme``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.config.model_ratelimit import (
    RateLimitActionKind,
    RateLimitPolicyEntry,
    VhRateLimits,
)
from proxy.routing.header_match import Headers, header_index, headers_match_indexed

__all__ = ["Descriptor", "RequestFacts", "build_descriptors", "route_policies"]

Descriptor = tuple[tuple[str, str], ...]

_KIND = RateLimitActionKind


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the actions read of one request."""

    headers: Headers
    method: bytes
    path: bytes
    scheme: bytes | None
    remote_address: str  # the downstream peer's IP, "" when not IP
    destination_cluster: str | None
    local_cluster: str


def route_policies(
    route_limits: Sequence[RateLimitPolicyEntry],
    vhost_limits: Sequence[RateLimitPolicyEntry],
    mode: VhRateLimits,
) -> tuple[RateLimitPolicyEntry, ...]:
    """The entries that apply to a request: the route's, plus the virtual host's as ``mode``
    says (Envoy's ``vh_rate_limits``; the default uses the virtual host's only when the route
    has none)."""
    if mode is VhRateLimits.INCLUDE:
        return (*route_limits, *vhost_limits)
    if mode is VhRateLimits.OVERRIDE and not route_limits:
        return tuple(vhost_limits)
    return tuple(route_limits)


def build_descriptors(
    policies: Sequence[RateLimitPolicyEntry], stage: int, facts: RequestFacts
) -> list[Descriptor]:
    descriptors: list[Descriptor] = []
    index: dict[bytes, bytes] | None = None
    for policy in policies:
        if policy.stage != stage:
            continue
        entries: list[tuple[str, str]] = []
        complete = True
        for action in policy.actions:
            kind = action.kind
            if kind is _KIND.GENERIC_KEY:
                entries.append((action.key, action.value))
            elif kind is _KIND.SOURCE_CLUSTER:
                entries.append((action.key, facts.local_cluster))
            elif kind is _KIND.DESTINATION_CLUSTER:
                if facts.destination_cluster is None:
                    complete = False
                    break
                entries.append((action.key, facts.destination_cluster))
            elif kind is _KIND.REMOTE_ADDRESS:
                if not _is_ip(facts.remote_address):
                    complete = False
                    break
                entries.append((action.key, facts.remote_address))
            else:
                if index is None:
                    index = _index(facts)
                if kind is _KIND.REQUEST_HEADERS:
                    value = _first(facts, index, action.header)
                    if value is None:
                        if action.skip_if_absent:
                            continue
                        complete = False
                        break
                    entries.append((action.key, value.decode("latin-1")))
                elif headers_match_indexed(action.headers, index) == action.expect_match:
                    entries.append((action.key, action.value))
                else:
                    complete = False
                    break
        if complete:
            descriptors.append(tuple(entries))
    return descriptors


def _index(facts: RequestFacts) -> dict[bytes, bytes]:
    index = header_index(facts.headers)
    index[b":method"] = facts.method
    index[b":path"] = facts.path
    host = index.get(b"host")
    if host is not None:
        index[b":authority"] = host
    if facts.scheme is not None:
        index[b":scheme"] = facts.scheme
    return index


def _first(facts: RequestFacts, index: dict[bytes, bytes], name: bytes) -> bytes | None:
    """The first value of ``name`` (Envoy sends only the first of a repeated header)."""
    if name.startswith(b":"):
        return index.get(name)
    for key, value in facts.headers:
        if key == name:
            return value
    return None


def _is_ip(address: str) -> bool:
    if not address:
        return False
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
