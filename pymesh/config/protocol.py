"""Istio's protocol selection: explicit ``appProtocol`` / ServiceEntry ``protocol``, else the
port name prefix (``http-web``, ``grpc``, ``tcp-db``...)."""

from __future__ import annotations

__all__ = ["HTTP_PROTOCOLS", "TLS_PROTOCOLS", "UNSUPPORTED", "is_http", "protocol_of"]

_KNOWN = {
    "http": "HTTP",
    "http2": "HTTP2",
    "grpc": "GRPC",
    "grpc-web": "GRPC-WEB",
    "h2c": "HTTP2",
    "https": "HTTPS",
    "tls": "TLS",
    "tcp": "TCP",
    "mongo": "MONGO",
    "mysql": "MYSQL",
    "redis": "REDIS",
    "udp": "UDP",
    "kubernetes.io/h2c": "HTTP2",
}

#: Istio's ``protocol.Unsupported``: a port that names no protocol, sniffed per connection.
UNSUPPORTED = "UNSUPPORTED"
# Unsupported ports carry HTTP when the connection does: their routes are generated as HTTP's.
HTTP_PROTOCOLS = frozenset({"HTTP", "HTTP2", "GRPC", "GRPC-WEB", UNSUPPORTED})
TLS_PROTOCOLS = frozenset({"HTTPS", "TLS"})


def protocol_of(name: str = "", protocol: str = "") -> str:
    """The Istio protocol of a port from an explicit protocol (ServiceEntry ``protocol``,
    Kubernetes ``appProtocol``) or else the port name's prefix. Ports with neither are
    ``UNSUPPORTED``: the sidecars sniff those, HTTP or TCP per connection."""
    if protocol:
        known = _KNOWN.get(protocol.lower())
        if known:
            return known
    lowered = name.lower()
    if lowered.startswith("grpc-web"):
        return "GRPC-WEB"
    return _KNOWN.get(lowered.split("-", 1)[0], UNSUPPORTED) if lowered else UNSUPPORTED


def is_http(protocol: str) -> bool:
    return protocol.upper() in HTTP_PROTOCOLS
