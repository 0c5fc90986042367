"""Pure generators: (push context, proxy, resource type) → the xDS resources that proxy needs.

State of the world: :func:`generate` returns every resource of the type for the node; for RDS
and EDS that is the full set its LDS / CDS output refers to (the ADS server filters by the
names the proxy asked for). No I/O, no clock, no global state. gRPC's proxyless clients get
their own resources from :mod:`pilot.generate.proxyless`.
"""

from __future__ import annotations

from pilot.generate import proxyless
from pilot.generate.common import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)
from pilot.generate.dispatch import TYPE_URLS, generate
from pilot.generate.explain import Explanation, explain

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "SECRET_TYPE",
    "TYPE_URLS",
    "Explanation",
    "explain",
    "generate",
    "proxyless",
]
