"""The demo's supervisor: pilot, then one pod per Deployment in pilot's configuration.

Every half second it asks pilot which Deployments and Pods exist and hands them to the
:class:`~pymesh.demo.kubelet.Kubelet`, which starts, stops and replaces pods; then it notices
processes that exit, probes the apps, reads every proxy's sync state and rewrites the state
file. It owns the run directory, the control socket and the way out: signals, ``atexit``, and
a check that every child is gone.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from pymesh.demo.agent import remove_sds_root
from pymesh.demo.control import ControlError, ControlServer
from pymesh.demo.kubelet import Kubelet
from pymesh.demo.layout import SERVICE_PROXY_PORT, DemoLayout
from pymesh.demo.manifests import seed_files, write_mesh_config
from pymesh.demo.netns import (
    check_host,
    namespaces_in_use,
    remove_all,
    services_of,
    setup_bridge,
)
from pymesh.demo.pilot_api import PilotApi
from pymesh.demo.pods import desired_pods
from pymesh.demo.ports import busy, holder
from pymesh.demo.process import Child, is_supervisor, marked_processes, spawn, stop_pids
from pymesh.demo.render import bind_failure, hints, pod_table
from pymesh.demo.runtime import clean_env, pymesh_argv
from pymesh.demo.service_proxy import ServiceProxy, ServiceTable
from pymesh.demo.state import DemoState, ProcessState, read_state, write_state
from pymesh.demo.telemetry import Telemetry
from pymesh.errors import ConfigError, ControlPlaneError, PymeshError

__all__ = ["DemoOptions", "Supervisor"]

_TICK = 0.5


@dataclass(frozen=True, slots=True)
class DemoOptions:
    layout: DemoLayout
    #: start from what the last run left in the config directory (``--fresh``: don't)
    keep_config: bool = True
    mesh_config: Path | None = None
    outbound_traffic_policy: str = "ALLOW_ANY"
    log_level: str = "info"
    pilot_timeout: float = 30.0
    #: after this many seconds without every pod ready, say which ones are missing
    ready_timeout: float = 60.0
    #: False under ``pymesh demo up``: the same output, into ``logs/demo.log``
    foreground: bool = True
    default_run_dir: bool = True
    python: str = sys.executable


class Supervisor:
    def __init__(self, options: DemoOptions, out: TextIO, clock: Callable[[], float]) -> None:
        self.options = options
        self.layout = options.layout
        self.out = out
        self.clock = clock
        self.marker = str(self.layout.run_dir.resolve())
        self.env = clean_env(os.environ)
        self.api = PilotApi(self.layout.pilot_url, self.layout.token_file)
        self.pilot: Child | None = None
        self.pilot_exit: int | None = None
        self.pilot_ready = False
        self.kubelet = Kubelet(
            self.layout,
            marker=self.marker,
            env=self.env,
            python=options.python,
            log_level=options.log_level,
            say=self.say,
        )
        self.telemetry = Telemetry(
            self.layout,
            python=options.python,
            log_level=options.log_level,
            env=self.env,
            marker=self.marker,
            say=self.say,
        )
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._phase = "starting"
        self._message = ""
        self._announced = False
        self._late = False
        self._ready_once: set[str] = set()
        self._failures: set[str] = set()
        self._api_error = ""
        self._last_state: dict[str, Any] | None = None
        self._started = clock()
        #: pilot's Deployments, Pods, Services and Namespaces at the last reconcile
        self._items: list[dict[str, Any]] = []
        self.service_proxy = ServiceProxy(
            self.layout.report_host, SERVICE_PROXY_PORT, self._service_table
        )
        self.control = ControlServer(self.layout.control_socket, self._control)

    # -- output ------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def _prepare(self) -> None:
        layout = self.layout
        previous = read_state(layout.state_file)
        if (
            previous is not None
            and previous.phase != "stopped"
            and previous.supervisor_pid != os.getpid()
            and is_supervisor(previous.supervisor_pid)
        ):
            raise ConfigError(
                f"a demo is already running in {layout.run_dir} (pid "
                f"{previous.supervisor_pid}); stop it with `pymesh demo down`"
            )
        layout.run_dir.mkdir(parents=True, exist_ok=True)
        layout.logs_dir.mkdir(exist_ok=True)
        # Children of a supervisor that was killed outright (PDEATHSIG covers Linux only),
        # and the agents' sockets and tokens they left.
        stop_pids(list(marked_processes(self.marker)))
        remove_sds_root(layout)
        if not self.options.keep_config:
            shutil.rmtree(layout.config_dir, ignore_errors=True)
            shutil.rmtree(layout.bootstrap_dir, ignore_errors=True)
        layout.config_dir.mkdir(exist_ok=True)
        if self.options.mesh_config is not None:
            shutil.copyfile(self.options.mesh_config, layout.mesh_file)
        elif not (self.options.keep_config and layout.mesh_file.exists()):
            write_mesh_config(
                layout.mesh_file, self.options.outbound_traffic_policy, telemetry=layout.report_host
            )
        taken = busy(
            [
                (layout.control_address, layout.pilot_xds_port),
                (layout.control_address, layout.pilot_api_port),
            ]
        )
        if taken:
            ip, port = taken[0]
            raise ConfigError(
                f"{ip}:{port} is in use by {holder(taken[0])}: pilot cannot listen there "
                "(`pymesh demo down` if it is another demo, or choose --control-address)"
            )
        if layout.netns is not None:
            check_host()
            busy_ns = namespaces_in_use(layout.netns.prefix)
            if busy_ns:
                raise ConfigError(
                    f"network namespaces {', '.join(busy_ns)} have running processes: is "
                    "another netns demo running? (`pymesh demo down`, or --netns-prefix)"
                )
        layout.pid_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
        if layout.netns is not None:
            # What a demo of this prefix left behind when it was killed outright.
            remove_all(layout.netns.prefix)
            try:
                setup_bridge(layout.netns)
            except ConfigError:
                remove_all(layout.netns.prefix)
                raise
            self.say(
                f"pymesh demo: netns mode, pods on bridge {layout.netns.bridge} "
                f"({layout.netns.subnet}), pilot xDS on {layout.pilot_xds}"
            )

    async def run(self) -> int:
        """Start everything, serve until a signal or ``POST /stop``, stop everything."""
        self._prepare()
        atexit.register(self._kill_all)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._on_signal)
        try:
            await self.control.start()
            self._write_state()
            self.say(f"pymesh demo: run directory {self.layout.run_dir}")
            await self.telemetry.start()
            await self._start_service_proxy()
            await self._start_pilot()
            self._write_state()
            await self._seed()
            while not self._stop.is_set():
                await self._tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), _TICK)
            return 0
        except PymeshError as exc:
            self._phase, self._message = "failed", str(exc)
            self.say(f"error: {exc}")
            return 1
        finally:
            await self._shutdown()

    def _on_signal(self) -> None:
        if self._stop.is_set():
            # A second Ctrl-C: no more waiting for anything to drain.
            self._kill_all()
            os._exit(130)
        self._stop.set()

    async def _shutdown(self) -> None:
        if self._phase != "failed":
            self._phase = "stopping"
        self.say("stopping ...")
        self._write_state()
        async with self._lock:
            await self.kubelet.stop_all()
            await self._stop_pilot()
            await self.telemetry.stop()
            await self.service_proxy.stop()
        await self.api.close()
        await self.control.stop()
        # Whatever still carries this demo's marker (a grandchild, say) goes now.
        stragglers = list(marked_processes(self.marker))
        left = await asyncio.to_thread(stop_pids, stragglers) if stragglers else []
        if self.layout.netns is not None:
            await asyncio.to_thread(remove_all, self.layout.netns.prefix)
        remove_sds_root(self.layout)
        self._phase = "stopped" if self._phase != "failed" else "failed"
        self._write_state()
        self.layout.pid_file.unlink(missing_ok=True)
        atexit.unregister(self._kill_all)
        if left:
            self.say(f"stopped, but these processes would not die: {left}")
        else:
            self.say("stopped: no process of this demo is left")

    def _kill_all(self) -> None:
        """Last resort (atexit, second signal): SIGKILL every child's group."""
        children = self.kubelet.children() + self.telemetry.children()
        if self.pilot is not None:
            children.append(self.pilot)
        for child in children:
            child.kill()
        if self.layout.netns is not None:
            remove_all(self.layout.netns.prefix)
        remove_sds_root(self.layout)

    # -- the service proxy -------------------------------------------------------------------
    async def _start_service_proxy(self) -> None:
        """kube-proxy's role for sidecar-less pods; like telemetry, never holds the demo up."""
        try:
            await self.service_proxy.start()
        except OSError as exc:
            self.say(
                f"  no service proxy on {self.layout.service_proxy} ({exc}): pods without a "
                "sidecar cannot reach Services"
            )

    def _service_table(self) -> ServiceTable:
        running = [
            (p.spec.namespace, p.spec.labels, p.ip, p.spec.container_port)
            for p in self.kubelet.pods.values()
            if p.app is not None
        ]
        return ServiceTable.build(self._items, running)

    # -- pilot -------------------------------------------------------------------------------
    async def _start_pilot(self) -> None:
        layout = self.layout
        self.say(f"starting pilot: xDS {layout.pilot_xds}, API {layout.pilot_url} ...")
        started = self.clock()
        argv = pymesh_argv(
            self.options.python,
            self.options.log_level,
            "pilot",
            "--config-dir",
            str(layout.config_dir),
            "--xds-address",
            layout.pilot_xds,
            "--api-address",
            layout.pilot_api,
            "--mesh-config",
            str(layout.mesh_file),
            # Mesh mTLS: istiod's CA on 15012, its root and keys in the run directory.
            *(
                ("--ca-dir", str(layout.ca_dir), "--ca-address", layout.ca_address)
                if layout.mtls
                else ()
            ),
        )
        self.pilot = spawn(
            "pilot", argv, env=self.env, log=layout.log_file("pilot"), marker=self.marker
        )
        self.pilot_exit = None
        deadline = started + self.options.pilot_timeout
        while not await self.api.ready():
            code = self.pilot.poll()
            if code is not None:
                self.pilot_exit, self.pilot = code, None
                raise ControlPlaneError(
                    f"pilot exited with status {code}; see {layout.log_file('pilot')}"
                )
            if self.clock() > deadline:
                raise ControlPlaneError(
                    f"pilot not ready after {self.options.pilot_timeout:.0f} s; "
                    f"see {layout.log_file('pilot')}"
                )
            await asyncio.sleep(0.1)
        self.pilot_ready = True
        self.say(f"  pilot ready ({self.clock() - started:.1f} s)")

    async def _stop_pilot(self) -> None:
        self.pilot_ready = False
        if self.pilot is not None:
            child, self.pilot = self.pilot, None
            self.pilot_exit = await asyncio.to_thread(child.stop, 5.0)

    async def _seed(self) -> None:
        existing = await self.api.workloads()
        if self.options.keep_config and existing:
            self.say(
                f"  keeping the objects of the last run in {self.layout.config_dir} "
                "(--fresh starts from the manifests)"
            )
            return
        total = 0
        for path in seed_files():
            changes = await self.api.apply(path.read_text(encoding="utf-8"), str(path))
            total += len(changes)
            self.say(f"  applied {path.name} ({len(changes)} objects)")
        self.say(f"  {total} objects in {self.layout.config_dir}")

    # -- the loop ----------------------------------------------------------------------------
    async def _tick(self) -> None:
        self.telemetry.check()
        if self.pilot is not None and (code := self.pilot.poll()) is not None:
            self.pilot_exit, self.pilot, self.pilot_ready = code, None, False
            self.say(f"pilot exited with status {code}; see {self.layout.log_file('pilot')}")
        async with self._lock:
            if self.pilot_ready:
                await self._reconcile()
            await self.kubelet.check()
            if self.telemetry.prometheus is not None:
                self.telemetry.write_pod_targets(self.kubelet.ordered())
            await self._refresh_sync()
        self._progress()
        self._write_state()

    async def _reconcile(self) -> None:
        try:
            items = await self.api.workloads()
            self.kubelet.set_services(services_of(items))
            desired = desired_pods(items)
            self._items = items
        except ControlPlaneError as exc:
            if str(exc) != self._api_error:
                self._api_error = str(exc)
                self.say(f"pilot API: {exc} (pods are left as they are)")
            return
        self._api_error = ""
        await self.kubelet.reconcile(desired)

    async def _refresh_sync(self) -> None:
        if not self.pilot_ready or not self.kubelet.pods:
            return
        try:
            states = await self.api.sync()
        except ControlPlaneError:
            return
        self.kubelet.update_sync(states, time.time())

    def _progress(self) -> None:
        state = self.state()
        elapsed = self.clock() - self._started
        for pod in state.pods:
            if pod.ready and pod.key not in self._ready_once:
                self._ready_once.add(pod.key)
                self.say(f"  pod {pod.key} ready ({elapsed:.1f} s)")
            failure = bind_failure(pod)
            if failure is not None and failure not in self._failures:
                self._failures.add(failure)
                self.say(f"error: {failure}")
        if self._announced:
            return
        if not state.ready:
            if elapsed > self.options.ready_timeout and not self._late:
                self._late = True
                waiting = [p for p in state.pods if not p.ready]
                self.say(
                    f"still waiting after {elapsed:.0f} s for: " + ", ".join(p.key for p in waiting)
                )
                self.say(pod_table(state))
            return
        self._announced = True
        self._phase = "running"
        self.say(
            f"\nBookinfo is up: {len(state.pods)} pods, every proxy SYNCED ({elapsed:.1f} s)\n"
        )
        self.say(pod_table(state))
        self.say(hints(state, str(self.layout.run_dir), self.options.default_run_dir))
        if self.options.foreground:
            self.say("\nCtrl-C stops everything.")

    # -- state -------------------------------------------------------------------------------
    def _urls(self) -> tuple[str, ...]:
        productpage = f"http://{self.layout.gateway_address}:8080/productpage"
        return (productpage, *self.telemetry.urls())

    def state(self) -> DemoState:
        pilot = None
        if self.pilot is not None:
            pilot = ProcessState(self.pilot.pid, str(self.pilot.log_path), True)
        elif self.pilot_exit is not None:
            pilot = ProcessState(0, str(self.layout.log_file("pilot")), False, self.pilot_exit)
        return DemoState(
            run_dir=str(self.layout.run_dir),
            supervisor_pid=os.getpid(),
            phase=self._phase,
            control_address=self.layout.control_address,
            pilot_xds=self.layout.pilot_xds,
            pilot_api=self.layout.pilot_url,
            pod_addresses=str(self.layout.pod_addresses),
            pilot=pilot,
            pilot_ready=self.pilot_ready,
            pods=tuple(pod.state() for pod in self.kubelet.ordered()),
            urls=self._urls(),
            message=self._message,
            updated_at=time.time(),
            netns_prefix=self.layout.netns.prefix if self.layout.netns else "",
            netns_subnet=str(self.layout.netns.subnet) if self.layout.netns else "",
            service_proxy=self.layout.service_proxy,
        )

    def _write_state(self) -> None:
        state = self.state()
        comparable = {**state.to_json(), "updated_at": 0}
        if comparable != self._last_state:
            self._last_state = comparable
            write_state(self.layout.state_file, state)

    # -- control socket ----------------------------------------------------------------------
    async def _control(self, op: str, body: dict[str, Any]) -> dict[str, Any]:
        if op == "state":
            return self.state().to_json()
        if op == "stop":
            self._stop.set()
            return {"ok": True}
        target = str(body.get("target", ""))
        what = str(body.get("what", "all"))
        if what not in ("all", "app", "proxy"):
            raise ControlError(f"what={what!r}: use all, app or proxy")
        async with self._lock:
            if target == "pilot":
                return await self._restart_pilot(body.get("mesh_config"))
            answer = await self.kubelet.restart(target, what)
            self._write_state()
            return answer

    async def _restart_pilot(self, mesh_config: object) -> dict[str, Any]:
        if isinstance(mesh_config, str):
            self.layout.mesh_file.write_text(mesh_config, encoding="utf-8")
        await self._stop_pilot()
        self.kubelet.forget_sync()
        self._write_state()
        try:
            await self._start_pilot()
        except ControlPlaneError as exc:
            raise ControlError(str(exc), 500) from None
        return {"ok": True, "restarted": ["pilot"]}
