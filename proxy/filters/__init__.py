"""pymesh's built-in HTTP filters, the router among them. Each one's registration (type URL,
translation, per-route config, factory) is a :class:`~proxy.config.translate.FilterEntry` in
:func:`proxy.config.translate.default_registry`."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BUILTIN_TYPE_URLS", "builtin_factories", "builtin_factory_for"]

_T = "type.googleapis.com/envoy.extensions.filters.http."
_N = "type.googleapis.com/envoy.extensions.filters.network."
# The built-in filters' config type URLs, as strings: a proxy whose bootstrap was translated
# elsewhere (proxy.config.isolated) finds their factories without importing a single proto
# (tests/proxy/test_filters_registration.py checks these against the registry's entries).
BUILTIN_TYPE_URLS = {
    "envoy.filters.http.router": _T + "router.v3.Router",
    "envoy.filters.http.fault": _T + "fault.v3.HTTPFault",
    "envoy.filters.http.local_ratelimit": _T + "local_ratelimit.v3.LocalRateLimit",
    "envoy.filters.http.cors": _T + "cors.v3.Cors",
    "envoy.filters.http.rbac": _T + "rbac.v3.RBAC",
    "envoy.filters.http.jwt_authn": _T + "jwt_authn.v3.JwtAuthentication",
    "envoy.filters.http.ext_authz": _T + "ext_authz.v3.ExtAuthz",
    "envoy.filters.network.rbac": _N + "rbac.v3.RBAC",
    "envoy.filters.network.ext_authz": _N + "ext_authz.v3.ExtAuthz",
    "istio.metadata_exchange": "type.googleapis.com/io.istio.http.peer_metadata.Config",
    "istio.stats": "type.googleapis.com/stats.PluginConfig",
}


# Where each built-in filter's runtime factory lives. Modules are imported when a filter is
# first used, so a proxy pays (in memory and start-up) only for the filters it runs: the
# security filters alone bring in JWT and crypto libraries worth ~16 MB.
_FACTORIES = {
    "envoy.filters.http.router": ("proxy.http.router", "router_factory"),
    "envoy.filters.http.fault": ("proxy.filters.fault", "factory"),
    "envoy.filters.http.local_ratelimit": ("proxy.filters.local_ratelimit", "factory"),
    "envoy.filters.http.cors": ("proxy.filters.cors", "factory"),
    "envoy.filters.http.ratelimit": ("proxy.filters.ratelimit", "factory"),
    "envoy.filters.http.rbac": ("proxy.filters.rbac", "factory"),
    "envoy.filters.network.rbac": ("proxy.filters.network_rbac", "network_factory"),
    "envoy.filters.http.jwt_authn": ("proxy.filters.jwt_authn", "factory"),
    "envoy.filters.http.ext_authz": ("proxy.filters.ext_authz", "factory"),
    "envoy.filters.network.ext_authz": ("proxy.filters.network_ext_authz", "network_factory"),
    "istio.metadata_exchange": ("proxy.filters.istio_stats", "exchange_factory"),
    "istio.stats": ("proxy.filters.istio_stats", "stats_factory"),
}


def _load(name: str) -> Any:
    module, attr = _FACTORIES[name]
    return getattr(importlib.import_module(module), attr)


def builtin_factories() -> dict[str, Any]:
    """The runtime factories of the filters pymesh implements, by Envoy's names."""
    return {name: _load(name) for name in _FACTORIES}


def builtin_factory_for(name: str, type_url: str, *, network: bool = False) -> Any | None:
    """A built-in HTTP filter's factory (a network read filter's with ``network``) by its
    config type URL, else by its name."""
    found = next((n for n, url in BUILTIN_TYPE_URLS.items() if url == type_url), name)
    if found not in _FACTORIES or found.startswith("envoy.filters.network.") != network:
        return None
    return _load(found)
