"""Istio's traffic capture rules (``istio-iptables``), as data.

The same chains, order and flags as Istio's init container in REDIRECT mode, so an operator
who knows ``iptables -t nat -S`` in an Istio pod reads the same thing in a pymesh pod:

* ``PREROUTING`` → ``ISTIO_INBOUND``: inbound TCP, except the excluded ports (the proxy's own
  health and metrics ports), goes to ``ISTIO_IN_REDIRECT`` → the proxy's inbound port 15006.
* ``OUTPUT`` → ``ISTIO_OUTPUT``: outbound TCP of the app goes to ``ISTIO_REDIRECT`` → the
  proxy's outbound port 15001. The proxy's own connections (its uid/gid, 1337) are left
  alone, except when it talks to its own pod's address over ``lo``: that is a call to the
  pod itself, which enters through the inbound side like any other.
* Connections from ``127.0.0.6`` (the proxy's inbound passthrough source) are never captured.

Nothing here runs a command: :func:`restore_input` is the text for ``iptables-restore
--noflush`` and :func:`cleanup_commands` the argument lists that remove the rules again.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from pymesh.errors import ConfigError

__all__ = [
    "CHAINS",
    "INBOUND_TUNNEL_PORT",
    "CaptureConfig",
    "cleanup_commands",
    "nat_rules",
    "parse_cidrs",
    "parse_ports",
    "restore_input",
]

CHAINS = ("ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT")
#: Istio's HBONE port: never captured (inbound) nor sent to the inbound listener (outbound).
INBOUND_TUNNEL_PORT = 15008
_PASSTHROUGH_SOURCE = "127.0.0.6/32"
_LOCALHOST = "127.0.0.1/32"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ports(text: str, flag: str) -> tuple[int, ...]:
    """``"15090,15021"`` → ``(15090, 15021)``; ``""`` → ``()``. ``*`` is handled by callers."""
    ports: list[int] = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        try:
            port = int(item)
        except ValueError:
            raise ConfigError(f"{flag}: {item!r} is not a port number") from None
        if not 0 < port < 65536:
            raise ConfigError(f"{flag}: port {port} is outside 1..65535")
        ports.append(port)
    return tuple(ports)


def parse_cidrs(text: str, flag: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8,192.168.1.1"`` → networks; a bare address is a /32 (/128)."""
    nets: list[Network] = []
    for item in (c.strip() for c in text.split(",")):
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
    return tuple(nets)


@dataclass(frozen=True, slots=True)
class CaptureConfig:
    """What ``istio-iptables`` is told, with its defaults.

    ``include_outbound`` / ``include_inbound_ports`` are ``None`` for ``*`` (everything) and
    an empty tuple for ``""`` (nothing)."""

    proxy_port: int = 15001  # -p
    inbound_port: int = 15006  # -z
    proxy_uid: int = 1337  # -u
    proxy_gid: int = 1337  # -g
    include_outbound: tuple[Network, ...] | None = None  # -i
    exclude_outbound: tuple[Network, ...] = ()  # -x
    include_inbound_ports: tuple[int, ...] | None = None  # -b
    exclude_inbound_ports: tuple[int, ...] = (15090, 15021, 15020)  # -d
    include_outbound_ports: tuple[int, ...] = ()  # -q
    exclude_outbound_ports: tuple[int, ...] = ()  # -o
    exclude_interfaces: tuple[str, ...] = ()  # -c
    mode: str = "REDIRECT"  # -m

    def __post_init__(self) -> None:
        if self.mode != "REDIRECT":
            raise ConfigError(
                f"-m {self.mode}: only REDIRECT is implemented (TPROXY needs the proxy to bind "
                "with IP_TRANSPARENT and keep the client's source address, which pymesh does not)"
            )
        for flag, port in (("-p", self.proxy_port), ("-z", self.inbound_port)):
            if not 0 < port < 65536:
                raise ConfigError(f"{flag}: port {port} is outside 1..65535")


def _v4(nets: Iterable[Network]) -> list[str]:
    return [str(n) for n in nets if n.version == 4]


def nat_rules(cfg: CaptureConfig) -> list[str]:
    """The ``nat`` table's rules in ``iptables -t nat -S`` form (IPv4), chains first."""
    rules = [f"-N {chain}" for chain in CHAINS]
    rules.append(f"-A ISTIO_INBOUND -p tcp -m tcp --dport {INBOUND_TUNNEL_PORT} -j RETURN")
    rules.append(f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {cfg.proxy_port}")
    rules.append(f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {cfg.inbound_port}")

    # Inbound.
    inbound = cfg.include_inbound_ports
    if inbound is None or inbound:
        for name in cfg.exclude_interfaces:
            rules.append(f"-A PREROUTING -i {name} -j RETURN")
        rules.append("-A PREROUTING -p tcp -j ISTIO_INBOUND")
        if inbound is None:
            for port in cfg.exclude_inbound_ports:
                rules.append(f"-A ISTIO_INBOUND -p tcp -m tcp --dport {port} -j RETURN")
            rules.append("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
        else:
            for port in inbound:
                rules.append(f"-A ISTIO_INBOUND -p tcp -m tcp --dport {port} -j ISTIO_IN_REDIRECT")

    # Outbound.
    for name in cfg.exclude_interfaces:
        rules.append(f"-A OUTPUT -o {name} -j RETURN")
    rules.append("-A OUTPUT -p tcp -j ISTIO_OUTPUT")
    for port in cfg.exclude_outbound_ports:
        rules.append(f"-A ISTIO_OUTPUT -p tcp -m tcp --dport {port} -j RETURN")
    for port in cfg.include_outbound_ports:
        rules.append(f"-A ISTIO_OUTPUT -p tcp -m tcp --dport {port} -j ISTIO_REDIRECT")
    rules.append(f"-A ISTIO_OUTPUT -s {_PASSTHROUGH_SOURCE} -o lo -j RETURN")
    for kind, ident in (("uid", cfg.proxy_uid), ("gid", cfg.proxy_gid)):
        # The proxy calling its own pod by a non-loopback address: through the inbound side.
        extra = f"-p tcp -m tcp ! --dport {INBOUND_TUNNEL_PORT} " if kind == "uid" else ""
        rules.append(
            f"-A ISTIO_OUTPUT ! -d {_LOCALHOST} -o lo {extra}"
            f"-m owner --{kind}-owner {ident} -j ISTIO_IN_REDIRECT"
        )
        # The app talking to itself over lo stays local.
        rules.append(f"-A ISTIO_OUTPUT -o lo -m owner ! --{kind}-owner {ident} -j RETURN")
        rules.append(f"-A ISTIO_OUTPUT -m owner --{kind}-owner {ident} -j RETURN")
    rules.append(f"-A ISTIO_OUTPUT -d {_LOCALHOST} -j RETURN")
    for net in _v4(cfg.exclude_outbound):
        rules.append(f"-A ISTIO_OUTPUT -d {net} -j RETURN")
    if cfg.include_outbound is None:
        rules.append("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
    else:
        for net in _v4(cfg.include_outbound):
            rules.append(f"-A ISTIO_OUTPUT -d {net} -j ISTIO_REDIRECT")
        rules.append("-A ISTIO_OUTPUT -j RETURN")
    return rules


def restore_input(cfg: CaptureConfig) -> str:
    """Input for ``iptables-restore --noflush``: the rules in one atomic transaction, leaving
    whatever else the table holds (Docker's DNS rules, say) alone."""
    return "* nat\n" + "\n".join(nat_rules(cfg)) + "\nCOMMIT\n"


def cleanup_commands(cfg: CaptureConfig) -> list[list[str]]:
    """``iptables`` argument lists that remove every rule and chain :func:`nat_rules` adds
    (``istio-iptables clean``); only the interface exclusions depend on ``cfg``. Each may fail
    harmlessly when its rule is not there."""
    commands = [
        ["-t", "nat", "-D", "PREROUTING", "-p", "tcp", "-j", "ISTIO_INBOUND"],
        ["-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-j", "ISTIO_OUTPUT"],
    ]
    for name in cfg.exclude_interfaces:
        commands.append(["-t", "nat", "-D", "PREROUTING", "-i", name, "-j", "RETURN"])
        commands.append(["-t", "nat", "-D", "OUTPUT", "-o", name, "-j", "RETURN"])
    for chain in CHAINS:
        commands.append(["-t", "nat", "-F", chain])
    for chain in CHAINS:
        commands.append(["-t", "nat", "-X", chain])
    return commands
