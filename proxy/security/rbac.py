"""Envoy's RBAC engine (``config.rbac.v3.RBAC``), pure: permissions and principals as matcher
values, policies in name order, and the verdict a filter acts on.

Semantics follow Envoy's ``RoleBasedAccessControlEngineImpl``:

* a policy matches when any permission and any principal match;
* ALLOW allows when some policy matches, DENY allows when none does, LOG always allows and
  says whether to log; the reported policy is the first match in name order (Envoy keeps
  policies in a ``std::map``);
* ``authenticated`` needs a TLS connection; its ``principal_name`` is tried on each URI SAN,
  then each DNS SAN, then the subject of the peer certificate;
* header matchers see pseudo-headers (``:method``, ``:path``, ``:authority``) and join repeated
  headers with ``,``; ``url_path`` matches the path without query or fragment;
* on a TCP connection every HTTP attribute is absent, so those matchers do not match.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from proxy.config.model_common import CidrRange, HeaderMatcher, StringMatcher
from proxy.routing.header_match import header_matches
from proxy.security.matchers import DynamicMetadata, MetadataMatcher, UriTemplate

__all__ = [
    "AndMatcher",
    "AnyMatcher",
    "AuthenticatedMatcher",
    "DestinationIpMatcher",
    "DestinationPortMatcher",
    "DestinationPortRangeMatcher",
    "HeaderRule",
    "IpMatcher",
    "Matcher",
    "MetadataRule",
    "NotMatcher",
    "OrMatcher",
    "PeerCertificate",
    "Policy",
    "RbacAction",
    "RbacInput",
    "RbacRules",
    "RequestedServerNameMatcher",
    "UriTemplateRule",
    "UrlPathMatcher",
    "Verdict",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """What RBAC reads of the downstream TLS connection: the peer certificate's SANs and
    subject (``present`` False for a TLS connection whose client sent no certificate)."""

    uri_sans: tuple[str, ...] = ()
    dns_sans: tuple[str, ...] = ()
    subject: str = ""
    present: bool = True


class RbacInput(Protocol):
    """The attributes a request or connection offers the engine."""

    @property
    def direct_remote_ip(self) -> IpAddress | None: ...
    @property
    def remote_ip(self) -> IpAddress | None: ...
    @property
    def local_ip(self) -> IpAddress | None: ...
    @property
    def local_port(self) -> int: ...
    @property
    def requested_server_name(self) -> str: ...
    @property
    def tls(self) -> PeerCertificate | None: ...
    @property
    def metadata(self) -> DynamicMetadata: ...
    @property
    def path(self) -> bytes | None: ...
    def header(self, name: bytes) -> bytes | None: ...


class Matcher(Protocol):
    def matches(self, attrs: RbacInput) -> bool: ...


@dataclass(frozen=True, slots=True)
class AnyMatcher:
    def matches(self, attrs: RbacInput) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class AndMatcher:
    rules: tuple[Matcher, ...]

    def matches(self, attrs: RbacInput) -> bool:
        for rule in self.rules:  # noqa: SIM110 - a plain loop is cheaper than all() here
            if not rule.matches(attrs):
                return False
        return True


@dataclass(frozen=True, slots=True)
class OrMatcher:
    rules: tuple[Matcher, ...]

    def matches(self, attrs: RbacInput) -> bool:
        for rule in self.rules:  # noqa: SIM110
            if rule.matches(attrs):
                return True
        return False


@dataclass(frozen=True, slots=True)
class NotMatcher:
    rule: Matcher

    def matches(self, attrs: RbacInput) -> bool:
        return not self.rule.matches(attrs)


@dataclass(frozen=True, slots=True)
class HeaderRule:
    header: HeaderMatcher

    def matches(self, attrs: RbacInput) -> bool:
        return header_matches(self.header, attrs.header(self.header.name))


def _strip_query(path: bytes) -> bytes:
    for mark in (b"?", b"#"):
        cut = path.find(mark)
        if cut >= 0:
            path = path[:cut]
    return path


@dataclass(frozen=True, slots=True)
class UrlPathMatcher:
    path: StringMatcher

    def matches(self, attrs: RbacInput) -> bool:
        path = attrs.path
        return path is not None and self.path.matches(_strip_query(path))


@dataclass(frozen=True, slots=True)
class UriTemplateRule:
    template: UriTemplate

    def matches(self, attrs: RbacInput) -> bool:
        path = attrs.path
        return path is not None and self.template.matches(_strip_query(path))


@dataclass(frozen=True, slots=True)
class IpMatcher:
    """``direct_remote_ip`` (``direct``) or ``remote_ip`` (after X-Forwarded-For)."""

    cidr: CidrRange
    direct: bool

    def matches(self, attrs: RbacInput) -> bool:
        ip = attrs.direct_remote_ip if self.direct else attrs.remote_ip
        return ip is not None and self.cidr.contains(ip)


@dataclass(frozen=True, slots=True)
class DestinationIpMatcher:
    cidr: CidrRange

    def matches(self, attrs: RbacInput) -> bool:
        ip = attrs.local_ip
        return ip is not None and self.cidr.contains(ip)


@dataclass(frozen=True, slots=True)
class DestinationPortMatcher:
    port: int

    def matches(self, attrs: RbacInput) -> bool:
        return attrs.local_port == self.port


@dataclass(frozen=True, slots=True)
class DestinationPortRangeMatcher:
    """Half-open ``[start, end)``."""

    start: int
    end: int

    def matches(self, attrs: RbacInput) -> bool:
        return self.start <= attrs.local_port < self.end


@dataclass(frozen=True, slots=True)
class RequestedServerNameMatcher:
    name: StringMatcher

    def matches(self, attrs: RbacInput) -> bool:
        return self.name.matches(attrs.requested_server_name.encode())


@dataclass(frozen=True, slots=True)
class MetadataRule:
    matcher: MetadataMatcher

    def matches(self, attrs: RbacInput) -> bool:
        return self.matcher.matches(attrs.metadata)


@dataclass(frozen=True, slots=True)
class AuthenticatedMatcher:
    principal_name: StringMatcher | None = None

    def matches(self, attrs: RbacInput) -> bool:
        tls = attrs.tls
        if tls is None:
            return False
        name = self.principal_name
        if name is None:
            return True
        for san in tls.uri_sans:
            if name.matches(san.encode()):
                return True
        for san in tls.dns_sans:
            if name.matches(san.encode()):
                return True
        return name.matches(tls.subject.encode())


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    permissions: tuple[Matcher, ...]
    principals: tuple[Matcher, ...]

    def matches(self, attrs: RbacInput) -> bool:
        return any(p.matches(attrs) for p in self.permissions) and any(
            p.matches(attrs) for p in self.principals
        )


class RbacAction(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    LOG = "LOG"


@dataclass(frozen=True, slots=True)
class Verdict:
    """``allowed``; ``policy``: the first matching policy's name (None when none matched);
    ``log``: a LOG engine matched (the access log hint)."""

    allowed: bool
    policy: str | None
    log: bool = False


@dataclass(frozen=True, slots=True)
class RbacRules:
    """One engine: ``policies`` sorted by name, as Envoy iterates them."""

    action: RbacAction
    policies: tuple[Policy, ...]

    @classmethod
    def build(cls, action: RbacAction, policies: Mapping[str, Policy]) -> RbacRules:
        return cls(action, tuple(policies[name] for name in sorted(policies)))

    def evaluate(self, attrs: RbacInput) -> Verdict:
        matched = None
        for policy in self.policies:
            if policy.matches(attrs):
                matched = policy.name
                break
        action = self.action
        if action is RbacAction.ALLOW:
            return Verdict(matched is not None, matched)
        if action is RbacAction.DENY:
            return Verdict(matched is None, matched)
        return Verdict(True, matched, log=matched is not None)
