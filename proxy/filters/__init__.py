"""pymesh's built-in HTTP filters (the router is built into the connection manager)."""

from __future__ import annotations

from proxy.http.filter import HttpFilterFactories

__all__ = ["default_filter_factories"]


def default_filter_factories() -> HttpFilterFactories:
    """The runtime factories of the filters pymesh implements, by Envoy's names."""
    from proxy.filters import cors, fault, local_ratelimit

    factories = HttpFilterFactories()
    factories.register(
        "envoy.filters.http.fault",
        fault.factory,
        type_url="type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    )
    factories.register(
        "envoy.filters.http.local_ratelimit",
        local_ratelimit.factory,
        type_url=(
            "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
        ),
    )
    factories.register(
        "envoy.filters.http.cors",
        cors.factory,
        type_url="type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
    )
    return factories
