"""netns mode: every pod in its own network namespace on a bridge, captured by iptables.

The demo plays the node's network plugin and Istio's init container:

* one Linux bridge ``<prefix>br`` whose address (the subnet's first) is the host's, where
  pilot serves xDS to the pods;
* per pod a namespace ``<prefix>p<n>`` with a veth to the bridge (``eth0``, the pod's
  address), ``lo`` up, a default route via the bridge, and Istio's capture rules from
  ``pymesh iptables`` (the admin port 15000 stays uncaptured so the host can read it);
* per pod ``/etc/netns/<namespace>/hosts``: every Service's names (``reviews``,
  ``reviews.default``, ``reviews.default.svc.cluster.local``) on a virtual address of the
  subnet's upper half. ``ip netns exec`` mounts it as the pod's ``/etc/hosts``, so apps
  resolve names with no DNS server and dial an address that the capture rules send to the
  sidecar, which routes by the Host header as Istio's does.

Everything created carries the prefix, so :func:`remove_all` finds it again after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pymesh.errors import ConfigError

__all__ = [
    "CAPTURE_EXCLUDED_INBOUND",
    "NETNS_ETC",
    "NetnsPlan",
    "PodNetwork",
    "check_host",
    "hosts_file",
    "namespaces",
    "namespaces_in_use",
    "probe_in_namespace",
    "remove_all",
    "services_of",
    "setup_bridge",
    "setup_pod",
    "teardown_pod",
    "write_hosts",
]

NETNS_ETC = Path("/etc/netns")
_NETNS_RUN = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
#: Istio's ``-d 15090,15021,15020`` plus the admin port the demo reads from the host.
CAPTURE_EXCLUDED_INBOUND = "15090,15021,15020,15000"
_DOMAIN = "cluster.local"


@dataclass(frozen=True, slots=True)
class NetnsPlan:
    """Names and addresses of one netns demo: pods in the lower half of ``subnet`` (from
    ``.2``), Service virtual addresses in the upper half."""

    prefix: str
    subnet: ipaddress.IPv4Network

    @classmethod
    def parse(cls, prefix: str, subnet: str) -> NetnsPlan:
        try:
            net = ipaddress.IPv4Network(subnet, strict=True)
        except ValueError as exc:
            raise ConfigError(f"--netns-subnet {subnet}: {exc}") from None
        if net.prefixlen > 26:
            raise ConfigError(f"--netns-subnet {subnet}: needs at least a /26")
        # Interface names have 15 bytes: the prefix, "p" and up to three digits, or "br".
        if not prefix or len(prefix) > 10 or not prefix.replace("-", "").isalnum():
            raise ConfigError(f"--netns-prefix {prefix!r}: 1-10 letters, digits or '-'")
        return cls(prefix, net)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def gateway(self) -> str:
        """The host's address on the bridge."""
        return str(self.subnet.network_address + 1)

    @property
    def _half(self) -> int:
        return self.subnet.num_addresses // 2

    def pod_addresses(self) -> tuple[str, str]:
        """First and last pod address."""
        base = self.subnet.network_address
        return str(base + 2), str(base + self._half - 1)

    def virtual_ip(self, index: int) -> str:
        """The ``index``-th Service's virtual address."""
        if not 0 <= index < self._half - 1:
            raise ConfigError(f"more Services than virtual addresses in {self.subnet}")
        return str(self.subnet.network_address + self._half + index)

    def namespace_for(self, ip: str) -> str:
        return f"{self.prefix}p{int(ipaddress.IPv4Address(ip)) - int(self.subnet.network_address)}"

    def veth_for(self, ip: str) -> str:
        return f"{self.prefix}v{int(ipaddress.IPv4Address(ip)) - int(self.subnet.network_address)}"


@dataclass(frozen=True, slots=True)
class PodNetwork:
    namespace: str
    ip: str


def hosts_file(services: Mapping[tuple[str, str], str], pod_namespace: str) -> str:
    """``/etc/hosts`` for a pod in ``pod_namespace``: ``services`` maps (name, namespace) to
    a virtual address. Short names resolve only within the pod's own namespace, as with
    Kubernetes' search domains."""
    lines = ["127.0.0.1 localhost", "::1 localhost"]
    for (name, namespace), vip in sorted(services.items()):
        names = [
            f"{name}.{namespace}",
            f"{name}.{namespace}.svc",
            f"{name}.{namespace}.svc.{_DOMAIN}",
        ]
        if namespace == pod_namespace:
            names.insert(0, name)
        lines.append(f"{vip} {' '.join(names)}")
    return "\n".join(lines) + "\n"


def _run(
    *argv: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if check and done.returncode != 0:
        raise ConfigError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("ip", *args, check=check)


def check_host() -> None:
    """netns mode needs root and the ip/iptables tools; say which is missing."""
    if os.geteuid() != 0:
        raise ConfigError("--netns needs root (network namespaces, bridges and iptables)")
    for tool in ("ip", "iptables-restore", "setpriv"):
        if shutil.which(tool) is None:
            raise ConfigError(f"--netns needs {tool} (Debian: iproute2, iptables, util-linux)")


def setup_bridge(plan: NetnsPlan) -> None:
    _ip("link", "del", plan.bridge, check=False)
    _ip("link", "add", plan.bridge, "type", "bridge")
    _ip("addr", "add", f"{plan.gateway}/{plan.subnet.prefixlen}", "dev", plan.bridge)
    _ip("link", "set", plan.bridge, "up")


def setup_pod(plan: NetnsPlan, ip: str, capture: Sequence[str], hosts: str) -> PodNetwork:
    """A namespace for the pod at ``ip``, wired to the bridge, with ``hosts`` as its
    ``/etc/hosts`` and the capture rules installed by ``capture`` (a command line run inside
    the namespace: the init container's ``pymesh iptables ...``; empty for a pod without a
    sidecar, which Istio's injector gives no init container)."""
    ns, veth = plan.namespace_for(ip), plan.veth_for(ip)
    teardown_pod(plan, ip)
    _ip("netns", "add", ns)
    try:
        write_hosts(ns, hosts)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", plan.bridge, "up")
        inside = ("-n", ns)
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "addr", "add", f"{ip}/{plan.subnet.prefixlen}", "dev", "eth0")
        _ip(*inside, "link", "set", "eth0", "up")
        _ip(*inside, "route", "add", "default", "via", plan.gateway)
        if capture:
            _run("ip", "netns", "exec", ns, *capture)
    except BaseException:
        teardown_pod(plan, ip)
        raise
    return PodNetwork(ns, ip)


def write_hosts(namespace: str, text: str) -> None:
    path = NETNS_ETC / namespace / "hosts"
    path.parent.mkdir(parents=True, exist_ok=True)
    # In place: processes already running see it through their bind mount of this inode.
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def teardown_pod(plan: NetnsPlan, ip: str) -> None:
    _delete_namespace(plan.namespace_for(ip))


def _delete_namespace(ns: str) -> None:
    pids = _ip("netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
            os.kill(int(pid), 9)
    _ip("netns", "del", ns, check=False)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


def namespaces(prefix: str) -> list[str]:
    listed = _ip("netns", "list", check=False).stdout.splitlines()
    return [line.split()[0] for line in listed if line.startswith(prefix)]


def namespaces_in_use(prefix: str) -> list[str]:
    """The namespaces named with ``prefix`` that processes still run in."""
    return [ns for ns in namespaces(prefix) if _ip("netns", "pids", ns, check=False).stdout.strip()]


def remove_all(prefix: str) -> list[str]:
    """Delete every namespace, veth and bridge named with ``prefix``; returns what was
    found. Safe to call when nothing exists."""
    found = namespaces(prefix)
    for ns in found:
        _delete_namespace(ns)
    links = _ip("-o", "link", "show", check=False).stdout.splitlines()
    for line in links:
        name = line.split(":", 2)[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(prefix):
            _ip("link", "del", name, check=False)
            found.append(name)
    return found


def _probe(namespace: str, port: int, timeout: float) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        target = os.open(_NETNS_RUN / namespace, os.O_RDONLY)
    except OSError:
        return False
    try:
        # setns moves only the calling thread, a fresh one that ends right after.
        if libc.setns(target, _CLONE_NEWNET) != 0:
            return False
        with socket.create_connection(("127.0.0.1", port), timeout):
            return True
    except OSError:
        return False
    finally:
        os.close(target)


async def probe_in_namespace(namespace: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something listens on ``port`` inside ``namespace`` (the kubelet's TCP probe,
    made from inside the pod so that the capture rules do not answer for the app)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()

    def settle(ok: bool) -> None:
        if not done.done():
            done.set_result(ok)

    def work() -> None:
        loop.call_soon_threadsafe(settle, _probe(namespace, port, timeout))

    threading.Thread(target=work, name=f"probe-{namespace}", daemon=True).start()
    return await done


def services_of(items: Iterable[Mapping[str, object]]) -> list[tuple[str, str]]:
    """(name, namespace) of every Service in pilot's JSON listing."""
    found = []
    for item in items:
        if item.get("kind") != "Service":
            continue
        meta = item.get("metadata")
        if isinstance(meta, Mapping) and meta.get("name"):
            found.append((str(meta["name"]), str(meta.get("namespace") or "default")))
    return sorted(found)
