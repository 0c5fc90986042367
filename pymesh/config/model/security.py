"""``security.istio.io``: PeerAuthentication (mTLS), RequestAuthentication (JWT) and
AuthorizationPolicy (access control)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from pymesh.config.model.common import (
    EMPTY_MAP,
    FrozenMap,
    LabelSelector,
    Oneofs,
    PolicyTargetReference,
    spec_field,
)

__all__ = [
    "Action",
    "AuthorizationPolicy",
    "ClaimToHeader",
    "Condition",
    "ExtensionProvider",
    "JWTHeader",
    "JWTRule",
    "MTLSMode",
    "MutualTLS",
    "Operation",
    "PeerAuthentication",
    "RequestAuthentication",
    "Rule",
    "RuleFrom",
    "RuleTo",
    "Source",
]


class MTLSMode(StrEnum):
    UNSET = "UNSET"  # inherit from the parent (namespace, then mesh)
    DISABLE = "DISABLE"
    PERMISSIVE = "PERMISSIVE"
    STRICT = "STRICT"


@dataclass(frozen=True, slots=True)
class MutualTLS:
    mode: MTLSMode = MTLSMode.UNSET


@dataclass(frozen=True, slots=True)
class PeerAuthentication:
    """Which inbound mTLS a workload accepts. Without selector it covers the namespace (or the
    mesh when in the root namespace); ``port_level_mtls`` needs a selector."""

    KIND: ClassVar[str] = "PeerAuthentication"

    selector: LabelSelector | None = None
    mtls: MutualTLS | None = None
    port_level_mtls: FrozenMap[int, MutualTLS] = spec_field(EMPTY_MAP, non_empty=True)  # noqa: RUF009

    def mode_for_port(self, port: int) -> MTLSMode:
        """The mode for ``port``: the port-level override, else ``mtls.mode`` (UNSET if none)."""
        override = self.port_level_mtls.get(port)
        if override is not None:
            return override.mode
        return self.mtls.mode if self.mtls is not None else MTLSMode.UNSET


@dataclass(frozen=True, slots=True)
class Source:
    """Peer identity conditions; within a field values are ORed, fields are ANDed."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    request_principals: tuple[str, ...] = ()
    not_request_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    service_accounts: tuple[str, ...] = ()
    not_service_accounts: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()
    remote_ip_blocks: tuple[str, ...] = ()
    not_remote_ip_blocks: tuple[str, ...] = ()
    trust_domains: tuple[str, ...] = ()
    not_trust_domains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    """Request conditions (hosts, ports as strings, methods, paths with ``*`` globs)."""

    hosts: tuple[str, ...] = ()
    not_hosts: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()
    not_ports: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    not_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Condition:
    """An extra attribute condition, e.g. ``key: request.headers[x-token]``."""

    key: str = spec_field(required=True)
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleFrom:
    source: Source | None = None


@dataclass(frozen=True, slots=True)
class RuleTo:
    operation: Operation | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """Matches when any ``from``, any ``to`` and every ``when`` match (missing = any)."""

    from_: tuple[RuleFrom, ...] | None = spec_field(None, json="from")
    to: tuple[RuleTo, ...] | None = None
    when: tuple[Condition, ...] = ()


class Action(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    AUDIT = "AUDIT"
    CUSTOM = "CUSTOM"


@dataclass(frozen=True, slots=True)
class ExtensionProvider:
    name: str = ""


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    """Allow/deny requests to the selected workloads.

    ``rules`` is ``None`` when absent: an ALLOW policy with no rules denies everything
    (``spec: {}`` is the documented deny-all), while ``rules: [{}]`` allows everything.
    """

    KIND: ClassVar[str] = "AuthorizationPolicy"
    ONEOFS: ClassVar[Oneofs] = (("selector", "target_ref", "target_refs"),)

    selector: LabelSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = None
    rules: tuple[Rule, ...] | None = None
    action: Action = Action.ALLOW
    provider: ExtensionProvider | None = None


@dataclass(frozen=True, slots=True)
class JWTHeader:
    """A header carrying the token; ``prefix`` (``Bearer ``) is stripped before verification."""

    name: str = spec_field(required=True)
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class ClaimToHeader:
    header: str = spec_field(required=True)
    claim: str = spec_field(required=True)


@dataclass(frozen=True, slots=True)
class JWTRule:
    """One accepted issuer. Without ``from_*`` locations the token is read from
    ``Authorization: Bearer`` and the ``access_token`` query parameter."""

    issuer: str = spec_field(required=True)
    audiences: tuple[str, ...] = ()
    jwks_uri: str = ""
    jwks: str = ""
    from_headers: tuple[JWTHeader, ...] = ()
    from_params: tuple[str, ...] = ()
    from_cookies: tuple[str, ...] = ()
    output_payload_to_header: str = ""
    forward_original_token: bool = False
    output_claim_to_headers: tuple[ClaimToHeader, ...] = ()
    timeout: float | None = spec_field(None, duration=True)


@dataclass(frozen=True, slots=True)
class RequestAuthentication:
    """Which JWTs the selected workloads accept. A request with an invalid token is refused
    (401); one without a token is let through, for AuthorizationPolicy to decide."""

    KIND: ClassVar[str] = "RequestAuthentication"
    ONEOFS: ClassVar[Oneofs] = (("selector", "target_ref", "target_refs"),)

    selector: LabelSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = None
    jwt_rules: tuple[JWTRule, ...] = ()
