"""The node's own IPv4 address, chosen as Envoy's ``LocalInfo`` chooses it.

Envoy walks the interfaces in kernel order and takes the first IPv4 address outside
127.0.0.0/8, or 127.0.0.1 when there is none. Spans carry it as ``localEndpoint.ipv4``, so a
trace from pymesh names the same host as one from Envoy on the same machine.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

__all__ = ["local_ipv4"]

_SIOCGIFADDR = 0x8915  # linux/sockios.h
_IFNAMSIZ = 16  # linux/if.h
_IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux


def local_ipv4() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _index, name in socket.if_nameindex():
            address = _interface_ipv4(probe, name)
            if address is not None and not ipaddress.IPv4Address(address).is_loopback:
                return address
    return "127.0.0.1"


def _interface_ipv4(probe: socket.socket, name: str) -> str | None:
    request = struct.pack(f"{_IFNAMSIZ}s", name.encode()[: _IFNAMSIZ - 1])
    try:
        reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request.ljust(_IFREQ_SIZE, b"\0"))
    except OSError:  # EADDRNOTAVAIL: the interface has no IPv4 address
        return None
    # ifr_addr is a sockaddr_in after the name: family (2), port (2), then the address.
    return socket.inet_ntoa(reply[_IFNAMSIZ + 4 : _IFNAMSIZ + 8])
