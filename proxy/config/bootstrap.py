"""Load an Envoy v3 bootstrap (YAML or JSON) into ``model.Bootstrap``.

The text is parsed into the real ``envoy.config.bootstrap.v3.Bootstrap`` proto (unknown fields
and wrong types rejected, as Envoy does), then translated by the same code that handles
resources pushed over xDS, then cross-checked the way Envoy checks a whole bootstrap (duplicate
names and addresses, unknown clusters and secrets).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2

from proxy.config.model import (
    AccessLog,
    Admin,
    AdsConfig,
    ApiType,
    Bootstrap,
    Cluster,
    DynamicResources,
    HttpConnectionManager,
    Listener,
    Node,
    SdsSecretConfig,
    SocketAddress,
    StaticResources,
    TcpProxy,
)
from proxy.config.translate import (
    FilterRegistry,
    check_supported,
    default_registry,
    translate_cluster,
    translate_listener,
    translate_secret,
)
from proxy.config.translate.access_log import (
    access_log_service_clusters,
    access_logs,
    file_access_log,
)
from proxy.config.translate.common import (
    api_version,
    at,
    config_source,
    frozen_mapping,
    join,
    locality,
    opt_duration,
    socket_address,
    struct_to_dict,
)
from proxy.config.translate.parse import parse_message
from proxy.config.translate.ratelimit import rate_limit_service_clusters
from pymesh.errors import UnsupportedError, ValidationError

__all__ = [
    "bootstrap_from_dict",
    "load_bootstrap",
    "parse_bootstrap",
    "translate_bootstrap",
]


def load_bootstrap(path: str | Path, registry: FilterRegistry | None = None) -> Bootstrap:
    """Read, validate and translate a bootstrap file (``.yaml``/``.yml``/``.json``, or
    sniffed from the content otherwise)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"cannot read bootstrap: {exc.strerror}", source=source) from None
    suffix = Path(path).suffix.lower()
    data: Any
    try:
        if suffix == ".json" or (suffix not in (".yaml", ".yml") and text.lstrip().startswith("{")):
            data = json.loads(text)
        else:
            documents = list(yaml.safe_load_all(text))
            if len(documents) != 1:
                raise ValidationError(
                    f"expected one YAML document, found {len(documents)}", source=source
                )
            data = documents[0]
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValidationError(f"cannot parse bootstrap: {exc}", source=source) from None
    return bootstrap_from_dict(data, source, registry)


def bootstrap_from_dict(
    data: Any, source: str = "<dict>", registry: FilterRegistry | None = None
) -> Bootstrap:
    """Validate and translate a bootstrap given as plain data (what YAML/JSON parse to)."""
    proto = parse_bootstrap(data, source)
    return translate_bootstrap(proto, registry, source)


def parse_bootstrap(data: Any, source: str = "<dict>") -> bootstrap_pb2.Bootstrap:
    """Plain data → the Envoy proto, refusing unknown fields and wrong types with their path."""
    return parse_message({} if data is None else data, bootstrap_pb2.Bootstrap, source)


def translate_bootstrap(
    proto: bootstrap_pb2.Bootstrap, registry: FilterRegistry | None = None, source: str = ""
) -> Bootstrap:
    """Translate and cross-check a parsed bootstrap; errors carry ``source``."""
    registry = registry if registry is not None else default_registry()
    try:
        return _translate(proto, registry, source)
    except ValidationError as exc:
        raise type(exc)(exc.message, source=source or None, path=exc.path) from None


def _pipes_only(cluster: Any) -> bool:
    endpoints = [
        item.endpoint for group in cluster.load_assignment.endpoints for item in group.lb_endpoints
    ]
    return bool(endpoints) and all(e.address.WhichOneof("address") == "pipe" for e in endpoints)


def _translate(proto: Any, registry: FilterRegistry, source: str) -> Bootstrap:
    static = proto.static_resources
    # Top-level fields first, so an unsupported section is named before its contents.
    shallow = bootstrap_pb2.Bootstrap()
    shallow.CopyFrom(proto)
    shallow.static_resources.Clear()
    check_supported(shallow, "")
    grpc_clusters = (
        {
            service.envoy_grpc.cluster_name
            for service in proto.dynamic_resources.ads_config.grpc_services
        }
        | rate_limit_service_clusters(static.listeners)
        | access_log_service_clusters(static.listeners)
    )
    # A cluster on Unix sockets only is a gRPC side call's (the identity agent's SDS,
    # Istio's ``sds-grpc``): the data path never connects there.
    grpc_clusters |= {item.name for item in static.clusters if _pipes_only(item)}
    clusters = tuple(
        translate_cluster(
            item, at("static_resources.clusters", index), allow_http2=item.name in grpc_clusters
        )
        for index, item in enumerate(static.clusters)
    )
    listeners = tuple(
        translate_listener(item, registry, at("static_resources.listeners", index))
        for index, item in enumerate(static.listeners)
    )
    secrets = tuple(
        translate_secret(item, at("static_resources.secrets", index))
        for index, item in enumerate(static.secrets)
    )
    dynamic = (
        _dynamic_resources(proto.dynamic_resources, "dynamic_resources")
        if proto.HasField("dynamic_resources")
        else None
    )
    result = Bootstrap(
        node=_node(proto.node),
        static_resources=StaticResources(listeners, clusters, secrets),
        dynamic_resources=dynamic,
        admin=_admin(proto.admin, "admin") if proto.HasField("admin") else None,
        source=source,
    )
    _cross_check(result)
    return result


def _node(proto: Any) -> Node:
    return Node(
        id=proto.id,
        cluster=proto.cluster,
        metadata=frozen_mapping(
            struct_to_dict(proto.metadata) if proto.HasField("metadata") else {}
        ),
        locality=locality(proto.locality),
        user_agent_name=proto.user_agent_name,
    )


def _admin(proto: Any, path: str) -> Admin:
    address = None
    if proto.HasField("address"):
        if proto.address.WhichOneof("address") != "socket_address":
            raise UnsupportedError(
                "the admin listener needs a socket_address in pymesh", path=join(path, "address")
            )
        address = socket_address(proto.address.socket_address, join(path, "address.socket_address"))
    logs: tuple[AccessLog, ...] = access_logs(proto.access_log, join(path, "access_log"))
    if proto.access_log_path:
        logs = (*logs, file_access_log(proto.access_log_path))
    return Admin(address=address, access_log=logs)


def _dynamic_resources(proto: Any, path: str) -> DynamicResources:
    ads = None
    if proto.HasField("ads_config"):
        ads_path = join(path, "ads_config")
        config = proto.ads_config
        api_type = type(config).ApiType.Name(config.api_type)
        if api_type not in ("GRPC", "DELTA_GRPC"):
            raise UnsupportedError(
                f"ads_config api_type {api_type} is not supported by pymesh (GRPC, state of the "
                "world, or DELTA_GRPC)",
                path=join(ads_path, "api_type"),
            )
        if len(config.grpc_services) != 1 or not config.grpc_services[0].HasField("envoy_grpc"):
            raise ValidationError(
                "ads_config needs exactly one grpc_services entry with envoy_grpc",
                path=join(ads_path, "grpc_services"),
            )
        service = config.grpc_services[0]
        ads = AdsConfig(
            cluster_name=service.envoy_grpc.cluster_name,
            api_type=ApiType(api_type),
            transport_api_version=api_version(config, "transport_api_version", ads_path),
            timeout=opt_duration(service, "timeout"),
            set_node_on_first_message_only=config.set_node_on_first_message_only,
        )
    return DynamicResources(
        ads_config=ads,
        lds_config=(
            config_source(proto.lds_config, join(path, "lds_config"))
            if proto.HasField("lds_config")
            else None
        ),
        cds_config=(
            config_source(proto.cds_config, join(path, "cds_config"))
            if proto.HasField("cds_config")
            else None
        ),
    )


# --- whole-bootstrap checks ----------------------------------------------------------------


def _cross_check(bootstrap: Bootstrap) -> None:
    static = bootstrap.static_resources
    clusters: dict[str, Cluster] = {}
    for index, cluster in enumerate(static.clusters):
        if cluster.name in clusters:
            raise ValidationError(
                f"cluster manager: duplicate cluster '{cluster.name}'",
                path=at("static_resources.clusters", index),
            )
        clusters[cluster.name] = cluster
    secrets = {secret.name for secret in static.secrets}
    names: set[str] = set()
    addresses: dict[object, str] = {}
    for index, listener in enumerate(static.listeners):
        path = at("static_resources.listeners", index)
        if listener.name in names:
            raise ValidationError(f"duplicate listener name '{listener.name}'", path=path)
        names.add(listener.name)
        if listener.bind_to_port and listener.address in addresses:
            shown = (
                f"{listener.address.host}:{listener.address.port}"
                if isinstance(listener.address, SocketAddress)
                else listener.address.path
            )
            raise ValidationError(
                f"error adding listener: '{listener.name}' has duplicate address '{shown}' as "
                f"existing listener '{addresses[listener.address]}'",
                path=join(path, "address"),
            )
        addresses[listener.address] = listener.name
        _check_listener_refs(listener, clusters, secrets, path)
    for index, cluster in enumerate(static.clusters):
        tls = cluster.transport_socket
        if tls is not None:
            _check_secrets(
                (*tls.common.tls_certificate_sds, tls.common.validation_context_sds),
                secrets,
                join(at("static_resources.clusters", index), "transport_socket"),
            )
    dynamic = bootstrap.dynamic_resources
    if dynamic is not None and dynamic.ads_config is not None:
        name = dynamic.ads_config.cluster_name
        found = clusters.get(name)
        if found is None or found.type.value == "EDS":
            raise ValidationError(
                "envoy::config::core::v3::ApiConfigSource must have a statically defined non-EDS "
                f"cluster: '{name}' does not exist, was added via api, or is an EDS cluster",
                path="dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name",
            )
    if (
        dynamic is not None
        and dynamic.ads_config is None
        and (dynamic.lds_config is not None or dynamic.cds_config is not None)
    ):
        raise ValidationError(
            "lds_config/cds_config use ADS but dynamic_resources has no ads_config",
            path="dynamic_resources",
        )


def _check_listener_refs(
    listener: Listener, clusters: Mapping[str, Cluster], secrets: set[str], path: str
) -> None:
    all_chains = [
        (at(join(path, "filter_chains"), index), chain)
        for index, chain in enumerate(listener.filter_chains)
    ]
    if listener.default_filter_chain is not None:
        all_chains.append((join(path, "default_filter_chain"), listener.default_filter_chain))
    for chain_path, chain in all_chains:
        if chain.transport_socket is not None:
            common = chain.transport_socket.common
            _check_secrets(
                (*common.tls_certificate_sds, common.validation_context_sds),
                secrets,
                join(chain_path, "transport_socket"),
            )
        for index, network_filter in enumerate(chain.filters):
            config = network_filter.config
            filter_path = join(at(join(chain_path, "filters"), index), "typed_config")
            if isinstance(config, HttpConnectionManager):
                _check_hcm_clusters(config, clusters, filter_path)
            elif isinstance(config, TcpProxy):
                pass  # Envoy resolves the TCP proxy's cluster per connection.


def _check_hcm_clusters(
    config: HttpConnectionManager, clusters: Mapping[str, Cluster], path: str
) -> None:
    route_config = config.route_config
    if route_config is not None and route_config.validate_clusters is not False:
        for name in sorted(route_config.cluster_names):
            if name not in clusters:
                raise ValidationError(
                    f"route: unknown cluster '{name}'", path=join(path, "route_config")
                )
    if config.tracing is not None and config.tracing.provider is not None:
        name = config.tracing.provider.collector_cluster
        if name not in clusters:
            raise ValidationError(
                f"envoy.tracers.zipkin: unknown cluster '{name}'",
                path=join(path, "tracing.provider.typed_config.collector_cluster"),
            )


def _check_secrets(refs: Iterable[SdsSecretConfig | None], secrets: set[str], path: str) -> None:
    for ref in refs:
        if ref is not None and ref.config_source is None and ref.name not in secrets:
            raise ValidationError(f"Unknown static secret: {ref.name}", path=path)
