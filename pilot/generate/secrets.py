"""SDS: the gateway credentials (``kubernetes://<credentialName>``, and ``...-cacert`` for
MUTUAL) the node's listeners refer to, from TLS Secrets in the configuration. Workload
identity secrets (``default`` / ``ROOTCA``) are the CA's, not pilot's."""

from __future__ import annotations

import base64
from typing import Any

from pilot.generate.common import SECRET_TYPE, to_proto
from pilot.generate.gateway import gateway_servers
from pilot.generate.tls import CA_SUFFIX, credential_secret_name
from pilot.model.credentials import TlsCredential
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pymesh.config.model.networking import ServerTLSMode

__all__ = ["build_secrets", "gateway_secrets"]


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
            # The CA is a Secret of its own, or the ca.crt of the credential itself.
            ca = ctx.credential(node.namespace, ca_name)
            bundle = (ca.ca_cert or ca.cert_chain) if ca is not None else b""
            if not bundle:
                own = ctx.credential(node.namespace, credentials[0])
                bundle = own.ca_cert if own is not None else b""
            if bundle:
                name = credential_secret_name(ca_name)
                found.setdefault(name, _validation(name, bundle))
    return [found[name] for name in sorted(found)]


def build_secrets(ctx: PushContext, node: ProxyNode) -> list[Any]:
    if not node.is_router:
        return []
    return [to_proto(SECRET_TYPE, body) for body in gateway_secrets(ctx, node)]
