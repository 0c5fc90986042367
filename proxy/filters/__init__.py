"""pymesh's built-in HTTP filters, the router among them. Each one's registration (type URL,
translation, per-route config, factory) is a :class:`~proxy.config.translate.FilterEntry` in
:func:`proxy.config.translate.default_registry`."""

from __future__ import annotations

from typing import Any

__all__ = ["builtin_factories"]


def builtin_factories() -> dict[str, Any]:
    """The runtime factories of the filters pymesh implements, by Envoy's names."""
    from proxy.filters import (
        cors,
        ext_authz,
        fault,
        jwt_authn,
        local_ratelimit,
        network_ext_authz,
        network_rbac,
        ratelimit,
        rbac,
    )
    from proxy.http.router import router_factory

    return {
        "envoy.filters.http.router": router_factory,
        "envoy.filters.http.fault": fault.factory,
        "envoy.filters.http.local_ratelimit": local_ratelimit.factory,
        "envoy.filters.http.cors": cors.factory,
        "envoy.filters.http.ratelimit": ratelimit.factory,
        "envoy.filters.http.rbac": rbac.factory,
        "envoy.filters.network.rbac": network_rbac.network_factory,
        "envoy.filters.http.jwt_authn": jwt_authn.factory,
        "envoy.filters.http.ext_authz": ext_authz.factory,
        "envoy.filters.network.ext_authz": network_ext_authz.network_factory,
    }
