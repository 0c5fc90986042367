"""``pymesh demo up | down | status | restart | env``: the client side of a running demo.

``up`` starts the supervisor in the background (its own session, its output in
``logs/demo.log``) and follows the state file until every proxy is SYNCED; ``down`` stops it
and then proves that nothing is left: no process carrying the demo's marker, no listener on
the demo's addresses.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from pymesh.demo.agent import remove_sds_root
from pymesh.demo.control import ControlClient, ControlError
from pymesh.demo.layout import ADMIN_PORT, DemoLayout
from pymesh.demo.ports import listening
from pymesh.demo.process import is_supervisor, marked_processes, stop_pids
from pymesh.demo.render import bind_failure, status_text
from pymesh.demo.state import DemoState, PodState, read_state
from pymesh.demo.telemetry import MIXER_PORTS, PROMETHEUS_PORT
from pymesh.errors import PymeshError

__all__ = [
    "DemoError",
    "DownReport",
    "demo_env",
    "down",
    "restart",
    "running_state",
    "status",
    "up",
    "wait_ready",
]


class DemoError(PymeshError):
    """A demo command that cannot do what was asked; the message says what to do."""


def running_state(layout: DemoLayout) -> DemoState | None:
    """The state of the demo in ``layout.run_dir`` when its supervisor is alive."""
    state = read_state(layout.state_file)
    if state is None or not is_supervisor(state.supervisor_pid):
        return None
    return state


def _since(path: os.PathLike[str] | str, offset: int, lines: int = 15) -> str:
    """What the log got after ``offset``: its ``error:`` lines when there are any (the reason
    a start failed), else its last ``lines`` lines; never an earlier run's."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    new = text.splitlines()
    errors = [line.removeprefix("error: ") for line in new if line.startswith("error:")]
    return "\n".join(errors or new[-lines:])


def wait_ready(
    layout: DemoLayout,
    timeout: float,
    out: TextIO,
    *,
    supervisor_pid: int | None = None,
    since: float = 0.0,
    log_offset: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> DemoState:
    """Follow the state file until the demo is ready; print progress as it changes.

    Raises DemoError when the supervisor dies or ``timeout`` passes, naming what is not
    ready and where its log is.
    """
    start = clock()
    last = ""
    nacked: set[str] = set()
    state: DemoState | None = None
    while True:
        state = read_state(layout.state_file)
        fresh = state is not None and state.updated_at >= since
        if fresh and state is not None:
            if state.phase == "failed":
                raise DemoError(f"the demo failed: {state.message}\nsee {layout.supervisor_log}")
            ready = sum(1 for p in state.pods if p.ready)
            line = f"  pilot {'ready' if state.pilot_ready else 'starting'}, "
            line += f"pods ready {ready}/{len(state.pods)}"
            if line != last:
                print(f"{line}  ({clock() - start:.1f} s)", file=out, flush=True)
                last = line
            for pod in state.pods:
                failure = bind_failure(pod)
                if failure is not None:
                    raise DemoError(failure)
                if pod.sync == "NACK" and pod.key not in nacked:
                    nacked.add(pod.key)
                    print(f"  {pod.key}: proxy NACK: {pod.sync_detail}", file=out, flush=True)
            if state.ready:
                return state
        pid = supervisor_pid if supervisor_pid is not None else (state and state.supervisor_pid)
        if pid and not is_supervisor(pid):
            raise DemoError(
                _since(layout.supervisor_log, log_offset)
                or f"the demo supervisor exited; see {layout.supervisor_log}"
            )
        if clock() - start > timeout:
            detail = ""
            if state is not None:
                waiting = [p for p in state.pods if not p.ready]
                detail = "\n".join(_not_ready(layout, p) for p in waiting)
            raise DemoError(
                f"not ready after {timeout:.0f} s:\n{detail or '  pilot is not ready'}\n"
                f"supervisor log: {layout.supervisor_log}"
            )
        time.sleep(0.2)


def _not_ready(layout: DemoLayout, pod: PodState) -> str:
    parts = []
    if pod.role == "app" and pod.port is not None:
        parts.append(f"app {'ready' if pod.app_ready else 'not listening'}")
        if pod.app is not None and not pod.app.running:
            parts.append(f"app {pod.app.summary}, see {layout.log_file(pod.key + '.app')}")
    detail = f" ({pod.sync_detail})" if pod.sync_detail else ""
    parts.append(f"proxy {pod.sync}{detail}, see {layout.log_file(pod.key + '.proxy')}")
    return f"  {pod.key}: " + "; ".join(parts)


def up(
    layout: DemoLayout,
    run_args: Sequence[str],
    timeout: float,
    out: TextIO,
    *,
    python: str = sys.executable,
) -> DemoState:
    """Start the supervisor in the background and wait until everything is SYNCED. On
    failure the half-started demo is stopped again before the error is raised."""
    current = running_state(layout)
    if current is not None:
        raise DemoError(
            f"a demo is already running in {layout.run_dir} (pid {current.supervisor_pid}); "
            "`pymesh demo status` shows it, `pymesh demo down` stops it"
        )
    layout.logs_dir.mkdir(parents=True, exist_ok=True)
    argv = [python, "-m", "pymesh.cli.main", *run_args]
    since = time.time()
    with open(layout.supervisor_log, "ab") as log:
        offset = log.tell()
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    print(f"demo supervisor started (pid {proc.pid}); log: {layout.supervisor_log}", file=out)
    try:
        return wait_ready(
            layout, timeout, out, supervisor_pid=proc.pid, since=since, log_offset=offset
        )
    except DemoError:
        if proc.poll() is None:
            down(layout, out=None)
        raise
    finally:
        # The supervisor is meant to outlive this command: tell Popen not to warn about it.
        if proc.poll() is None:
            proc.returncode = 0


@dataclass(frozen=True, slots=True)
class DownReport:
    stopped: bool  # a supervisor was running and was stopped
    killed: tuple[int, ...]  # leftover processes that had to be killed
    leftover: tuple[int, ...]  # processes still alive (should be none)
    listeners: tuple[tuple[str, int], ...]  # ports still listening (should be none)

    @property
    def clean(self) -> bool:
        return not self.leftover and not self.listeners


def down(layout: DemoLayout, out: TextIO | None, timeout: float = 30.0) -> DownReport:
    """Stop the demo and verify: no process with its marker, no listener on its addresses."""
    state = read_state(layout.state_file)
    stopped = False
    if state is not None and is_supervisor(state.supervisor_pid):
        stopped = True
        try:
            ControlClient(layout.control_socket, timeout=5.0).call("POST", "/stop")
        except ControlError:
            os.kill(state.supervisor_pid, 15)
        deadline = time.monotonic() + timeout
        while is_supervisor(state.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if is_supervisor(state.supervisor_pid):
            stop_pids([state.supervisor_pid])
    marker = str(layout.run_dir.resolve())
    recorded: list[int] = []
    if state is not None:
        if state.pilot is not None and state.pilot.running:
            recorded.append(state.pilot.pid)
        for pod in state.pods:
            recorded += [p.pid for p in (pod.app, pod.proxy) if p is not None and p.running]
    stragglers = sorted(set(marked_processes(marker)) | {p for p in recorded if _ours(p, marker)})
    leftover = stop_pids(stragglers) if stragglers else []
    networks: list[str] = []
    if layout.netns is not None:
        from pymesh.demo.netns import remove_all

        networks = remove_all(layout.netns.prefix)
    # A supervisor killed outright leaves its agents' sockets and tokens behind.
    remove_sds_root(layout)
    addresses = {pod.ip for pod in state.pods} if state is not None else set()
    pod_listeners = listening(addresses - {layout.control_address})
    control_ports = {layout.pilot_xds_port, layout.pilot_api_port, ADMIN_PORT, 8080}
    control_listeners = listening([layout.control_address], control_ports)
    layout.pid_file.unlink(missing_ok=True)
    layout.control_socket.unlink(missing_ok=True)
    report = DownReport(
        stopped, tuple(stragglers), tuple(leftover), tuple(pod_listeners + control_listeners)
    )
    if out is not None:
        if not stopped and not stragglers:
            print(f"no demo running in {layout.run_dir}", file=out)
        if stragglers:
            print(f"killed {len(stragglers)} leftover process(es): {stragglers}", file=out)
        if networks:
            print(f"removed leftover namespaces and links: {', '.join(networks)}", file=out)
        if report.leftover:
            print(f"still alive: {list(report.leftover)}", file=out)
        if report.listeners:
            shown = ", ".join(f"{ip}:{port}" for ip, port in report.listeners)
            print(f"still listening (not this demo's processes?): {shown}", file=out)
        if report.clean and stopped:
            print("demo stopped: no process and no listening port left", file=out)
    return report


def _ours(pid: int, marker: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"PYMESH_DEMO_CHILD={marker}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def restart(
    layout: DemoLayout,
    target: str,
    what: str,
    out: TextIO,
    *,
    mesh_config: str | None = None,
    wait: float | None = 60.0,
) -> DemoState | None:
    if running_state(layout) is None:
        raise DemoError(f"no demo running in {layout.run_dir}")
    body: dict[str, object] = {"target": target, "what": what}
    if mesh_config is not None:
        body["mesh_config"] = mesh_config
    since = time.time()
    answer = ControlClient(layout.control_socket, timeout=60.0).call("POST", "/restart", body)
    print(f"restarted {answer.get('pod', target)}: {', '.join(answer['restarted'])}", file=out)
    if wait is None:
        return None
    return wait_ready(layout, wait, out, since=since)


def demo_env(layout: DemoLayout) -> str:
    """Shell exports pointing ``pymesh apply|get|proxy-status|...`` at this demo's pilot."""
    return "\n".join(
        [
            f"export PYMESH_PILOT={shlex.quote(layout.pilot_url)}",
            f"export PYMESH_CONFIG_DIR={shlex.quote(str(layout.config_dir))}",
            f"export PYMESH_DEMO_DIR={shlex.quote(str(layout.run_dir))}",
            f"export PYMESH_MIXER=http://{layout.control_address}:{MIXER_PORTS['dashboard']}",
            f"export PYMESH_PROMETHEUS=http://{layout.control_address}:{PROMETHEUS_PORT}",
        ]
    )


def status(layout: DemoLayout, out: TextIO) -> int:
    """Print the demo's state; 0 when it runs and is ready, 1 when none runs, 3 otherwise."""
    state = read_state(layout.state_file)
    if state is None:
        print(f"no demo in {layout.run_dir}", file=out)
        return 1
    alive = is_supervisor(state.supervisor_pid)
    if not alive and state.phase == "stopped":
        print(f"no demo running in {layout.run_dir} (last one stopped)", file=out)
        return 1
    print(status_text(state, alive), file=out)
    return 0 if alive and state.ready else 3
