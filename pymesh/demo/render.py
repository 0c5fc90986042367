"""What the demo prints: the pod table, the URLs to open, and the commands to try next."""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from pymesh.demo.ports import holder
from pymesh.demo.state import DemoState, PodState

__all__ = ["bind_failure", "hints", "pod_table", "status_text"]

_BIND = re.compile(r"cannot bind (\d+\.\d+\.\d+\.\d+):(\d+)")


def bind_failure(pod: PodState) -> str | None:
    """One line when the pod's proxy could not listen on a port another process holds."""
    m = _BIND.search(pod.sync_detail) if pod.sync == "NACK" else None
    if m is None:
        return None
    endpoint = (m.group(1), int(m.group(2)))
    return (
        f"{endpoint[0]}:{endpoint[1]} is in use by {holder(endpoint)}: {pod.key} cannot listen "
        "there (stop that process, or start the demo with other addresses)"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _sync(pod: PodState) -> str:
    if not pod.sidecar:
        return "no sidecar"
    if pod.proxy is None or not pod.proxy.running:
        return "PROXY DOWN"
    return pod.sync


def _app(pod: PodState) -> str:
    if pod.warning and pod.role == "client":
        return "no stand-in"
    if pod.role != "app" or pod.port is None:
        return "-"
    if pod.app is None:
        return "not started"
    if not pod.app.running:
        return pod.app.summary
    return "ready" if pod.app_ready else "starting"


def pod_table(state: DemoState, *, pids: bool = False) -> str:
    """``POD  NAMESPACE  ADDRESS  VERSION  APP  SYNC`` (+ pids for ``demo status``)."""
    header = ["POD", "NAMESPACE", "ADDRESS", "VERSION", "APP", "SYNC"]
    if pids:
        header += ["APP PID", "PROXY PID"]
    rows = []
    for pod in state.pods:
        address = f"{pod.ip}:{pod.port}" if pod.port is not None else pod.ip
        row = [pod.name, pod.namespace, address, pod.version or "-", _app(pod), _sync(pod)]
        if pids:
            row += [
                pod.app.summary if pod.app is not None else "-",
                pod.proxy.summary if pod.proxy is not None else "-",
            ]
        rows.append(row)
    text = _table(header, rows)
    notes = [f"  {p.name}.{p.namespace}: {p.warning}" for p in state.pods if p.warning]
    notes += [
        f"  {p.name}.{p.namespace}: {p.sync_detail}"
        for p in state.pods
        if p.sync_detail and p.sync != "SYNCED"
    ]
    return text + ("\nnotes:\n" + "\n".join(notes) if notes else "")


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def pymesh_command() -> str:
    """How to type ``pymesh`` here: the bare name when the shell finds this installation's,
    else its path (``.venv/bin/pymesh`` after ``make demo``)."""
    ours = Path(sys.executable).parent / "pymesh"
    found = shutil.which("pymesh")
    if found is not None and Path(found).resolve() == ours.resolve():
        return "pymesh"
    return _shown(ours)


def hints(state: DemoState, run_dir: str, default_run_dir: bool) -> str:
    """The commands to try next, each runnable as printed."""
    from pymesh.demo.manifests import rules_dir

    pymesh = pymesh_command()
    rules = _shown(rules_dir())
    lines = ["", "Open:"]
    lines += [f"  {url}" for url in state.urls]
    lines += ["", "Try:"]
    if not default_run_dir:
        lines.append(f"  export PYMESH_DEMO_DIR={run_dir}   # which demo pymesh talks to")
    lines += [
        f"  {pymesh} get pods",
        f"  {pymesh} apply -f {rules}/reviews-jason-v2.yaml   # sign in as jason: black stars",
        f"  {pymesh} exec sleep -- curl -s http://reviews:9080/reviews/0",
        f"  {pymesh} proxy-status",
        f"  {pymesh} describe pod reviews-v2",
        f"  {pymesh} proxy-config routes productpage-v1",
        f'  {pymesh} explain productpage-v1 http://reviews:9080/reviews/0 -H "end-user: jason"',
        "",
        f"Logs: {run_dir}/logs/ (one file per process)",
    ]
    return "\n".join(lines)


def status_text(state: DemoState, supervisor_alive: bool) -> str:
    phase = state.phase if supervisor_alive else f"{state.phase} (supervisor not running)"
    pilot = state.pilot.summary if state.pilot is not None else "-"
    head = [
        f"demo: {phase}   run dir: {state.run_dir}   supervisor pid: {state.supervisor_pid}",
        f"pilot: xDS {state.pilot_xds}  API {state.pilot_api}  pid {pilot}  "
        f"{'ready' if state.pilot_ready else 'not ready'}",
    ]
    if state.message:
        head.append(f"message: {state.message}")
    return "\n".join(head) + "\n\n" + pod_table(state, pids=True)
