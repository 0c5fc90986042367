"""One running pod: its address, its sidecar process and its app process.

A pod is two children of the supervisor, started and stopped together or one at a time
(``pymesh demo restart POD --app-only``). The app listens on ``<pod ip>:<containerPort>``;
the sidecar's listeners and admin are on the same address, configured by pilot.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import yaml

from pymesh.demo.agent import agent_files, remove_pod_dir
from pymesh.demo.bootstrap import HEALTH_PORT, bootstrap, node_id, write_bootstrap
from pymesh.demo.images import Role
from pymesh.demo.layout import (
    ADMIN_PORT,
    AGENT_STATUS_PORT,
    INBOUND_PORT,
    OUTBOUND_PORT,
    DemoLayout,
)
from pymesh.demo.netns import PodNetwork, probe_in_namespace
from pymesh.demo.pilot_api import SyncState
from pymesh.demo.pods import PodSpec, pod_env
from pymesh.demo.process import Child, spawn
from pymesh.demo.state import PodState, ProcessState

__all__ = [
    "PROXY_UID",
    "PodRuntime",
    "clean_env",
    "in_namespace",
    "pymesh_argv",
    "unprivileged_port_start",
]

#: The sidecar's uid and gid in a captured pod: Istio's ``istio-proxy`` user, which the
#: capture rules leave alone.
PROXY_UID = 1337

_PROXY_VARS = frozenset({"http_proxy", "https_proxy", "all_proxy", "no_proxy", "grpc_proxy"})


def clean_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` without proxy settings: grpc and aiohttp would send pilot's and the
    sidecars' own connections through an HTTP_PROXY meant for someone else."""
    return {k: v for k, v in base.items() if k.lower() not in _PROXY_VARS}


def pymesh_argv(python: str, log_level: str, *args: str) -> list[str]:
    return [python, "-m", "pymesh.cli.main", "--log-level", log_level, *args]


def reachable_by_others(path: str) -> bool:
    """Whether a user other than the owner may traverse to and read ``path`` (every parent
    directory world-searchable, the file world-readable)."""
    real = Path(path).resolve()
    try:
        if not real.stat().st_mode & 0o004:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in real.parents)
    except OSError:
        return False


def in_namespace(namespace: str, argv: list[str], *, uid: int | None = None) -> list[str]:
    """``argv`` run inside a pod's network namespace (with its ``/etc/hosts``), as ``uid``.

    When ``uid`` cannot reach the Python (and pymesh) the demo runs on, for example a
    Python installed under root's home, the process keeps one capability,
    CAP_DAC_READ_SEARCH, so that it can load them; it runs as ``uid`` all the same, which is
    what the capture rules look at."""
    prefix = ["ip", "netns", "exec", namespace]
    if uid is not None:
        prefix += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        if not (reachable_by_others(argv[0]) and reachable_by_others(__file__)):
            prefix += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
        prefix.append("--")
    return prefix + argv


def unprivileged_port_start() -> int:
    """The lowest port a non-root process may bind (Linux sysctl; 1024 elsewhere)."""
    if os.geteuid() == 0:
        return 0
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


class PodRuntime:
    """Mutable bookkeeping of one pod, owned by the supervisor's event loop."""

    def __init__(self, spec: PodSpec, ip: str, layout: DemoLayout, marker: str) -> None:
        self.spec = spec
        self.ip = ip
        self.layout = layout
        self.marker = marker
        self.app: Child | None = None
        self.proxy: Child | None = None
        #: mesh mTLS: the pod's identity agent (Istio's pilot-agent), serving its sidecar SDS
        self.agent: Child | None = None
        self.app_ready = False
        self.sync = SyncState("NOT CONNECTED")
        self.warning = spec.stand_in.warning
        self.app_exit: int | None = None
        self.proxy_exit: int | None = None
        #: netns mode: the pod's namespace (None for process mode and for the gateway)
        self.network: PodNetwork | None = None
        #: the app waits for its sidecar to be SYNCED (holdApplicationUntilProxyStarts)
        self.app_held = False

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def node_id(self) -> str:
        return node_id(self.spec, self.ip)

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        """The address:port pairs this pod binds (the gateway's Gateway ports excluded:
        they come from configuration)."""
        ports = [ADMIN_PORT] if self.spec.sidecar else []
        if self.spec.role is not Role.GATEWAY and self.spec.sidecar:
            ports += [OUTBOUND_PORT, INBOUND_PORT, AGENT_STATUS_PORT]
        if self.spec.runs_app and self.spec.container_port is not None:
            ports.append(self.spec.container_port)
            ports.extend(self.app_ports.values())
        return [(self.ip, p) for p in ports]

    @property
    def app_ports(self) -> dict[int, int]:
        """Container port -> where the app listens (process mode: elsewhere, its sidecar
        holds the container port)."""
        return self.spec.app_ports(captured=self.network is not None)

    @property
    def app_port(self) -> int | None:
        """The port the app itself listens on."""
        port = self.spec.container_port
        return None if port is None else self.app_ports.get(port, port)

    def _log(self, what: str) -> Path:
        return self.layout.log_file(f"{self.spec.name}.{self.spec.namespace}.{what}")

    # -- processes ---------------------------------------------------------------------------
    def start_agent(self, python: str, log_level: str, env: Mapping[str, str]) -> Path:
        """``pymesh agent`` for this pod: a token for its service account (as the kubelet
        projects one), a certificate from pilot's CA, SDS on a Unix socket of its own. A
        captured pod's agent runs in the pod's namespace as the sidecar's uid, as
        pilot-agent runs in the ``istio-proxy`` container."""
        spec, layout, network = self.spec, self.layout, self.network
        uid = PROXY_UID if network is not None else None
        files = agent_files(layout, self.key, spec.namespace, spec.service_account, uid)
        argv = pymesh_argv(
            python, log_level, "agent",
            "--ca-address", layout.ca_address,
            "--ca-root", str(files.root_cert),
            "--token-file", str(files.token),
            "--namespace", spec.namespace,
            "--service-account", spec.service_account,
            "--sds-socket", str(files.socket),
            "--status-address", f"{self.ip}:{AGENT_STATUS_PORT}",
            # Istio's metrics merging: the sidecar's exposition and the app's, on 15020
            "--proxy-stats-url", f"http://{self.ip}:{ADMIN_PORT}/stats/prometheus",
            "--app-host", self.ip,
        )  # fmt: skip
        app_scrape = spec.scrape[1]
        if app_scrape is not None:
            argv += ["--prometheus-annotations", app_scrape]
        if network is not None:
            argv = in_namespace(network.namespace, argv, uid=PROXY_UID)
        self.agent = spawn(
            f"{self.key}.agent", argv, env=clean_env(env), log=self._log("agent"),
            marker=self.marker,
        )  # fmt: skip
        return files.socket

    def _stats_address(self, captured: bool, sds_socket: Path | None) -> tuple[str, int] | None:
        if captured or sds_socket is not None or self.spec.role is Role.GATEWAY:
            return None
        return (self.ip, AGENT_STATUS_PORT)

    def start_proxy(self, python: str, log_level: str, env: Mapping[str, str]) -> None:
        if not self.spec.sidecar:
            return
        captured = self.network is not None
        sds_socket = None
        if self.layout.mtls:
            # The sidecar waits for its certificate, as Envoy does for its SDS secrets.
            sds_socket = self.start_agent(python, log_level, env)
        path = write_bootstrap(
            self.layout.bootstrap_file(self.spec.name, self.spec.namespace),
            self.spec,
            self.ip,
            self.layout.pilot_xds,
            process=not captured,
            sds_socket=sds_socket,
            # Without an agent, the sidecar itself answers on the agent's metrics port.
            stats_address=self._stats_address(captured, sds_socket),
        )
        if self.network is None:
            argv = pymesh_argv(python, log_level, "proxy", "-c", str(path), "--drain-time-s", "0.5")
        else:
            # uid 1337 may not read the run directory: the bootstrap travels inline.
            # Admin on every address: the host reads it (15000 is not captured inbound) and
            # the readiness listener on 15021 asks it over 127.0.0.1.
            inline = yaml.safe_dump(
                bootstrap(
                    self.spec,
                    self.ip,
                    self.layout.pilot_xds,
                    process=False,
                    admin_address="0.0.0.0",
                    health_port=HEALTH_PORT,
                    sds_socket=sds_socket,
                )
            )
            argv = in_namespace(
                self.network.namespace,
                pymesh_argv(
                    python, log_level, "proxy", "--config-yaml", inline, "--drain-time-s", "0.5"
                ),
                uid=PROXY_UID,
            )
        self.proxy = spawn(
            f"{self.key}.proxy",
            argv,
            env=clean_env(env),
            log=self._log("proxy"),
            marker=self.marker,
        )
        self.proxy_exit = None
        self.sync = SyncState("NOT CONNECTED")

    def start_app(self, env: Mapping[str, str]) -> None:
        self.app_held = False
        port = self.spec.container_port
        if not self.spec.runs_app or port is None:
            return
        if port < unprivileged_port_start():
            self.warning = (
                f"the app listens on port {port}, which needs root here "
                f"(or: sysctl net.ipv4.ip_unprivileged_port_start={port})"
            )
        mounts = {
            "config_dir": str(self.layout.config_dir),
            "config_map": self.spec.config_maps[0] if self.spec.config_maps else "",
            "container_port": str(port),
        }
        if self.network is None:
            argv = self.spec.stand_in.argv(
                self.ip, self.app_ports.get(port, port), mounts, self.spec.args
            )
        else:
            # As in a pod: the app listens on every address of its namespace, unchanged.
            argv = in_namespace(
                self.network.namespace,
                self.spec.stand_in.argv("0.0.0.0", port, mounts, self.spec.args),
            )
        pod_environment = pod_env(
            self.spec.name,
            self.spec.namespace,
            self.spec.service_account,
            self.ip,
            env,
            captured=self.network is not None and self.spec.sidecar,
            service_proxy=None if self.spec.sidecar else self.layout.service_proxy,
        )
        self.app = spawn(
            f"{self.key}.app", argv, env=pod_environment, log=self._log("app"), marker=self.marker
        )
        self.app_exit = None
        self.app_ready = False

    async def stop_app(self) -> None:
        if self.app is not None:
            child, self.app = self.app, None
            self.app_exit = await asyncio.to_thread(child.stop, 3.0)
        self.app_ready = False

    async def stop_proxy(self) -> None:
        if self.proxy is not None:
            child, self.proxy = self.proxy, None
            self.proxy_exit = await asyncio.to_thread(child.stop, 3.0)
        if self.agent is not None:
            agent, self.agent = self.agent, None
            await asyncio.to_thread(agent.stop, 3.0)
        if self.network is not None:
            remove_pod_dir(self.layout, self.key)
        self.sync = SyncState("NOT CONNECTED")

    async def stop(self) -> None:
        await asyncio.gather(self.stop_app(), self.stop_proxy())

    def children(self) -> list[Child]:
        return [c for c in (self.app, self.proxy, self.agent) if c is not None]

    # -- health ------------------------------------------------------------------------------
    def reap(self) -> list[str]:
        """Notice exited processes; returns one line per process that just ended."""
        events = []
        if self.app is not None and (code := self.app.poll()) is not None:
            self.app_exit, self.app, self.app_ready = code, None, False
            events.append(f"{self.key}: app exited with status {code}")
        if self.proxy is not None and (code := self.proxy.poll()) is not None:
            self.proxy_exit, self.proxy = code, None
            self.sync = SyncState("NOT CONNECTED")
            events.append(f"{self.key}: proxy exited with status {code}")
        if self.agent is not None and (code := self.agent.poll()) is not None:
            self.agent = None
            events.append(
                f"{self.key}: identity agent exited with status {code}; see {self._log('agent')}"
            )
        return events

    async def probe_app(self, session: aiohttp.ClientSession) -> bool:
        """Whether the app answers HTTP (the readiness probe; any status will do). The
        session keeps one connection per app open, so probing every tick leaves no trail
        of closed sockets in TIME-WAIT."""
        port = self.app_port
        if self.app is None or port is None:
            self.app_ready = False
            return False
        if self.network is not None:
            # From the host, the capture rules would answer for the app: probe from inside.
            self.app_ready = await probe_in_namespace(self.network.namespace, port)
            return self.app_ready
        try:
            if self.spec.stand_in.tcp or self.spec.stand_in.grpc:
                async with asyncio.timeout(1.0):
                    _, writer = await asyncio.open_connection(self.ip, port)
                writer.close()
            else:
                async with session.get(f"http://{self.ip}:{port}/", allow_redirects=False) as resp:
                    await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError):
            self.app_ready = False
            return False
        self.app_ready = True
        return True

    # -- state -------------------------------------------------------------------------------
    def state(self) -> PodState:
        def process(child: Child | None, exit_code: int | None, what: str) -> ProcessState | None:
            if child is not None:
                return ProcessState(child.pid, str(child.log_path), True, None, child.started_at)
            if exit_code is not None:
                return ProcessState(0, str(self._log(what)), False, exit_code)
            return None

        spec = self.spec
        return PodState(
            name=spec.name,
            namespace=spec.namespace,
            ip=self.ip,
            role=spec.role.value,
            node_id=self.node_id,
            version=spec.version,
            labels=dict(spec.labels),
            service_account=spec.service_account,
            image=spec.image,
            port=spec.container_port if spec.runs_app else None,
            app=process(self.app, self.app_exit, "app"),
            proxy=process(self.proxy, self.proxy_exit, "proxy"),
            app_ready=self.app_ready,
            sync=self.sync.status,
            sync_detail=self.sync.detail,
            warning=self.warning,
            owner=spec.owner,
            container=spec.container,
            netns=self.network.namespace if self.network is not None else "",
            sidecar=spec.sidecar,
        )
