"""Recovering the original destination of a connection redirected by iptables."""

from __future__ import annotations

import socket
import struct

__all__ = ["original_destination"]

_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
_IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h (same value, SOL_IPV6 level)


def original_destination(sock: socket.socket) -> tuple[str, int] | None:
    """The address the client dialled before REDIRECT rewrote it, or ``None`` when the
    connection was not redirected (then the local address *is* the destination)."""
    try:
        if sock.family == socket.AF_INET:
            raw = sock.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, 16)
            port, packed = struct.unpack_from("!2xH4s", raw)
            return socket.inet_ntop(socket.AF_INET, packed), port
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, _IP6T_SO_ORIGINAL_DST, 28)
            port = struct.unpack_from("!2xH", raw)[0]
            return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    except OSError:
        return None
    return None
