"""Where a demo lives: its run directory, its addresses and ports.

Process mode gives every pod its own loopback address, so every service keeps its real port:
pods take addresses from ``pod_addresses`` (``127.0.0.10`` upwards by default); pilot and the
ingress gateway share the ``control_address`` (``127.0.0.1``), so ``pymesh apply`` finds pilot
at its default URL and the Bookinfo page is at ``http://127.0.0.1:8080/productpage``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pymesh.demo.netns import NetnsPlan
from pymesh.errors import ConfigError

__all__ = [
    "ADMIN_PORT",
    "AGENT_STATUS_PORT",
    "CA_PORT",
    "DEFAULT_RUN_DIR",
    "INBOUND_PORT",
    "OUTBOUND_PORT",
    "PILOT_API_PORT",
    "PILOT_XDS_PORT",
    "SERVICE_PROXY_PORT",
    "AddressRange",
    "DemoLayout",
    "default_run_dir",
]

ADMIN_PORT = 15000
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
PILOT_XDS_PORT = 15010
PILOT_API_PORT = 15080
CA_PORT = 15012
#: A pod's identity agent answers /ready and /stats here (Istio's agent port).
AGENT_STATUS_PORT = 15020
#: The node's service proxy (kube-proxy's role) for pods without a sidecar, on the control
#: address.
SERVICE_PROXY_PORT = 15081
DEFAULT_RUN_DIR = "~/.pymesh/demo"


def default_run_dir() -> Path:
    """``PYMESH_DEMO_DIR`` or ``~/.pymesh/demo``."""
    return Path(os.environ.get("PYMESH_DEMO_DIR") or DEFAULT_RUN_DIR).expanduser()


@dataclass(frozen=True, slots=True)
class AddressRange:
    """Consecutive IPv4 loopback addresses ``first``..``last``, both included."""

    first: str
    last: str

    @classmethod
    def parse(cls, text: str) -> AddressRange:
        """``127.0.0.10`` (up to ``.99`` of that /24), ``127.0.4.10-127.0.4.49`` or
        ``127.0.4.10-49``."""
        start, sep, end = text.strip().partition("-")
        try:
            first = ipaddress.IPv4Address(start.strip())
            if not sep:
                last = ipaddress.IPv4Address(int(first) | 0xFF) - (0xFF - 99)
                if last < first:
                    last = ipaddress.IPv4Address(int(first) | 0xFF) - 1
            elif "." in end:
                last = ipaddress.IPv4Address(end.strip())
            else:
                octet = int(end)
                if not 0 <= octet <= 255:
                    raise ValueError(f"{octet} is not an address byte")
                last = ipaddress.IPv4Address((int(first) & ~0xFF) | octet)
        except ValueError as exc:
            raise ConfigError(f"pod addresses {text!r}: {exc}") from None
        if not first.is_loopback or not last.is_loopback:
            raise ConfigError(f"pod addresses {text!r}: process mode uses loopback addresses")
        if last < first:
            raise ConfigError(f"pod addresses {text!r}: the range is empty")
        return cls(str(first), str(last))

    def addresses(self) -> Iterator[str]:
        first, last = int(ipaddress.IPv4Address(self.first)), int(ipaddress.IPv4Address(self.last))
        return (str(ipaddress.IPv4Address(n)) for n in range(first, last + 1))

    def __contains__(self, address: object) -> bool:
        try:
            n = int(ipaddress.IPv4Address(str(address)))
        except ValueError:
            return False
        return int(ipaddress.IPv4Address(self.first)) <= n <= int(ipaddress.IPv4Address(self.last))

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


@dataclass(frozen=True, slots=True)
class DemoLayout:
    """Paths and addresses of one demo. Everything a demo writes is under ``run_dir``."""

    run_dir: Path
    control_address: str = "127.0.0.1"
    pod_addresses: AddressRange = AddressRange("127.0.0.10", "127.0.0.99")
    pilot_xds_port: int = PILOT_XDS_PORT
    pilot_api_port: int = PILOT_API_PORT
    #: netns mode: pods in network namespaces on a bridge (``pod_addresses`` from its subnet)
    netns: NetnsPlan | None = None
    #: Istio's mesh mTLS (the default, as in Istio): pilot serves its CA, every sidecar gets
    #: its identity from an agent
    mtls: bool = True

    @classmethod
    def of_running(cls, run_dir: Path) -> DemoLayout:
        """The layout a demo in ``run_dir`` was started with (from its state file), or the
        defaults when there is none."""
        from pymesh.demo.state import read_state

        state = read_state(run_dir / "state.json")
        if state is None or not state.control_address:
            return cls(run_dir)
        try:
            xds_port = int(state.pilot_xds.rpartition(":")[2])
            api_port = int(state.pilot_api.rpartition(":")[2])
            netns = (
                NetnsPlan.parse(state.netns_prefix, state.netns_subnet)
                if state.netns_prefix
                else None
            )
            pods = (
                AddressRange(*netns.pod_addresses())
                if netns is not None
                else AddressRange.parse(state.pod_addresses)
                if state.pod_addresses
                else None
            )
        except (ValueError, ConfigError):
            return cls(run_dir)
        return cls(
            run_dir,
            netns=netns,
            control_address=state.control_address,
            pod_addresses=pods or AddressRange("127.0.0.10", "127.0.0.99"),
            pilot_xds_port=xds_port,
            pilot_api_port=api_port,
        )

    def __post_init__(self) -> None:
        try:
            control = ipaddress.IPv4Address(self.control_address)
        except ValueError as exc:
            raise ConfigError(f"control address: {exc}") from None
        if not control.is_loopback:
            raise ConfigError(f"control address {control}: process mode uses loopback addresses")
        if self.control_address in self.pod_addresses:
            raise ConfigError(
                f"control address {control} lies inside the pod addresses {self.pod_addresses}"
            )

    # -- addresses ---------------------------------------------------------------------------
    @property
    def gateway_address(self) -> str:
        """The ingress gateway pod's address (it shares the control address with pilot)."""
        return self.control_address

    @property
    def pilot_xds(self) -> str:
        """Where proxies find pilot: in netns mode the host's address on the bridge, which
        the pods' namespaces can reach."""
        host = self.netns.gateway if self.netns is not None else self.control_address
        return f"{host}:{self.pilot_xds_port}"

    @property
    def report_host(self) -> str:
        """Where sidecars send access logs and spans (mixer's ALS and Zipkin ports): like
        pilot's xDS, the host's bridge address in netns mode."""
        return self.netns.gateway if self.netns is not None else self.control_address

    @property
    def service_proxy(self) -> str:
        """``host:port`` of the service proxy, the ``HTTP_PROXY`` of sidecar-less pods: in
        netns mode on the host's bridge address, where those pods reach it."""
        return f"{self.report_host}:{SERVICE_PROXY_PORT}"

    @property
    def pilot_api(self) -> str:
        return f"{self.control_address}:{self.pilot_api_port}"

    @property
    def pilot_url(self) -> str:
        return f"http://{self.pilot_api}"

    # -- files -------------------------------------------------------------------------------
    @property
    def config_dir(self) -> Path:
        """Pilot's watched config directory (also where pilot keeps its API token)."""
        return self.run_dir / "config"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def bootstrap_dir(self) -> Path:
        return self.run_dir / "bootstrap"

    @property
    def mesh_file(self) -> Path:
        return self.run_dir / "mesh.yaml"

    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "demo.pid"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def ca_dir(self) -> Path:
        """The CA's root and key (Istio's ``cacerts`` layout) and the token signing key."""
        return self.run_dir / "ca"

    @property
    def ca_address(self) -> str:
        """Where pilot serves the CA (istiod's 15012): like pilot's xDS, the host's bridge
        address in netns mode, where the agents in the pods' namespaces reach it."""
        return f"{self.report_host}:{CA_PORT}"

    @property
    def token_file(self) -> Path:
        return self.config_dir / ".pymesh-token"

    @property
    def supervisor_log(self) -> Path:
        return self.logs_dir / "demo.log"

    def log_file(self, process: str) -> Path:
        return self.logs_dir / f"{process}.log"

    def bootstrap_file(self, pod: str, namespace: str) -> Path:
        return self.bootstrap_dir / f"{pod}.{namespace}.yaml"
