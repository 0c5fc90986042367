"""What Istio's ``istio.alpn`` HTTP filter does for a client sidecar: an HTTP connection to a
mesh mTLS upstream offers ``istio-http/1.1`` (``istio-h2`` for HTTP/2) instead of the
cluster's own ALPN, so that the server sidecar's inbound listener, sniffing a port that names
no protocol, takes the connection to its HTTP connection manager and not to its TCP chain.

A cluster's sockets are mesh mTLS when their ALPN list contains ``istio`` (what pilot puts on
every ``ISTIO_MUTUAL`` socket). Only the HTTP pools use these sockets; ``tcp_proxy`` keeps the
cluster's own, so TCP over the same cluster still reaches the server's TCP chain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from proxy.config.model import Cluster, Secret, UpstreamTls
from proxy.transport.upstream_tls import TransportSockets, build_sockets

__all__ = ["ISTIO_ALPN", "http_alpn", "http_sockets"]

ISTIO_ALPN = "istio"


def http_alpn(*, h2: bool) -> tuple[str, ...]:
    """The ALPN ``istio.alpn`` sets for an upstream HTTP/1.1 or HTTP/2 connection."""
    return ("istio-h2" if h2 else "istio-http/1.1", ISTIO_ALPN)


def _override(tls: UpstreamTls | None, alpn: tuple[str, ...]) -> UpstreamTls | None:
    if tls is None or ISTIO_ALPN not in tls.common.alpn_protocols:
        return tls
    return dataclasses.replace(tls, common=dataclasses.replace(tls.common, alpn_protocols=alpn))


def http_sockets(
    cluster: Cluster, secrets: Mapping[str, Secret], *, h2: bool
) -> TransportSockets | None:
    """The cluster's sockets for HTTP connections, or None when none of them is mesh mTLS
    (the HTTP pools then use the cluster's own)."""
    alpn = http_alpn(h2=h2)
    default = _override(cluster.transport_socket, alpn)
    matches = tuple(
        dataclasses.replace(m, transport_socket=_override(m.transport_socket, alpn))
        for m in cluster.transport_socket_matches
    )
    if default is cluster.transport_socket and all(
        new.transport_socket is old.transport_socket
        for new, old in zip(matches, cluster.transport_socket_matches, strict=True)
    ):
        return None
    rewritten = dataclasses.replace(
        cluster, transport_socket=default, transport_socket_matches=matches
    )
    return build_sockets(rewritten, secrets)
