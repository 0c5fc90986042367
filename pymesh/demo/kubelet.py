"""The pods of a demo, kept in line with the Deployments and Pods pilot holds.

Like a kubelet of a one-node cluster: :meth:`Kubelet.reconcile` starts the pods that are
missing (an address, a sidecar, the stand-in app), stops the ones that were deleted and
replaces the ones whose template changed. An app that dies is not restarted: its endpoint
goes unhealthy as in a cluster whose pod failed, until ``pymesh demo restart POD
--app-only``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import aiohttp

from pymesh.demo.control import ControlError
from pymesh.demo.images import Role
from pymesh.demo.layout import INBOUND_PORT, OUTBOUND_PORT, DemoLayout
from pymesh.demo.netns import (
    CAPTURE_EXCLUDED_INBOUND,
    hosts_file,
    setup_pod,
    teardown_pod,
    write_hosts,
)
from pymesh.demo.pilot_api import SyncState
from pymesh.demo.pods import PodSpec
from pymesh.demo.ports import busy
from pymesh.demo.process import Child
from pymesh.demo.runtime import PROXY_UID, PodRuntime, pymesh_argv
from pymesh.errors import ConfigError

__all__ = ["NOT_CONNECTED", "Kubelet"]

NOT_CONNECTED = SyncState("NOT CONNECTED")


class Kubelet:
    def __init__(
        self,
        layout: DemoLayout,
        *,
        marker: str,
        env: Mapping[str, str],
        python: str,
        log_level: str,
        say: Callable[[str], None],
    ) -> None:
        self.layout = layout
        self.marker = marker
        self.env = env
        self.python = python
        self.log_level = log_level
        self.say = say
        self.pods: dict[str, PodRuntime] = {}
        # Addresses stay with pod names for the life of the demo: a Deployment deleted and
        # applied again comes back where it was.
        self._assigned: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None
        #: netns mode: each Service's virtual address, kept for the life of the demo
        self.virtual_ips: dict[tuple[str, str], str] = {}

    # -- netns mode --------------------------------------------------------------------------
    def _captured(self, spec: PodSpec) -> bool:
        return self.layout.netns is not None and spec.role is not Role.GATEWAY

    def set_services(self, services: Iterable[tuple[str, str]]) -> None:
        """Give new Services a virtual address and rewrite every pod's hosts file when the
        set changed (a Service deleted keeps its address: names never move)."""
        plan = self.layout.netns
        if plan is None:
            return
        changed = False
        for key in services:
            if key not in self.virtual_ips:
                self.virtual_ips[key] = plan.virtual_ip(len(self.virtual_ips))
                changed = True
        if changed:
            for pod in self.pods.values():
                if pod.network is not None:
                    write_hosts(pod.network.namespace, self._hosts(pod.spec))

    def _hosts(self, spec: PodSpec) -> str:
        return hosts_file(self.virtual_ips, spec.namespace)

    def _capture_argv(self) -> list[str]:
        """The init container's command (Istio's flags, the admin port left uncaptured)."""
        return pymesh_argv(
            self.python,
            "warning",
            "iptables",
            "-p",
            str(OUTBOUND_PORT),
            "-z",
            str(INBOUND_PORT),
            "-u",
            str(PROXY_UID),
            "-m",
            "REDIRECT",
            "-i",
            "*",
            "-x",
            "",
            "-b",
            "*",
            "-d",
            CAPTURE_EXCLUDED_INBOUND,
        )

    async def _stop_pod(self, pod: PodRuntime) -> None:
        await pod.stop()
        if pod.network is not None and self.layout.netns is not None:
            plan, ip = self.layout.netns, pod.ip
            await asyncio.to_thread(teardown_pod, plan, ip)
            pod.network = None

    # -- reconciliation ----------------------------------------------------------------------
    async def reconcile(self, desired: Iterable[PodSpec]) -> None:
        wanted = {spec.key: spec for spec in desired}
        for key in [k for k in self.pods if k not in wanted]:
            pod = self.pods.pop(key)
            self.say(f"  deleting pod {key}")
            await self._stop_pod(pod)
        for key, spec in wanted.items():
            current = self.pods.get(key)
            if current is not None and current.spec.revision == spec.revision:
                continue
            if current is not None:
                self.say(f"  replacing pod {key} (its template changed)")
                await self._stop_pod(current)
                del self.pods[key]
            ip = self.address_for(spec)
            if ip is None:
                self.say(f"  no free address for pod {key} in {self.layout.pod_addresses}")
                continue
            await self._start(PodRuntime(spec, ip, self.layout, self.marker))

    def address_for(self, spec: PodSpec) -> str | None:
        """The ingress gateway gets the control address; any other pod the address it had
        before, else the lowest one no pod has had yet, else the lowest free one."""
        used = {pod.ip for pod in self.pods.values()}
        gateway = self.layout.gateway_address
        is_ingress = spec.role is Role.GATEWAY and spec.labels.get("istio") == "ingressgateway"
        if is_ingress and gateway not in used:
            return gateway
        previous = self._assigned.get(spec.key)
        if previous is not None and previous not in used and previous != gateway:
            return previous
        candidates = [ip for ip in self.layout.pod_addresses.addresses() if ip not in used]
        remembered = set(self._assigned.values())
        fresh = [ip for ip in candidates if ip not in remembered]
        pool = fresh or candidates
        return pool[0] if pool else None

    async def _start(self, pod: PodRuntime) -> None:
        self._assigned[pod.key] = pod.ip
        self.pods[pod.key] = pod
        plan = self.layout.netns
        if plan is not None and self._captured(pod.spec):
            try:
                # No sidecar, no init container: nothing captures its traffic.
                capture = self._capture_argv() if pod.spec.sidecar else []
                pod.network = await asyncio.to_thread(
                    setup_pod, plan, pod.ip, capture, self._hosts(pod.spec)
                )
            except ConfigError as exc:
                pod.warning = f"not started: its network namespace failed: {exc}"
                self.say(f"  pod {pod.key}: {pod.warning}")
                return
        taken = busy(pod.endpoints) if pod.network is None else []
        if taken:
            shown = ", ".join(f"{ip}:{port}" for ip, port in taken)
            pod.warning = f"not started: {shown} already in use by another process"
            self.say(f"  pod {pod.key}: {pod.warning}")
            return
        pod.start_proxy(self.python, self.log_level, self.env)
        if pod.network is None or not pod.spec.sidecar:
            pod.start_app(self.env)
        else:
            # holdApplicationUntilProxyStarts: a captured app's first call would find no
            # sidecar listening; it starts once its proxy is SYNCED (update_sync).
            pod.app_held = pod.spec.runs_app
        what = pod.spec.stand_in.module or pod.spec.role.value
        self.say(f"  starting pod {pod.key} at {pod.ip} ({what})")
        if pod.warning:
            self.say(f"    warning: {pod.warning}")

    # -- health ------------------------------------------------------------------------------
    async def check(self) -> None:
        """Notice exited processes and probe the apps that run."""
        for pod in self.pods.values():
            for event in pod.reap():
                self.say(event)
        session = self._probe_session()
        await asyncio.gather(
            *(p.probe_app(session) for p in self.pods.values() if p.app is not None)
        )

    def _probe_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Apps are probed directly (trust_env=False: no HTTP_PROXY), one kept-alive
            # connection each.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=1, keepalive_timeout=60),
                timeout=aiohttp.ClientTimeout(total=1.0),
                trust_env=False,
            )
        return self._session

    def update_sync(self, states: Mapping[str, SyncState], now: float) -> None:
        """``now`` is wall-clock time. A stream older than the proxy process is the one of
        the proxy it replaced, which pilot has not seen close yet: not this proxy's state."""
        for pod in self.pods.values():
            if pod.proxy is None:
                continue
            state = states.get(pod.node_id, NOT_CONNECTED)
            age = state.connected_seconds
            if age is not None and age > now - pod.proxy.started_at + 1.0:
                state = NOT_CONNECTED
            pod.sync = state
            if pod.app_held and state.status == "SYNCED":
                pod.app_held = False
                pod.start_app(self.env)

    def forget_sync(self) -> None:
        """After a pilot restart: what the old pilot said is not news."""
        for pod in self.pods.values():
            pod.sync = NOT_CONNECTED

    # -- commands ----------------------------------------------------------------------------
    async def restart(self, target: str, what: str) -> dict[str, Any]:
        matches = [p for p in self.pods.values() if target in (p.key, p.spec.name)]
        if len(matches) != 1:
            known = ", ".join(sorted(p.spec.name for p in self.pods.values()))
            problem = "is ambiguous" if matches else "does not exist"
            raise ControlError(f"pod {target!r} {problem}; pods: {known}, or pilot", 404)
        pod = matches[0]
        if what == "app" and not pod.spec.runs_app:
            raise ControlError(f"pod {pod.key} has no app, only its proxy")
        if what == "proxy" and not pod.spec.sidecar:
            raise ControlError(f"pod {pod.key} has no sidecar (istio-injection=disabled)")
        restarted = []
        if what in ("all", "app") and pod.spec.runs_app:
            await pod.stop_app()
            pod.start_app(self.env)
            restarted.append("app")
        if what in ("all", "proxy"):
            await pod.stop_proxy()
            pod.start_proxy(self.python, self.log_level, self.env)
            restarted.append("proxy")
        self.say(f"  restarted {pod.key}: {', '.join(restarted)}")
        return {"ok": True, "pod": pod.key, "restarted": restarted}

    async def stop_all(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await asyncio.gather(*(self._stop_pod(pod) for pod in self.pods.values()))

    def children(self) -> list[Child]:
        return [c for pod in self.pods.values() for c in pod.children()]

    def ordered(self) -> list[PodRuntime]:
        """Gateways first, then by namespace and name (the order of the tables)."""
        return sorted(
            self.pods.values(),
            key=lambda p: (p.spec.role is not Role.GATEWAY, p.spec.namespace, p.spec.name),
        )
