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
from pymesh.demo.layout import DemoLayout
from pymesh.demo.pilot_api import SyncState
from pymesh.demo.pods import PodSpec
from pymesh.demo.ports import busy
from pymesh.demo.process import Child
from pymesh.demo.runtime import PodRuntime

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

    # -- reconciliation ----------------------------------------------------------------------
    async def reconcile(self, desired: Iterable[PodSpec]) -> None:
        wanted = {spec.key: spec for spec in desired}
        for key in [k for k in self.pods if k not in wanted]:
            pod = self.pods.pop(key)
            self.say(f"  deleting pod {key}")
            await pod.stop()
        for key, spec in wanted.items():
            current = self.pods.get(key)
            if current is not None and current.spec.revision == spec.revision:
                continue
            if current is not None:
                self.say(f"  replacing pod {key} (its template changed)")
                await current.stop()
                del self.pods[key]
            ip = self.address_for(spec)
            if ip is None:
                self.say(f"  no free address for pod {key} in {self.layout.pod_addresses}")
                continue
            self._start(PodRuntime(spec, ip, self.layout, self.marker))

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

    def _start(self, pod: PodRuntime) -> None:
        self._assigned[pod.key] = pod.ip
        self.pods[pod.key] = pod
        taken = busy(pod.endpoints)
        if taken:
            shown = ", ".join(f"{ip}:{port}" for ip, port in taken)
            pod.warning = f"not started: {shown} already in use by another process"
            self.say(f"  pod {pod.key}: {pod.warning}")
            return
        pod.start_proxy(self.python, self.log_level, self.env)
        pod.start_app(self.env)
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
        await asyncio.gather(*(pod.stop() for pod in self.pods.values()))

    def children(self) -> list[Child]:
        return [c for pod in self.pods.values() for c in pod.children()]

    def ordered(self) -> list[PodRuntime]:
        """Gateways first, then by namespace and name (the order of the tables)."""
        return sorted(
            self.pods.values(),
            key=lambda p: (p.spec.role is not Role.GATEWAY, p.spec.namespace, p.spec.name),
        )
