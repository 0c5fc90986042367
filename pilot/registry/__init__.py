"""The service registry: services, ports and endpoints, from configuration and the proxies
connected right now."""

from pilot.registry.registry import (
    Endpoint,
    Registry,
    Resolution,
    Service,
    ServiceInstance,
    ServicePort,
    as_resources,
)
from pymesh.config.protocol import is_http, protocol_of

__all__ = [
    "Endpoint",
    "Registry",
    "Resolution",
    "Service",
    "ServiceInstance",
    "ServicePort",
    "as_resources",
    "is_http",
    "protocol_of",
]
