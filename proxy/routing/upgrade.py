"""Whether a request may switch protocols, as Envoy's connection manager decides (pure).

An upgrade (``Upgrade: websocket``, an HTTP/2 extended CONNECT, which the codec turns into
one) or a CONNECT names an upgrade type. A route's ``upgrade_configs`` entry for that type
decides first: disabled refuses it even where the connection manager allows it, enabled allows
it even where the connection manager has no entry. Otherwise the connection manager's
``upgrade_configs`` decide. Types compare case-insensitively (``CONNECT`` and ``connect``).
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.config.model_http import UpgradeConfig
from proxy.config.model_route import RouteUpgrade

__all__ = ["terminates_connect", "upgrade_allowed", "upgrade_type"]


def upgrade_type(method: bytes, upgrade_header: bytes | None) -> str:
    """The upgrade type a request asks for: ``connect`` for CONNECT, else the Upgrade
    field's value, lower-cased."""
    if method == b"CONNECT":
        return "connect"
    return (upgrade_header or b"").decode("latin-1").strip().lower()


def upgrade_allowed(kind: str, hcm: Sequence[UpgradeConfig], route: Sequence[RouteUpgrade]) -> bool:
    for entry in route:
        if entry.upgrade_type == kind:
            return entry.enabled
    return any(entry.upgrade_type == kind and entry.enabled for entry in hcm)


def terminates_connect(route: Sequence[RouteUpgrade]) -> bool:
    """The route's CONNECT entry has ``connect_config``: the proxy answers the CONNECT itself
    and carries the tunnel's bytes over plain TCP to the upstream."""
    return any(entry.upgrade_type == "connect" and entry.terminate_connect for entry in route)
