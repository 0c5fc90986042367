"""``pymesh exec POD -- CMD...``: run a command as if inside a pod of the running demo.

The command gets the pod's environment: ``HTTP_PROXY`` and ``http_proxy`` pointing at the
pod's sidecar (``http://<pod ip>:15001``; curl reads only the lower-case one), ``POD_NAME``,
``POD_NAMESPACE``, ``INSTANCE_IP``, ``SERVICE_ACCOUNT``. So

    pymesh exec sleep -- curl -s http://reviews:9080/reviews/0
    pymesh exec sleep -- python -m pymesh.samples.sleep -s http://reviews:9080/reviews/0

leave through the sleep pod's sidecar, as ``kubectl exec`` into Istio's sleep pod would.
``python``/``python3`` as the command mean the Python pymesh runs on, where the samples are
importable. The command replaces this process: its exit status is the exit status.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

__all__ = ["add_arguments", "run"]

_PYTHONS = frozenset({"python", "python3"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir", help="the demo's run directory (PYMESH_DEMO_DIR, ~/.pymesh/demo)"
    )
    parser.add_argument("pod", help="pod name (sleep, productpage-v1, ...) or name.namespace")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command and its args")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pymesh.demo.layout import default_run_dir
    from pymesh.demo.pods import pod_env
    from pymesh.demo.process import is_supervisor
    from pymesh.demo.state import read_state

    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("error: nothing to run: pymesh exec POD -- CMD [ARGS...]", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir).expanduser() if args.run_dir else default_run_dir()
    state = read_state(run_dir / "state.json")
    if state is None or not is_supervisor(state.supervisor_pid):
        print(
            f"error: no demo running in {run_dir} (start one with `pymesh demo up`)",
            file=sys.stderr,
        )
        return 1
    pod = state.pod(args.pod)
    if pod is None:
        names = ", ".join(p.name for p in state.pods)
        print(f"error: no pod {args.pod!r} in the demo; pods: {names}", file=sys.stderr)
        return 1
    if pod.proxy is None or not pod.proxy.running:
        print(f"warning: the sidecar of {pod.key} is not running", file=sys.stderr)
    captured = bool(pod.netns)
    env = pod_env(
        pod.name, pod.namespace, pod.service_account, pod.ip, os.environ, captured=captured
    )
    if cmd[0] in _PYTHONS:
        cmd[0] = sys.executable
    program = shutil.which(cmd[0], path=env.get("PATH"))
    if program is None:
        hint = ""
        if cmd[0] == "curl":
            hint = " (python -m pymesh.samples.sleep takes the same options)"
        print(f"error: {cmd[0]}: command not found{hint}", file=sys.stderr)
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    if captured:
        # netns mode: inside the pod's namespace, where iptables takes the traffic.
        ip = shutil.which("ip") or "ip"
        os.execve(ip, ["ip", "netns", "exec", pod.netns, program, *cmd[1:]], env)
    os.execve(program, cmd, env)
