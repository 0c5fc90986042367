"""The registrations of Istio's own HTTP filters: ``istio.metadata_exchange``
(``io.istio.http.peer_metadata.Config``) and ``istio.stats`` (``stats.PluginConfig``).

Their protos ship with Istio's proxy, not with Envoy's: the message types are declared here,
field for field as far as pymesh implements them, in a descriptor pool of their own. istiod
sends them as ``TypedStruct`` (a real Envoy, which lacks them, skips them as optional), so a
field pymesh does not declare is refused when its JSON is parsed, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from proxy.config.model_istio import IstioStatsConfig, PeerMetadataConfig
from proxy.config.translate.common import join
from proxy.config.translate.filters import FilterEntry
from pymesh.errors import UnsupportedError

__all__ = ["PEER_METADATA_URL", "STATS_URL", "istio_entries", "message_classes"]

_PEER_PACKAGE = "io.istio.http.peer_metadata"
PEER_METADATA_URL = f"type.googleapis.com/{_PEER_PACKAGE}.Config"
STATS_URL = "type.googleapis.com/stats.PluginConfig"
_FIELD = descriptor_pb2.FieldDescriptorProto
_DIRECTIONS = (
    "downstream_discovery",
    "upstream_discovery",
    "downstream_propagation",
    "upstream_propagation",
)


def _message_field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    type_name: str,
    *,
    repeated: bool = False,
    oneof: int | None = None,
) -> None:
    field = message.field.add(name=name, number=number, type=_FIELD.TYPE_MESSAGE)
    field.type_name = type_name
    field.label = _FIELD.LABEL_REPEATED if repeated else _FIELD.LABEL_OPTIONAL
    if oneof is not None:
        field.oneof_index = oneof


def _build() -> dict[str, type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    peer = descriptor_pb2.FileDescriptorProto(
        name="pymesh/istio/peer_metadata.proto", package=_PEER_PACKAGE, syntax="proto3"
    )
    config = peer.message_type.add(name="Config")
    for name in ("IstioHeaders", "WorkloadDiscovery"):
        config.nested_type.add(name=name)
    prefix = f".{_PEER_PACKAGE}.Config"
    discovery = config.nested_type.add(name="DiscoveryMethod")
    discovery.oneof_decl.add(name="method_specifier")
    _message_field(discovery, "istio_headers", 1, f"{prefix}.IstioHeaders", oneof=0)
    _message_field(discovery, "workload_discovery", 2, f"{prefix}.WorkloadDiscovery", oneof=0)
    propagation = config.nested_type.add(name="PropagationMethod")
    propagation.oneof_decl.add(name="method_specifier")
    _message_field(propagation, "istio_headers", 1, f"{prefix}.IstioHeaders", oneof=0)
    for number, name in enumerate(_DIRECTIONS, start=1):
        kind = "DiscoveryMethod" if name.endswith("discovery") else "PropagationMethod"
        _message_field(config, name, number, f"{prefix}.{kind}", repeated=True)
    config.field.add(
        name="shared_with_upstream", number=5, type=_FIELD.TYPE_BOOL, label=_FIELD.LABEL_OPTIONAL
    )
    stats = descriptor_pb2.FileDescriptorProto(
        name="pymesh/istio/stats.proto", package="stats", syntax="proto3"
    )
    stats.message_type.add(name="PluginConfig")
    pool.Add(peer)
    pool.Add(stats)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
        for name in (f"{_PEER_PACKAGE}.Config", "stats.PluginConfig")
    }


_CLASSES = _build()


def message_classes() -> Mapping[str, type[Message]]:
    """The declared messages by full name (tests build configs with them)."""
    return _CLASSES


_SUPPORTED: Mapping[str, frozenset[str]] = {
    f"{_PEER_PACKAGE}.Config": frozenset(_DIRECTIONS),
    f"{_PEER_PACKAGE}.Config.DiscoveryMethod": frozenset({"istio_headers"}),
    f"{_PEER_PACKAGE}.Config.PropagationMethod": frozenset({"istio_headers"}),
    f"{_PEER_PACKAGE}.Config.IstioHeaders": frozenset(),
    "stats.PluginConfig": frozenset(),
}


def _peer_metadata(message: Any, path: str) -> PeerMetadataConfig:
    # check_supported has refused workload_discovery and shared_with_upstream already; an
    # empty method (neither kind set) is refused here.
    flags = {}
    for name in _DIRECTIONS:
        methods = getattr(message, name)
        for i, method in enumerate(methods):
            if method.WhichOneof("method_specifier") is None:
                raise UnsupportedError(
                    "a method must name istio_headers", path=join(path, f"{name}[{i}]")
                )
        flags[name] = bool(methods)
    return PeerMetadataConfig(**flags)


def istio_entries(factories: Mapping[str, Any]) -> Iterator[tuple[FilterEntry, tuple[str, ...]]]:
    """(entry, aliases) for Istio's two telemetry filters, with their runtime factories."""
    yield (
        FilterEntry(
            "istio.metadata_exchange",
            _CLASSES[f"{_PEER_PACKAGE}.Config"],
            _peer_metadata,
            supported=_SUPPORTED,
            factory=factories["istio.metadata_exchange"],
        ),
        (),
    )
    yield (
        FilterEntry(
            "istio.stats",
            _CLASSES["stats.PluginConfig"],
            lambda message, path: IstioStatsConfig(),
            supported=_SUPPORTED,
            factory=factories["istio.stats"],
        ),
        (),
    )
