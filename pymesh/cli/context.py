"""The CLI's idea of kubectl's current context: the demo running on this machine.

A demo keeps its state in its run directory (``--run-dir``, ``PYMESH_DEMO_DIR`` or
``~/.pymesh/demo``); when its supervisor is alive, its pilot URL and its pilot's token are
where ``pymesh get|apply|proxy-status|...`` go unless ``--pilot``/``PYMESH_PILOT`` (and
``--token``...) say otherwise, and its pods are what ``get pods`` and ``exec`` see.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from pymesh.demo.layout import default_run_dir
from pymesh.demo.process import is_supervisor
from pymesh.demo.state import DemoState, PodState, read_state
from pymesh.errors import ControlPlaneError

__all__ = ["NO_DEMO_HINT", "RunningDemo", "find_pod", "require_demo", "running_demo"]

NO_DEMO_HINT = (
    "start one with `pymesh demo up` (or `make demo`); for a demo in another run directory, "
    'pass --run-dir or eval "$(pymesh demo env --run-dir DIR)"'
)


@dataclass(frozen=True, slots=True)
class RunningDemo:
    run_dir: Path
    state: DemoState

    @property
    def pilot_url(self) -> str:
        return self.state.pilot_api

    @property
    def token_file(self) -> Path:
        return self.run_dir / "config" / ".pymesh-token"


def _run_dir(args: argparse.Namespace | None) -> Path:
    given = getattr(args, "run_dir", None) if args is not None else None
    return Path(given).expanduser() if given else default_run_dir()


def running_demo(args: argparse.Namespace | None = None) -> RunningDemo | None:
    """The demo whose supervisor is alive in the chosen run directory, if any."""
    run_dir = _run_dir(args)
    state = read_state(run_dir / "state.json")
    if state is None or state.phase == "stopped" or not is_supervisor(state.supervisor_pid):
        return None
    return RunningDemo(run_dir, state)


def require_demo(args: argparse.Namespace | None = None) -> RunningDemo:
    demo = running_demo(args)
    if demo is None:
        raise ControlPlaneError(f"no demo is running in {_run_dir(args)}: {NO_DEMO_HINT}")
    return demo


def find_pod(state: DemoState, name: str, namespace: str | None) -> PodState:
    """A pod by name (``NAME``, ``NAME.NS``, ``pod/NAME`` or ``deploy/NAME`` for the first
    pod of a Deployment), in ``namespace`` when given; kubectl's NotFound otherwise."""
    kind, sep, rest = name.partition("/")
    if sep and kind in ("deploy", "deployment", "deployments"):
        owner = f"Deployment/{rest}"
        pods = [p for p in state.pods if p.owner == owner or p.name == rest]
        pods = [p for p in pods if namespace is None or p.namespace == namespace]
        if pods:
            return sorted(pods, key=lambda p: p.name)[0]
        where = namespace or "default"
        raise ControlPlaneError(f'deployments.apps "{rest}" not found in namespace {where}')
    if sep and kind in ("pod", "pods", "po"):
        name = rest
    if namespace is None and "." in name:
        name, namespace = name.split(".", 1)
    namespace = namespace or "default"
    for pod in state.pods:
        if pod.name == name and pod.namespace == namespace:
            return pod
    others = [p.key for p in state.pods if p.name == name]
    hint = f" (there is {', '.join(others)}; use -n)" if others else ""
    raise ControlPlaneError(f'pods "{name}" not found in namespace {namespace}{hint}')
