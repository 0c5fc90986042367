"""What each HTTP connection manager reports, and where: the proxy's tracing (Zipkin) and its
access-log stream to mixer (Envoy ALS), from MeshConfig and the Telemetry API.

Tracing follows the Telemetry in effect for the proxy's workload and direction (outbound
HCMs are ``CLIENT``, inbound ones ``SERVER``; gateways are clients): its provider (else
``defaultProviders.tracing``, else ``defaultConfig.tracing.zipkin.address``), its
``randomSamplingPercentage`` (else ``defaultConfig.tracing.sampling``, Istio's 1%),
``disableSpanReporting`` and ``customTags``. A provider must be a ``zipkin`` extension
provider; a rule naming another kind, or no provider at all, leaves the proxy untraced.

With mixer named, every HTTP connection manager also gets Istio's own two filters,
``istio.metadata_exchange`` (peer identity in ``x-envoy-peer-metadata`` headers) and
``istio.stats`` (Istio's standard metrics in the proxy, served on its ``/stats/prometheus``),
as ``TypedStruct`` marked optional: a real Envoy, which lacks them, skips them.

Access logs always stream to mixer when ``defaultConfig.envoyAccessLogService`` names it:
that stream is what Istio's metrics are made of, so Telemetry's access-log rules are applied
by mixer to its log, not by switching the stream off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from pilot.generate.common import typed
from pilot.model.extension_providers import ExtensionProvider
from pilot.model.mesh import MeshConfig
from pilot.model.proxy import ProxyNode
from pilot.model.push_context import PushContext
from pymesh.config.model.telemetry import CustomTag, Telemetry, WorkloadMode
from pymesh.config.telemetry_policy import TracePolicy, resolve

__all__ = [
    "LEGACY_ZIPKIN",
    "MIXER_CLUSTER",
    "Observability",
    "collector_clusters",
    "observability",
]

log = structlog.get_logger(__name__)

MIXER_CLUSTER = "mixer"
#: the collector of ``defaultConfig.tracing.zipkin.address``
LEGACY_ZIPKIN = "zipkin"

#: Istio's filter state keys of the peers (metadata exchange), as its access logs log them
_PEERS_TO_LOG = ("wasm.upstream_peer", "wasm.downstream_peer")
#: The services an inbound cluster serves (its ``istio.services`` metadata, as Istio's stats
#: filter reads it for ``destination_service``), logged as a custom tag so that mixer names
#: the service without trusting the request's Host header.
_SERVICES_TAG = {
    "tag": "istio.services",
    "metadata": {
        "kind": {"cluster": {}},
        "metadata_key": {"key": "istio", "path": [{"key": "services"}]},
    },
}
# What mixer reads besides Envoy's standard fields: the request protocol (gRPC or not), a
# gRPC call's status (a trailer, or a header on a trailers-only answer) and the trace id.
_REQUEST_HEADERS_TO_LOG = ["content-type", "x-b3-traceid"]
_RESPONSE_HEADERS_TO_LOG = ["grpc-status"]
_RESPONSE_TRAILERS_TO_LOG = ["grpc-status"]
_ISTIO_HEADERS: list[dict[str, Any]] = [{"istio_headers": {}}]


def _istio_filter(name: str, type_url: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "is_optional": True,
        "typed_config": {
            "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
            "type_url": type_url,
            "value": value,
        },
    }


def _tracing_cluster(provider: ExtensionProvider) -> str:
    return f"tracing|{provider.name}"


@dataclass(frozen=True, slots=True)
class _Collector:
    cluster: str
    hostname: str


@dataclass(frozen=True, slots=True)
class Observability:
    """The tracing and access-log fragments of one proxy's HCMs, per direction."""

    client_tracing: dict[str, Any] | None = None
    server_tracing: dict[str, Any] | None = None
    mixer: bool = False

    def tracing(self, inbound: bool) -> dict[str, Any] | None:
        return self.server_tracing if inbound else self.client_tracing

    def stats_filters(self, inbound: bool) -> list[dict[str, Any]]:
        """Istio's metadata exchange and stats HTTP filters (empty without mixer): inbound
        learns its caller from the request and answers with its own metadata, outbound sends
        its own and learns the callee from the response."""
        if not self.mixer:
            return []
        side = "downstream" if inbound else "upstream"
        exchange = {f"{side}_discovery": _ISTIO_HEADERS, f"{side}_propagation": _ISTIO_HEADERS}
        return [
            _istio_filter(
                "istio.metadata_exchange",
                "type.googleapis.com/io.istio.http.peer_metadata.Config",
                exchange,
            ),
            _istio_filter("istio.stats", "type.googleapis.com/stats.PluginConfig", {}),
        ]

    def tcp_access_log(self, inbound: bool) -> list[dict[str, Any]]:
        """A TCP proxy's connections to mixer (``envoy.access_loggers.tcp_grpc``): what
        Istio's ``istio_tcp_*`` metrics are made of."""
        if not self.mixer:
            return []
        common: dict[str, Any] = {
            "log_name": "inbound" if inbound else "outbound",
            "grpc_service": {"envoy_grpc": {"cluster_name": MIXER_CLUSTER}},
            "transport_api_version": "V3",
        }
        if inbound:
            common["custom_tags"] = [_SERVICES_TAG]
        return [
            {
                "name": "envoy.access_loggers.tcp_grpc",
                "typed_config": typed("tcp_als", {"common_config": common}),
            }
        ]

    def access_log(self, inbound: bool) -> list[dict[str, Any]]:
        if not self.mixer:
            return []
        common: dict[str, Any] = {
            "log_name": "inbound" if inbound else "outbound",
            "grpc_service": {"envoy_grpc": {"cluster_name": MIXER_CLUSTER}},
            "transport_api_version": "V3",
            # As Istio's: the peer learnt by metadata exchange, so mixer knows a caller
            # whose address names no proxy.
            "filter_state_objects_to_log": list(_PEERS_TO_LOG),
        }
        if inbound:
            common["custom_tags"] = [_SERVICES_TAG]
        return [
            {
                "name": "envoy.access_loggers.http_grpc",
                "typed_config": typed(
                    "als",
                    {
                        "common_config": common,
                        "additional_request_headers_to_log": _REQUEST_HEADERS_TO_LOG,
                        "additional_response_headers_to_log": _RESPONSE_HEADERS_TO_LOG,
                        "additional_response_trailers_to_log": _RESPONSE_TRAILERS_TO_LOG,
                    },
                ),
            }
        ]


def _collector(mesh: MeshConfig, policy: TracePolicy, node: ProxyNode) -> _Collector | None:
    names = policy.providers or mesh.default_providers.get("tracing", ())
    if not names:
        return _Collector(LEGACY_ZIPKIN, "") if mesh.zipkin_address else None
    provider = mesh.extension_provider(names[0])
    if provider is None or provider.kind != "zipkin":
        kind = provider.kind if provider is not None else "not defined in extensionProviders"
        log.warning("tracing provider not supported", provider=names[0], kind=kind, node=node.id)
        return None
    return _Collector(_tracing_cluster(provider), provider.service)


def _custom_tag(name: str, tag: CustomTag) -> dict[str, Any]:
    if tag.literal is not None:
        return {"tag": name, "literal": {"value": tag.literal.value}}
    if tag.environment is not None:
        env = tag.environment
        return {"tag": name, "environment": {"name": env.name, "default_value": env.default_value}}
    assert tag.header is not None
    header = tag.header
    return {
        "tag": name,
        "request_header": {"name": header.name, "default_value": header.default_value},
    }


def _tracing(mesh: MeshConfig, policy: TracePolicy, node: ProxyNode) -> dict[str, Any] | None:
    if policy.disable_span_reporting:
        return None
    collector = _collector(mesh, policy, node)
    if collector is None:
        return None
    zipkin: dict[str, Any] = {
        "collector_cluster": collector.cluster,
        "collector_endpoint": "/api/v2/spans",
        "collector_endpoint_version": "HTTP_JSON",
        "trace_id_128bit": True,
        "shared_span_context": False,
    }
    if collector.hostname:
        zipkin["collector_hostname"] = collector.hostname
    sampling = policy.sampling if policy.sampling is not None else mesh.trace_sampling
    tracing: dict[str, Any] = {
        "random_sampling": {"value": sampling},
        "provider": {"name": "envoy.tracers.zipkin", "typed_config": typed("zipkin", zipkin)},
    }
    if policy.custom_tags:
        tracing["custom_tags"] = [_custom_tag(n, t) for n, t in sorted(policy.custom_tags.items())]
    return tracing


def observability(ctx: PushContext, node: ProxyNode) -> Observability:
    telemetries = ctx.config.of_kind(Telemetry)
    mesh = ctx.mesh
    policies = {
        mode: resolve(
            telemetries, node.namespace, node.labels, mode, root_namespace=mesh.root_namespace
        ).tracing
        if telemetries
        else TracePolicy()
        for mode in (WorkloadMode.CLIENT, WorkloadMode.SERVER)
    }
    return Observability(
        client_tracing=_tracing(mesh, policies[WorkloadMode.CLIENT], node),
        server_tracing=_tracing(mesh, policies[WorkloadMode.SERVER], node),
        mixer=bool(mesh.mixer_address),
    )


def collector_clusters(mesh: MeshConfig) -> list[tuple[str, str, bool]]:
    """(cluster name, ``host:port``, gRPC) of every collector a proxy may report to."""
    found = []
    if mesh.zipkin_address:
        found.append((LEGACY_ZIPKIN, mesh.zipkin_address, False))
    for provider in mesh.extension_providers:
        if provider.kind == "zipkin" and provider.service and provider.port:
            found.append((_tracing_cluster(provider), provider.address, False))
    if mesh.mixer_address:
        found.append((MIXER_CLUSTER, mesh.mixer_address, True))
    return found
