"""The registrations of the security HTTP filters (RBAC, JWT authentication, external
authorization): one :class:`FilterEntry` each, added to the default registry."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_authn_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.ext_authz.v3 import ext_authz_pb2 as network_ext_authz_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2

from proxy.config.translate.ext_authz import (
    EXT_AUTHZ_SUPPORTED,
    ext_authz,
    ext_authz_per_route,
    network_ext_authz,
)
from proxy.config.translate.filters import FilterEntry
from proxy.config.translate.jwt_authn import JWT_SUPPORTED, jwt_authn, jwt_authn_per_route
from proxy.config.translate.rbac import (
    RBAC_SUPPORTED,
    http_rbac,
    http_rbac_per_route,
    network_rbac,
)

__all__ = ["security_entries"]


def security_entries(factories: Mapping[str, Any]) -> Iterator[tuple[FilterEntry, tuple[str, ...]]]:
    """(entry, aliases) for each security filter, with its runtime factory."""
    yield (
        FilterEntry(
            "envoy.filters.http.rbac",
            rbac_pb2.RBAC,
            http_rbac,
            per_route_message=rbac_pb2.RBACPerRoute,
            per_route=http_rbac_per_route,
            supported=RBAC_SUPPORTED,
            factory=factories["envoy.filters.http.rbac"],
        ),
        ("envoy.rbac",),
    )
    yield (
        FilterEntry(
            "envoy.filters.network.rbac",
            network_rbac_pb2.RBAC,
            network_rbac,
            supported=RBAC_SUPPORTED,
            factory=factories["envoy.filters.network.rbac"],
            network=True,
        ),
        (),
    )
    yield (
        FilterEntry(
            "envoy.filters.http.jwt_authn",
            jwt_authn_pb2.JwtAuthentication,
            jwt_authn,
            per_route_message=jwt_authn_pb2.PerRouteConfig,
            per_route=jwt_authn_per_route,
            supported=JWT_SUPPORTED,
            factory=factories["envoy.filters.http.jwt_authn"],
        ),
        (),
    )
    yield (
        FilterEntry(
            "envoy.filters.http.ext_authz",
            ext_authz_pb2.ExtAuthz,
            ext_authz,
            per_route_message=ext_authz_pb2.ExtAuthzPerRoute,
            per_route=ext_authz_per_route,
            supported=EXT_AUTHZ_SUPPORTED,
            factory=factories["envoy.filters.http.ext_authz"],
        ),
        ("envoy.ext_authz",),
    )
    yield (
        FilterEntry(
            "envoy.filters.network.ext_authz",
            network_ext_authz_pb2.ExtAuthz,
            network_ext_authz,
            supported=EXT_AUTHZ_SUPPORTED,
            factory=factories["envoy.filters.network.ext_authz"],
            network=True,
        ),
        (),
    )
