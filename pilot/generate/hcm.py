"""The HTTP connection manager every HTTP listener uses, in Istio's shape: HTTP filters
fault → cors → router (Istio's order), path normalisation, websocket upgrades, and tracing /
access logging when the mesh names Zipkin / mixer."""

from __future__ import annotations

from typing import Any

from pilot.generate.common import ADS, typed
from pilot.model.mesh import MeshConfig

__all__ = ["HCM_NAME", "als_common_config", "http_connection_manager", "http_filters"]

HCM_NAME = "envoy.filters.network.http_connection_manager"

# What mixer reads besides Envoy's standard fields: the request protocol (gRPC or not), a
# gRPC call's status (a trailer, or a header on a trailers-only answer) and the trace id.
_REQUEST_HEADERS_TO_LOG = ["content-type", "x-b3-traceid"]
_RESPONSE_HEADERS_TO_LOG = ["grpc-status"]
_RESPONSE_TRAILERS_TO_LOG = ["grpc-status"]


def als_common_config(log_name: str) -> dict[str, Any]:
    """``CommonGrpcAccessLogConfig`` to mixer's ALS (the ``mixer`` cluster)."""
    return {
        "log_name": log_name,
        "grpc_service": {"envoy_grpc": {"cluster_name": "mixer"}},
        "transport_api_version": "V3",
    }


def http_filters() -> list[dict[str, Any]]:
    return [
        {"name": "envoy.filters.http.fault", "typed_config": typed("fault")},
        {"name": "envoy.filters.http.cors", "typed_config": typed("cors")},
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
) -> dict[str, Any]:
    """The network filter, with routes from RDS (``rds``) or inline (``route_config``)."""
    hcm: dict[str, Any] = {"stat_prefix": stat_prefix, "codec_type": "AUTO"}
    if rds is not None:
        hcm["rds"] = {"config_source": ADS, "route_config_name": rds}
    else:
        hcm["route_config"] = route_config or {}
    hcm["http_filters"] = http_filters()
    hcm["use_remote_address"] = use_remote_address
    hcm["normalize_path"] = True
    hcm["path_with_escaped_slashes_action"] = "KEEP_UNCHANGED"
    hcm["upgrade_configs"] = [{"upgrade_type": "websocket"}]
    hcm["stream_idle_timeout"] = "0s"
    if allow_absolute_url:
        # HTTP_PROXY clients send absolute-form targets (``GET http://reviews:9080/...``).
        hcm["http_protocol_options"] = {"allow_absolute_url": True}
    if mesh.zipkin_address:
        hcm["tracing"] = {
            "random_sampling": {"value": mesh.trace_sampling},
            "provider": {
                "name": "envoy.tracers.zipkin",
                "typed_config": typed(
                    "zipkin",
                    {
                        "collector_cluster": "zipkin",
                        "collector_endpoint": "/api/v2/spans",
                        "collector_endpoint_version": "HTTP_JSON",
                        "trace_id_128bit": True,
                        "shared_span_context": False,
                    },
                ),
            },
        }
    if mesh.mixer_address:
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.http_grpc",
                "typed_config": typed(
                    "als",
                    {
                        "common_config": als_common_config("inbound" if inbound else "outbound"),
                        "additional_request_headers_to_log": _REQUEST_HEADERS_TO_LOG,
                        "additional_response_headers_to_log": _RESPONSE_HEADERS_TO_LOG,
                        "additional_response_trailers_to_log": _RESPONSE_TRAILERS_TO_LOG,
                    },
                ),
            }
        ]
    return {"name": HCM_NAME, "typed_config": typed("hcm", hcm)}
