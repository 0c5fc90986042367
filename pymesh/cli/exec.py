"""``pymesh exec POD [-n NS] [-c CONTAINER] [-it] -- CMD...``: run a command as if inside a
pod of the running demo, as ``kubectl exec`` does.

The app's container (the default; ``-c`` with its name from the Deployment) gets the pod's
environment: ``HTTP_PROXY`` and ``http_proxy`` pointing at the pod's sidecar
(``http://<pod ip>:15001``; curl reads only the lower-case one), ``POD_NAME``,
``POD_NAMESPACE``, ``INSTANCE_IP``, ``SERVICE_ACCOUNT``. So

    pymesh exec sleep -- curl -s http://reviews:9080/reviews/0
    pymesh exec fortio-deploy -c fortio -- /usr/bin/fortio load -c 2 -qps 0 -n 20 URL

leave through the pod's sidecar. ``-c istio-proxy`` is the sidecar's container: no
``HTTP_PROXY``, and ``pilot-agent request GET stats`` reads the sidecar's admin.

Programs that a container image would hold and this machine may not are stood in for:
``fortio`` (:mod:`pymesh.samples.fortio`), ``pilot-agent``, ``curl`` when it is not installed
(:mod:`pymesh.samples.sleep`), and ``python``/``python3`` mean the Python pymesh runs on. The
command replaces this process: its exit status is the exit status. ``-i``/``-t`` are accepted
(stdin and the terminal are passed through as they are).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import PurePath

from pymesh.cli.context import find_pod, require_demo
from pymesh.cli.pilot_client import add_run_dir_argument
from pymesh.demo.pods import pod_env
from pymesh.demo.state import PodState
from pymesh.errors import PymeshError

__all__ = ["PROXY_CONTAINER", "add_arguments", "pod_environment", "run", "stand_in_command"]

PROXY_CONTAINER = "istio-proxy"
_PYTHONS = frozenset({"python", "python3"})
# program name -> module that stands in for it
_STAND_INS = {
    "fortio": "pymesh.samples.fortio",
    "pilot-agent": "pymesh.samples.pilot_agent",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "pymesh exec POD [-n NAMESPACE] [-c CONTAINER] [-it] -- COMMAND [ARGS...]"
    parser.add_argument("pod", help="pod name (sleep, productpage-v1, deploy/NAME, ...)")
    parser.add_argument("-n", "--namespace", help="the pod's namespace (default)")
    parser.add_argument("-c", "--container", help="container name (default: the app's)")
    parser.add_argument("-i", "--stdin", action="store_true", help="pass stdin (always done)")
    parser.add_argument("-t", "--tty", action="store_true", help="keep the terminal (always)")
    add_run_dir_argument(parser)


def stand_in_command(cmd: list[str]) -> list[str]:
    """``cmd`` with a stand-in for a program of a container image this machine lacks."""
    name = PurePath(cmd[0]).name
    if cmd[0] in _PYTHONS:
        return [sys.executable, *cmd[1:]]
    module = _STAND_INS.get(name)
    if module is None and name == "curl" and shutil.which("curl") is None:
        module = "pymesh.samples.sleep"
    if module is not None and shutil.which(cmd[0]) is None:
        return [sys.executable, "-m", module, *cmd[1:]]
    return cmd


def pod_environment(pod: PodState, container: str, service_proxy: str) -> dict[str, str]:
    """The environment a command run in ``container`` of ``pod`` gets (``service_proxy``:
    where a pod without a sidecar reaches Services)."""
    # netns mode: no HTTP_PROXY, iptables takes the pod's traffic to its sidecar.
    env = pod_env(
        pod.name, pod.namespace, pod.service_account, pod.ip, os.environ,
        captured=bool(pod.netns) and pod.sidecar,
        service_proxy=None if pod.sidecar else service_proxy,
    )  # fmt: skip
    if container == PROXY_CONTAINER:
        # The sidecar's own traffic is not captured: it talks to its peers directly.
        for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
            env.pop(name, None)
    return env


def _run(args: argparse.Namespace) -> int:
    cmd = list(getattr(args, "cmd", None) or [])
    if not cmd:
        print(
            "error: you must give the command after --: "
            "pymesh exec POD [-c CONTAINER] -- COMMAND [ARGS...]",
            file=sys.stderr,
        )
        return 2
    demo = require_demo(args)
    pod = find_pod(demo.state, args.pod, args.namespace)
    containers = [PROXY_CONTAINER] if pod.sidecar else []
    if pod.role != "gateway":
        containers.insert(0, pod.container or pod.name)
    container = args.container or containers[0]
    if container not in containers:
        print(
            f"error: container {container} is not valid for pod {pod.name}; "
            f"its containers: {', '.join(containers)}",
            file=sys.stderr,
        )
        return 1
    if pod.sidecar and (pod.proxy is None or not pod.proxy.running):
        print(f"warning: the sidecar of {pod.key} is not running", file=sys.stderr)
    captured = bool(pod.netns)
    env = pod_environment(pod, container, demo.state.service_proxy)
    cmd = stand_in_command(cmd)
    program = shutil.which(cmd[0], path=env.get("PATH"))
    if program is None:
        print(f"error: {cmd[0]}: executable file not found in $PATH", file=sys.stderr)
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    if captured:
        # netns mode: inside the pod's namespace, where iptables takes the traffic.
        ip = shutil.which("ip") or "ip"
        os.execve(ip, ["ip", "netns", "exec", pod.netns, program, *cmd[1:]], env)
    os.execve(program, cmd, env)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except PymeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
