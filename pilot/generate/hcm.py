"""The HTTP connection manager every HTTP listener uses, in Istio's shape: HTTP filters
[security: jwt_authn, ext_authz, rbac] → fault → cors → router (Istio's order), path
normalisation, websocket upgrades, and tracing / access logging as
:mod:`pilot.generate.telemetry` decides for the proxy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pilot.generate.common import ADS, typed
from pilot.generate.telemetry import Observability
from pilot.model.mesh import MeshConfig

__all__ = ["HCM_NAME", "http_connection_manager", "http_filters"]

HCM_NAME = "envoy.filters.network.http_connection_manager"


def http_filters(
    security: Sequence[dict[str, Any]] = (), stats: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """``security``: authentication and authorization filters (inbound and gateways only);
    ``stats``: Istio's metadata exchange and stats filters (first and just before the router,
    where istiod puts them)."""
    return [
        *stats[:1],
        *security,
        {"name": "envoy.filters.http.fault", "typed_config": typed("fault")},
        {"name": "envoy.filters.http.cors", "typed_config": typed("cors")},
        *stats[1:],
        {"name": "envoy.filters.http.router", "typed_config": typed("router")},
    ]


def http_connection_manager(
    mesh: MeshConfig,
    *,
    stat_prefix: str,
    rds: str | None = None,
    route_config: dict[str, Any] | None = None,
    use_remote_address: bool = False,
    allow_absolute_url: bool = False,
    inbound: bool = False,
    observe: Observability | None = None,
    client_cert: bool = False,
    security_filters: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The network filter, with routes from RDS (``rds``) or inline (``route_config``).
    ``client_cert``: the inbound side of mesh mTLS, which tells the app its caller in
    ``X-Forwarded-Client-Cert`` (Istio's ``By=…;Hash=…;Subject="";URI=spiffe://…``)."""
    hcm: dict[str, Any] = {"stat_prefix": stat_prefix, "codec_type": "AUTO"}
    if rds is not None:
        hcm["rds"] = {"config_source": ADS, "route_config_name": rds}
    else:
        hcm["route_config"] = route_config or {}
    stats = observe.stats_filters(inbound) if observe is not None else []
    hcm["http_filters"] = http_filters(security_filters, stats)
    hcm["use_remote_address"] = use_remote_address
    hcm["normalize_path"] = True
    hcm["path_with_escaped_slashes_action"] = "KEEP_UNCHANGED"
    hcm["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    hcm["stream_idle_timeout"] = "0s"
    if client_cert:
        hcm["forward_client_cert_details"] = "APPEND_FORWARD"
        hcm["set_current_client_cert_details"] = {"subject": True, "dns": True, "uri": True}
    if allow_absolute_url:
        # HTTP_PROXY clients send absolute-form targets (``GET http://reviews:9080/...``).
        hcm["http_protocol_options"] = {"allow_absolute_url": True}
    if observe is not None:
        tracing = observe.tracing(inbound)
        if tracing is not None:
            hcm["tracing"] = tracing
        access_log = observe.access_log(inbound)
        if access_log:
            hcm["access_log"] = access_log
    return {"name": HCM_NAME, "typed_config": typed("hcm", hcm)}
