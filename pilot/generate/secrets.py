"""SDS: the credentials (``kubernetes://<credentialName>``, and ``...-cacert`` for the CA
that verifies peers) the node's gateway listeners and DestinationRule clusters refer to, from
TLS Secrets in the configuration. Workload identity secrets (``default`` / ``ROOTCA``) come
from the node's agent, not from pilot."""

from __future__ import annotations

import base64
from typing import Any

from pilot.generate.clusters import outbound_plans
from pilot.generate.common import SECRET_TYPE, to_proto
from pilot.generate.gateway import gateway_servers
from pilot.generate.tls import CA_SUFFIX, credential_secret_name
from pilot.model.credentials import TlsCredential
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pymesh.config.model.networking import ClientTLSMode, ServerTLSMode

__all__ = ["build_secrets", "destination_rule_secrets", "gateway_secrets"]


def _inline(data: bytes) -> dict[str, str]:
    return {"inline_bytes": base64.b64encode(data).decode()}


def _certificate(name: str, cred: TlsCredential) -> dict[str, Any]:
    return {
        "name": name,
        "tls_certificate": {
            "certificate_chain": _inline(cred.cert_chain),
            "private_key": _inline(cred.private_key),
        },
    }


def _validation(name: str, ca: bytes) -> dict[str, Any]:
    return {"name": name, "validation_context": {"trusted_ca": _inline(ca)}}


def gateway_secrets(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for servers in gateway_servers(ctx, node).values():
        for gs in servers:
            tls = gs.server.tls
            if tls is None:
                continue
            credentials = tls.credential_names or (
                (tls.credential_name,) if tls.credential_name else ()
            )
            for credential in credentials:
                cred = ctx.credential(node.namespace, credential)
                if cred is not None and cred.cert_chain and cred.private_key:
                    name = credential_secret_name(credential)
                    found.setdefault(name, _certificate(name, cred))
            if tls.mode is ServerTLSMode.SIMPLE or not credentials:
                continue
            ca_name = tls.ca_cert_credential_name or credentials[0] + CA_SUFFIX
            _add_ca(ctx, node, ca_name, credentials[0], found)
    return [found[name] for name in sorted(found)]


def _add_ca(
    ctx: PushContext, node: ProxyNode, ca_name: str, owner: str, found: dict[str, Any]
) -> None:
    # The CA is a Secret of its own, or the ca.crt of the credential itself.
    ca = ctx.credential(node.namespace, ca_name)
    bundle = (ca.ca_cert or ca.cert_chain) if ca is not None else b""
    if not bundle:
        own = ctx.credential(node.namespace, owner)
        bundle = own.ca_cert if own is not None else b""
    if bundle:
        name = credential_secret_name(ca_name)
        found.setdefault(name, _validation(name, bundle))


def destination_rule_secrets(ctx: PushContext, node: ProxyNode) -> list[dict[str, Any]]:
    """Client credentials of DestinationRules (``tls.credentialName``, SIMPLE or MUTUAL)
    for the clusters of this node."""
    found: dict[str, dict[str, Any]] = {}
    for plan in outbound_plans(ctx, node):
        tls = plan.policy.tls
        if tls is None or not tls.credential_name:
            continue
        if tls.mode not in (ClientTLSMode.SIMPLE, ClientTLSMode.MUTUAL):
            continue
        credential = tls.credential_name
        cred = ctx.credential(node.namespace, credential)
        if tls.mode is ClientTLSMode.MUTUAL and cred is not None and cred.private_key:
            name = credential_secret_name(credential)
            found.setdefault(name, _certificate(name, cred))
        _add_ca(ctx, node, credential + CA_SUFFIX, credential, found)
    return [found[name] for name in sorted(found)]


def build_secrets(ctx: PushContext, node: ProxyNode) -> list[Any]:
    bodies = {b["name"]: b for b in destination_rule_secrets(ctx, node)}
    if node.is_router:
        bodies.update((b["name"], b) for b in gateway_secrets(ctx, node))
    return [to_proto(SECRET_TYPE, bodies[name]) for name in sorted(bodies)]
