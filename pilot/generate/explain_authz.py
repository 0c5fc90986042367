"""``pymesh explain``'s authorization step: the RBAC filters pilot generates for the destination
workload's inbound listener, translated and evaluated by the proxy's own RBAC engine
(``proxy.security.rbac``) for a request from the source workload, naming the policy and rule
that allow or deny it.

The source presents its SPIFFE identity when its sidecar would call the destination over mesh
mTLS (Istio's auto mTLS: both pods carry the injector's ``tlsMode: istio`` label and the
destination port's PeerAuthentication is not DISABLE); otherwise the request is plaintext and
``principals`` / ``namespaces`` match nothing, as on the data plane. JWT attributes are absent
(explain verifies no token), so policies on ``request.auth.*`` read as for a request without
one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from google.protobuf import json_format

from pilot.generate.authz import HTTP_EXT_AUTHZ, HTTP_RBAC
from pilot.generate.listeners import sidecar_listeners
from pilot.generate.tls import speaks_mtls
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from proxy.config.translate.rbac import RbacFilterConfig, http_rbac
from proxy.security.matchers import DynamicMetadata
from proxy.security.rbac import PeerCertificate, RbacAction
from pymesh.config.model.security import MTLSMode

__all__ = ["AuthzStep", "explain_authorization"]


@dataclass(frozen=True, slots=True)
class AuthzStep:
    """``allowed``; ``policy``: the deciding policy (``ns[..]-policy[..]-rule[..]``) or None;
    ``notes``: dry-run and audit matches, CUSTOM authorizers consulted."""

    allowed: bool
    policy: str | None = None
    notes: tuple[str, ...] = ()

    def render(self) -> str:
        verdict = "allowed" if self.allowed else "denied (403 RBAC: access denied)"
        by = f" by {self.policy}" if self.policy else ""
        notes = "".join(f"; {n}" for n in self.notes)
        return f"{verdict}{by}{notes}"


@dataclass(frozen=True, slots=True)
class _Attrs:
    headers: Mapping[bytes, bytes]
    path: bytes
    direct_remote_ip: Any
    remote_ip: Any
    local_ip: Any
    local_port: int
    requested_server_name: str = ""
    tls: PeerCertificate | None = None
    metadata: DynamicMetadata = field(default_factory=dict)

    def header(self, name: bytes) -> bytes | None:
        return self.path if name == b":path" else self.headers.get(name)


def _rbac_filters(ctx: PushContext, node: ProxyNode, port: int) -> list[dict[str, Any]]:
    # What an Envoy sidecar would be sent: pymesh proxies get the same once they enforce.
    listeners = sidecar_listeners(ctx, replace(node, user_agent=""))
    inbound = next(item for item in listeners if item["name"] == "virtualInbound")
    for chain in inbound["filter_chains"]:
        match = chain.get("filter_chain_match", {})
        if match.get("destination_port") not in (None, port):
            continue
        config = chain["filters"][-1]["typed_config"]
        if "http_filters" in config:
            names = (HTTP_RBAC, HTTP_EXT_AUTHZ)
            return [f for f in config["http_filters"] if f["name"] in names]
    return []


def _config(f: Mapping[str, Any]) -> RbacFilterConfig:
    body = {k: v for k, v in f["typed_config"].items() if k != "@type"}
    return http_rbac(json_format.ParseDict(body, rbac_pb2.RBAC()), f["name"])


def _peer_certificate(
    ctx: PushContext, source: ProxyNode, destination: ProxyNode, port: int
) -> PeerCertificate | None:
    """The source's certificate as the destination sees it, if the call is mesh mTLS."""
    if not (speaks_mtls(source.labels) and speaks_mtls(destination.labels)):
        return None
    if ctx.mtls_mode(destination, port) is MTLSMode.DISABLE:
        return None
    sa = source.service_account
    return PeerCertificate(
        uri_sans=(f"spiffe://{ctx.mesh.trust_domain}/ns/{source.namespace}/sa/{sa}",)
    )


def explain_authorization(
    ctx: PushContext,
    source: ProxyNode,
    destination: ProxyNode,
    port: int,
    method: str,
    path: str,
    authority: str,
    headers: Mapping[str, str],
) -> AuthzStep:
    """The verdict of ``destination``'s inbound RBAC filters on a request from ``source``."""
    peer = _peer_certificate(ctx, source, destination, port)
    lowered = {k.lower().encode(): v.encode() for k, v in headers.items()}
    lowered[b":method"] = method.encode()
    lowered[b":authority"] = authority.encode()
    attrs = _Attrs(
        headers=lowered,
        path=path.encode(),
        direct_remote_ip=ipaddress.ip_address(source.ip),
        remote_ip=ipaddress.ip_address(source.ip),
        local_ip=ipaddress.ip_address(destination.ip),
        local_port=port,
        tls=peer,
    )
    filters = _rbac_filters(ctx, destination, port)
    notes: list[str] = []
    if peer is None and filters:
        notes.append("plaintext: the caller presents no identity")
    for f in filters:
        if f["name"] != HTTP_RBAC:
            continue
        config = _config(f)
        if config.shadow_rules is not None:
            shadow = config.shadow_rules.evaluate(attrs)
            if config.shadow_rules_stat_prefix == "istio_ext_authz_":
                if shadow.policy is not None:
                    notes.append(f"CUSTOM authorizer asked ({shadow.policy})")
            elif not shadow.allowed:
                notes.append(f"dry-run would deny ({shadow.policy or 'no ALLOW match'})")
        if config.rules is None:
            continue
        verdict = config.rules.evaluate(attrs)
        if config.rules.action is RbacAction.LOG:
            if verdict.log:
                notes.append(f"audited by {verdict.policy}")
            continue
        if not verdict.allowed:
            return AuthzStep(False, verdict.policy, tuple(notes))
        if config.rules.action is RbacAction.ALLOW:
            return AuthzStep(True, verdict.policy, tuple(notes))
    return AuthzStep(True, None, tuple(notes or (["no policy applies"] if not filters else [])))
