"""JSON views for the admin API: resources as Kubernetes objects, the xDS a proxy was sent,
and the kind names ``kubectl``/``istioctl`` users type."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from enum import Enum
from typing import Any

from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message  # type: ignore[import-untyped, unused-ignore]

from pilot.xds.connection import Connection
from pilot.xds.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
)
from pymesh.config import Resource, encode
from pymesh.config.kinds import kind_alias, kind_info
from pymesh.errors import ValidationError

__all__ = ["CONFIG_TYPES", "kind_alias", "proxy_config", "resource_json", "to_jsonable"]


def resource_json(res: Resource[Any]) -> dict[str, Any]:
    """The object as ``kubectl get -o json`` shows it, plus where pilot read it."""
    metadata: dict[str, Any] = {"name": res.name}
    if res.namespace:
        metadata["namespace"] = res.namespace
    if res.labels:
        metadata["labels"] = dict(res.labels)
    if res.annotations:
        metadata["annotations"] = dict(res.annotations)
    info = kind_info(res.api_version, res.kind)
    fields = encode(res.spec)
    body = fields if info is not None and info.top_level else {"spec": fields}
    return {
        "apiVersion": res.api_version,
        "kind": res.kind,
        "metadata": metadata,
        **body,
        "_source": res.source,
    }


CONFIG_TYPES: Mapping[str, str] = {
    **dict.fromkeys(("listeners", "listener", "lds"), LISTENER_TYPE),
    **dict.fromkeys(("routes", "route", "rds"), ROUTE_TYPE),
    **dict.fromkeys(("clusters", "cluster", "cds"), CLUSTER_TYPE),
    **dict.fromkeys(("endpoints", "endpoint", "eds"), ENDPOINT_TYPE),
    **dict.fromkeys(("secrets", "secret", "sds"), SECRET_TYPE),
}

# Typed configs inside Listener/Cluster resources must be in the protobuf pool to be shown
# as JSON; the generators import most of them, these are the ones they may not have.
_TYPED_CONFIG_MODULES = (
    "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
    "envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2",
    "envoy.extensions.filters.http.router.v3.router_pb2",
    "envoy.extensions.filters.http.fault.v3.fault_pb2",
    "envoy.extensions.transport_sockets.tls.v3.tls_pb2",
    "envoy.extensions.upstreams.http.v3.http_protocol_options_pb2",
    "envoy.extensions.access_loggers.grpc.v3.als_pb2",
    "envoy.extensions.access_loggers.file.v3.file_pb2",
    "envoy.extensions.filters.listener.original_dst.v3.original_dst_pb2",
    "envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2",
    "envoy.extensions.filters.listener.http_inspector.v3.http_inspector_pb2",
    "envoy.extensions.filters.http.rbac.v3.rbac_pb2",
    "envoy.extensions.filters.network.rbac.v3.rbac_pb2",
    "envoy.config.trace.v3.zipkin_pb2",
)


def _load_typed_configs() -> None:
    for name in _TYPED_CONFIG_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            continue


def message_json(message: Message) -> Any:
    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    except TypeError:
        _load_typed_configs()
        return json_format.MessageToDict(message, preserving_proto_field_name=True)


def proxy_config(conn: Connection, type_name: str) -> dict[str, Any]:
    """What pilot last sent this proxy for one type (``listeners``, ``routes``, ``clusters``,
    ``endpoints``, ``secrets``), with the sync state."""
    type_url = CONFIG_TYPES.get(type_name.lower())
    if type_url is None:
        raise ValidationError(
            f"unknown config type {type_name!r} (listeners, routes, clusters, endpoints, secrets)"
        )
    watch = conn.watches.get(type_url)
    out: dict[str, Any] = {"proxy": conn.proxy_id, "type": type_name, "type_url": type_url}
    if watch is None:
        out.update(status="NOT SENT", resources=[])
        return out
    out.update(
        status=watch.status.value,
        version=watch.sent_version,
        acked_version=watch.acked_version,
        resources=[message_json(m) for m in watch.sent_resources],
    )
    if watch.nack_error is not None:
        out["error"] = watch.nack_error
    return out


def to_jsonable(value: Any) -> Any:
    """Plain JSON data for what the generators' ``explain`` returns."""
    if isinstance(value, Message):
        return message_json(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_")
        }
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
