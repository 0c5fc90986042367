"""Which TCP ports are listening, to refuse a start that would collide and to prove that a
stopped demo left nothing behind.

Read from ``/proc/net/tcp`` on Linux (every listener, whoever owns it); elsewhere a port
counts as listening when a connection to it is accepted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterable
from pathlib import Path

__all__ = ["Endpoint", "busy", "holder", "listening", "time_wait"]

Endpoint = tuple[str, int]
_LISTEN = "0A"
_TIME_WAIT = "06"


def _proc_listeners() -> set[Endpoint] | None:
    found: set[Endpoint] = set()
    try:
        text = Path("/proc/net/tcp").read_text()
    except OSError:
        return None
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != _LISTEN:
            continue
        found.add(_endpoint(fields[1]))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp6").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 4 and fields[3] == _LISTEN and fields[1].startswith("0" * 32):
                found.add(("0.0.0.0", int(fields[1].rpartition(":")[2], 16)))
    return found


def _accepts(endpoint: Endpoint) -> bool:
    try:
        with socket.create_connection(endpoint, timeout=0.2):
            return True
    except OSError:
        return False


def listening(addresses: Iterable[str], ports: Iterable[int] | None = None) -> list[Endpoint]:
    """Listeners bound to any of ``addresses`` (only ``ports`` when given), sorted."""
    wanted = set(addresses)
    port_set = set(ports) if ports is not None else None
    listeners = _proc_listeners()
    if listeners is None:
        if port_set is None:
            return []
        candidates = [(a, p) for a in sorted(wanted) for p in sorted(port_set)]
        return [e for e in candidates if _accepts(e)]
    return sorted(
        (ip, port)
        for ip, port in listeners
        if ip in wanted and (port_set is None or port in port_set)
    )


def busy(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """Those of ``endpoints`` a new listener could not bind: something listens on that
    address and port, or on the wildcard address and that port."""
    wanted = sorted(set(endpoints))
    listeners = _proc_listeners()
    if listeners is None:
        return [e for e in wanted if _accepts(e)]
    wildcard = {port for ip, port in listeners if ip == "0.0.0.0"}
    return [(ip, port) for ip, port in wanted if (ip, port) in listeners or port in wildcard]


def _ip(hex_ip: str) -> str:
    # The address is the kernel's 32-bit word, little-endian on every Linux we run on.
    return str(ipaddress.IPv4Address(int.from_bytes(bytes.fromhex(hex_ip), "little")))


def _inodes(endpoint: Endpoint) -> set[str]:
    """Socket inodes listening on ``endpoint`` (or on the wildcard and its port)."""
    ip, port = endpoint
    found = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            hex_ip, _, hex_port = fields[1].partition(":")
            if int(hex_port, 16) == port and _ip(hex_ip) in (ip, "0.0.0.0"):
                found.add(fields[9])
    return found


def holder(endpoint: Endpoint) -> str:
    """Who listens on ``endpoint``: ``pid 4242 (python3 -m http.server 8080)``, or ``another
    process`` when /proc does not say (another user's, or not Linux)."""
    inodes = {f"socket:[{i}]" for i in _inodes(endpoint)}
    if inodes:
        with contextlib.suppress(OSError):
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    fds = os.listdir(f"/proc/{entry}/fd")
                    if not any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in fds):
                        continue
                    raw = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
                return f"pid {entry} ({command[:80]})"
    return "another process"


def time_wait(addresses: Iterable[str]) -> frozenset[tuple[Endpoint, Endpoint]]:
    """Connections in TIME-WAIT, as (local, remote), with either end on one of ``addresses``
    (none without /proc)."""
    wanted = set(addresses)
    found: set[tuple[Endpoint, Endpoint]] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4 or fields[3] != _TIME_WAIT:
                continue
            local, remote = (_endpoint(field) for field in fields[1:3])
            if {local[0], remote[0]} & wanted:
                found.add((local, remote))
    return frozenset(found)


def _endpoint(field: str) -> Endpoint:
    hex_ip, _, hex_port = field.partition(":")
    return _ip(hex_ip), int(hex_port, 16)
