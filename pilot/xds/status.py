"""``proxy-status`` data: per connected proxy and type, SYNCED / STALE / NOT SENT, and the last
rejection a proxy sent back."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2

from pilot.xds.connection import Connection
from pilot.xds.metrics import short_type
from pilot.xds.resources import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from pilot.xds.watch import SyncStatus, Watch

__all__ = ["STATUS_TYPES", "connection_status", "proxy_status"]

#: The columns of ``istioctl proxy-status``, in its order.
STATUS_TYPES: tuple[str, ...] = (CLUSTER_TYPE, LISTENER_TYPE, ENDPOINT_TYPE, ROUTE_TYPE)


def _watch_status(watch: Watch | None) -> dict[str, Any]:
    if watch is None:
        return {"status": SyncStatus.NOT_SENT.value}
    out: dict[str, Any] = {
        "status": watch.status.value,
        "sent_version": watch.sent_version,
        "sent_nonce": watch.sent_nonce,
        "acked_version": watch.acked_version,
        "acked_nonce": watch.acked_nonce,
        "resources": len(watch.sent_resources),
        "subscribed": "*" if watch.wildcard else sorted(watch.names),
    }
    if watch.nack_error is not None:
        out["error"] = watch.nack_error
    if watch.nacks:
        out["nacks"] = watch.nacks
    return out


def _agent(node: base_pb2.Node | None) -> str:
    """``pymesh/0.1.0``, ``envoy/1.40.0``: who the proxy says it is (istioctl version's
    data plane versions)."""
    if node is None or not node.user_agent_name:
        return ""
    version = node.user_agent_version
    if node.HasField("user_agent_build_version"):
        v = node.user_agent_build_version.version
        version = f"{v.major_number}.{v.minor_number}.{v.patch}"
    return f"{node.user_agent_name}/{version}" if version else node.user_agent_name


def connection_status(conn: Connection, now: float) -> dict[str, Any]:
    types = {short_type(t).upper(): _watch_status(conn.watches.get(t)) for t in STATUS_TYPES}
    for type_url, watch in conn.watches.items():
        if type_url not in STATUS_TYPES:
            types[short_type(type_url).upper()] = _watch_status(watch)
    errors = {k: v["error"] for k, v in types.items() if "error" in v}
    node = conn.node
    return {
        "agent": _agent(node),
        "id": conn.proxy_id,
        "cluster": node.cluster if node is not None else "",
        "connection": conn.id,
        "peer": conn.peer,
        "connected_seconds": round(now - conn.connected_at, 3),
        "version": conn.pushed_version,
        "types": types,
        "errors": errors,
    }


def proxy_status(connections: list[Connection], now: float) -> list[dict[str, Any]]:
    """One entry per connected proxy id (the newest stream when a proxy has two), by id."""
    latest: dict[str, Connection] = {}
    for conn in connections:
        if conn.node is None:
            continue
        seen = latest.get(conn.proxy_id)
        if seen is None or conn.connected_at >= seen.connected_at:
            latest[conn.proxy_id] = conn
    return [connection_status(latest[k], now) for k in sorted(latest)]
