"""``pymesh demo``: Bookinfo, httpbin and sleep in process mode, with pilot and an ingress
gateway, on this machine.

* ``pymesh demo`` (``make demo``) runs in the foreground; Ctrl-C stops everything.
* ``pymesh demo up`` starts it in the background and returns once every proxy is SYNCED;
  ``pymesh demo down`` stops it and checks that no process and no listening port is left.
* ``pymesh demo status``, ``pymesh demo restart POD [--app-only|--proxy-only]``,
  ``pymesh demo restart pilot [--mesh-config FILE]``, ``pymesh demo env``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pymesh.demo.layout import DemoLayout
    from pymesh.demo.supervisor import DemoOptions

__all__ = ["add_arguments", "run"]

_DEFAULT_PODS = "127.0.0.10-127.0.0.99"
_DEFAULT_NETNS_SUBNET = "10.244.99.0/24"


def _run_dir_argument(parser: argparse.ArgumentParser, suppress: bool) -> None:
    parser.add_argument(
        "--run-dir",
        default=argparse.SUPPRESS if suppress else None,
        help="where the demo keeps config, logs and state (PYMESH_DEMO_DIR, ~/.pymesh/demo)",
    )


def _start_arguments(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Options of ``pymesh demo`` and ``pymesh demo up``. Sub-commands repeat them with
    SUPPRESS defaults, so ``pymesh demo --run-dir X up`` and ``... up --run-dir X`` agree."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    _run_dir_argument(parser, suppress)
    parser.add_argument(
        "--control-address",
        default=default("127.0.0.1"),
        help="address of pilot (15010 xDS, 15080 API) and of the ingress gateway (127.0.0.1)",
    )
    parser.add_argument(
        "--pod-addresses",
        default=default(_DEFAULT_PODS),
        help=f"loopback addresses handed to pods, FIRST[-LAST] ({_DEFAULT_PODS})",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        default=default(False),
        help="start from the manifests, dropping what was applied in earlier runs "
        "(by default a demo keeps its objects, as a cluster does)",
    )
    parser.add_argument(
        "--mesh-config", default=default(None), help="Istio MeshConfig YAML for pilot"
    )
    parser.add_argument(
        "--outbound-traffic-policy",
        choices=("ALLOW_ANY", "REGISTRY_ONLY"),
        default=default("ALLOW_ANY"),
        help="meshConfig.outboundTrafficPolicy.mode (ignored with --mesh-config)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=default(120.0),
        help="seconds to wait for every proxy to be SYNCED",
    )
    parser.add_argument(
        "--mtls",
        action=argparse.BooleanOptionalAction,
        default=default(True),
        help="Istio's mesh mTLS, on by default as in Istio: pilot runs the CA, each sidecar "
        "gets the identity of its pod's service account from an agent (pymesh agent), "
        "traffic between sidecars is mTLS (netns mode too: each pod's agent runs in its "
        "namespace as the sidecar's uid); --no-mtls runs every sidecar in plaintext",
    )
    parser.add_argument(
        "--netns",
        action="store_true",
        default=default(False),
        help="each pod in its own network namespace, traffic captured by iptables (root)",
    )
    parser.add_argument(
        "--netns-subnet",
        default=default(_DEFAULT_NETNS_SUBNET),
        help=f"with --netns: the pods' bridge subnet ({_DEFAULT_NETNS_SUBNET})",
    )
    parser.add_argument(
        "--netns-prefix",
        default=default("pymesh-"),
        help="with --netns: name prefix of its namespaces, veths and bridge (pymesh-)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _start_arguments(parser, suppress=False)
    sub = parser.add_subparsers(dest="demo_command", metavar="{run,up,down,status,restart,env}")
    run_p = sub.add_parser("run", help="run in the foreground (the default)")
    _start_arguments(run_p, suppress=True)
    run_p.add_argument("--background", action="store_true", help=argparse.SUPPRESS)
    up_p = sub.add_parser("up", help="start in the background, return when every proxy is SYNCED")
    _start_arguments(up_p, suppress=True)
    down_p = sub.add_parser("down", help="stop the demo; check no process or port is left")
    _run_dir_argument(down_p, suppress=True)
    status_p = sub.add_parser("status", help="pods, addresses, pids and sync state")
    _run_dir_argument(status_p, suppress=True)
    restart_p = sub.add_parser("restart", help="restart a pod (or only its app or proxy), or pilot")
    _run_dir_argument(restart_p, suppress=True)
    restart_p.add_argument("target", help="a pod name (reviews-v1, sleep, ...) or 'pilot'")
    which = restart_p.add_mutually_exclusive_group()
    which.add_argument("--app-only", action="store_true", help="restart the app, not the proxy")
    which.add_argument("--proxy-only", action="store_true", help="restart the proxy only")
    restart_p.add_argument(
        "--mesh-config", help="with 'pilot': the MeshConfig YAML it restarts with"
    )
    restart_p.add_argument("--no-wait", action="store_true", help="do not wait for SYNCED")
    restart_p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    env_p = sub.add_parser("env", help='shell exports for pymesh apply/get/...: eval "$(...)"')
    _run_dir_argument(env_p, suppress=True)


def _run_dir(args: argparse.Namespace) -> Path:
    from pymesh.demo.layout import default_run_dir

    given = getattr(args, "run_dir", None)
    return Path(given).expanduser() if given else default_run_dir()


def _layout(args: argparse.Namespace) -> DemoLayout:
    from pymesh.demo.layout import AddressRange, DemoLayout
    from pymesh.demo.netns import NetnsPlan

    mtls = bool(getattr(args, "mtls", True))
    if args.netns:
        plan = NetnsPlan.parse(args.netns_prefix, args.netns_subnet)
        return DemoLayout(
            _run_dir(args),
            control_address=args.control_address,
            pod_addresses=AddressRange(*plan.pod_addresses()),
            netns=plan,
            mtls=mtls,
        )
    return DemoLayout(
        _run_dir(args),
        control_address=args.control_address,
        pod_addresses=AddressRange.parse(args.pod_addresses),
        mtls=mtls,
    )


def _options(args: argparse.Namespace, foreground: bool) -> DemoOptions:
    from pymesh.demo.supervisor import DemoOptions

    layout = _layout(args)
    return DemoOptions(
        layout=layout,
        keep_config=not args.fresh,
        mesh_config=Path(args.mesh_config) if args.mesh_config else None,
        outbound_traffic_policy=args.outbound_traffic_policy,
        log_level=args.log_level,
        ready_timeout=args.timeout,
        foreground=foreground,
        default_run_dir=getattr(args, "run_dir", None) is None,
    )


def _foreground(args: argparse.Namespace) -> int:
    import asyncio

    from pymesh.demo.supervisor import Supervisor

    options = _options(args, foreground=not getattr(args, "background", False))
    supervisor = Supervisor(options, sys.stdout, time.monotonic)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(supervisor.run())
    rc: int = uvloop.run(supervisor.run())
    return rc


def _up_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--log-level", args.log_level, "demo", "run", "--background"]
    argv += ["--run-dir", str(_run_dir(args))]
    argv += ["--control-address", args.control_address, "--pod-addresses", args.pod_addresses]
    argv += ["--outbound-traffic-policy", args.outbound_traffic_policy]
    argv += ["--timeout", str(args.timeout)]
    if args.netns:
        argv += ["--netns", "--netns-subnet", args.netns_subnet]
        argv += ["--netns-prefix", args.netns_prefix]
    if args.fresh:
        argv.append("--fresh")
    if not getattr(args, "mtls", True):
        argv.append("--no-mtls")
    if args.mesh_config:
        argv += ["--mesh-config", str(Path(args.mesh_config).resolve())]
    return argv


def _dispatch(args: argparse.Namespace) -> int:
    from pymesh.demo import commands
    from pymesh.demo.layout import DemoLayout
    from pymesh.demo.render import hints, pod_table

    command = args.demo_command or "run"
    if command == "run":
        return _foreground(args)
    if command == "up":
        layout = _layout(args)
        state = commands.up(layout, _up_argv(args), args.timeout, sys.stdout)
        print(f"\nBookinfo is up: {len(state.pods)} pods, every proxy SYNCED\n")
        print(pod_table(state))
        print(hints(state, str(layout.run_dir), getattr(args, "run_dir", None) is None))
        from pymesh.demo.render import pymesh_command

        down = f"{pymesh_command()} demo down"
        if getattr(args, "run_dir", None) is not None:
            down += f" --run-dir {layout.run_dir}"
        print(f"\n`{down}` stops it.")
        return 0
    layout = DemoLayout.of_running(_run_dir(args))
    if command == "down":
        report = commands.down(layout, sys.stdout)
        return 0 if report.clean else 1
    if command == "status":
        return commands.status(layout, sys.stdout)
    if command == "env":
        print(commands.demo_env(layout))
        return 0
    if command == "restart":
        what = "app" if args.app_only else "proxy" if args.proxy_only else "all"
        mesh = Path(args.mesh_config).read_text(encoding="utf-8") if args.mesh_config else None
        if mesh is not None and args.target != "pilot":
            print("error: --mesh-config goes with 'restart pilot'", file=sys.stderr)
            return 2
        restarted = commands.restart(
            layout,
            args.target,
            what,
            sys.stdout,
            mesh_config=mesh,
            wait=None if args.no_wait else args.timeout,
        )
        if restarted is not None:
            print("every proxy SYNCED")
        return 0
    print(f"error: unknown demo command {command!r}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from pymesh.errors import PymeshError

    try:
        return _dispatch(args)
    except PymeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
