"""Bootstrap model (``envoy.config.bootstrap.v3``). See ``model_common`` for conventions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from proxy.config.model_cluster import Cluster
from proxy.config.model_common import ConfigSource, Locality, SocketAddress, empty_mapping
from proxy.config.model_http import AccessLog
from proxy.config.model_listener import Listener
from proxy.config.model_tls import Secret

__all__ = [
    "Admin",
    "AdsConfig",
    "ApiType",
    "Bootstrap",
    "DynamicResources",
    "Node",
    "StaticResources",
]


@dataclass(frozen=True, slots=True)
class Node:
    """Identifies this proxy to the control plane; ``metadata`` is the plain-JSON Struct."""

    id: str = ""
    cluster: str = ""
    metadata: Mapping[str, object] = field(default_factory=empty_mapping)
    locality: Locality = field(default_factory=Locality)
    user_agent_name: str = ""


@dataclass(frozen=True, slots=True)
class Admin:
    """The admin listener; ``address=None`` means no admin listener."""

    address: SocketAddress | None = None
    access_log: tuple[AccessLog, ...] = ()


class ApiType(StrEnum):
    GRPC = "GRPC"  # state of the world
    DELTA_GRPC = "DELTA_GRPC"  # incremental


@dataclass(frozen=True, slots=True)
class AdsConfig:
    """The ADS stream (v3, state of the world or delta): gRPC to ``cluster_name``, a static
    cluster."""

    cluster_name: str
    api_type: ApiType = ApiType.GRPC
    transport_api_version: str = "V3"
    timeout: float | None = None
    set_node_on_first_message_only: bool = False


@dataclass(frozen=True, slots=True)
class DynamicResources:
    """``lds_config`` / ``cds_config`` None means that resource type is static only."""

    ads_config: AdsConfig | None = None
    lds_config: ConfigSource | None = None
    cds_config: ConfigSource | None = None


@dataclass(frozen=True, slots=True)
class StaticResources:
    listeners: tuple[Listener, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    secrets: tuple[Secret, ...] = ()


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """A translated Envoy bootstrap; ``source`` is the file it came from."""

    node: Node = field(default_factory=Node)
    static_resources: StaticResources = field(default_factory=StaticResources)
    dynamic_resources: DynamicResources | None = None
    admin: Admin | None = None
    source: str = ""
