"""A report as the attributes Istio's CEL expressions read (``request.host``,
``response.code``, ``destination.port``, ``xds.cluster_name``, ``upstream_peer.labels[...]``
...), built only when a Telemetry rule needs it."""

from __future__ import annotations

from typing import Any

from mixer.peers import PeerInfo
from mixer.report import Report

__all__ = ["attributes"]


def _split(address: str) -> tuple[str, int | None]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address, None
    return host.strip("[]"), int(port)


def _endpoint(address: str) -> dict[str, Any]:
    host, port = _split(address)
    out: dict[str, Any] = {"address": host} if host else {}
    if port is not None:
        out["port"] = port
    return out


def _peer(p: PeerInfo) -> dict[str, Any] | None:
    if not p.known:
        return None
    return {
        "workload": p.workload,
        "namespace": p.namespace,
        "app": p.app,
        "version": p.version,
        "service": p.canonical_service,
        "revision": p.canonical_revision,
        "cluster": p.cluster,
        "labels": dict(p.labels),
    }


def attributes(r: Report) -> dict[str, Any]:
    """Envoy's attribute vocabulary for ``r`` (absent ones are simply missing)."""
    path = r.path
    request: dict[str, Any] = {
        "host": r.authority,
        "method": r.method,
        "path": path,
        "url_path": path.partition("?")[0],
        "headers": dict(r.request_headers),
        "id": r.request_id,
        "total_size": r.request_bytes,
        "protocol": r.protocol,
    }
    response: dict[str, Any] = {
        "code": r.response_code,
        "code_details": r.response_code_details,
        "flags": r.flags,
        "grpc_status": r.grpc_status,
        "headers": dict(r.response_headers),
        "total_size": r.response_bytes,
    }
    env: dict[str, Any] = {
        "request": request,
        "response": response,
        "source": _endpoint(r.source_address),
        "destination": _endpoint(r.destination_address),
        "upstream": _endpoint(r.upstream_host),
        "connection": {"mtls": r.security_policy == "mutual_tls"},
        "xds": {"cluster_name": r.upstream_cluster, "route_name": r.route_name},
    }
    # the peer: the other side from the reporter's point of view
    if r.reporter == "source":
        peer = _peer(r.destination)
        if peer is not None:
            env["upstream_peer"] = peer
    else:
        peer = _peer(r.source)
        if peer is not None:
            env["downstream_peer"] = peer
    return env
