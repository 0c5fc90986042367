"""``pymesh`` entry point.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Only the module of the chosen subcommand is imported, so
``pymesh proxy`` starts without loading the control plane (and vice versa).

As kubectl does: ``pymesh`` alone and ``pymesh help`` list the commands, ``pymesh help CMD``
is ``pymesh CMD --help``, ``pymesh --version`` is ``pymesh version``, and a usage error
prints the subcommand's own usage.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["COMMANDS", "main"]

# name -> (module, one-line help), in the order `pymesh help` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pymesh.cli.demo", "run Bookinfo with pilot and an ingress gateway on this machine"),
    "apply": ("pymesh.cli.apply", "apply configuration from files, a directory or stdin"),
    "get": ("pymesh.cli.get", "show pods, services, deployments and the configuration pilot runs"),
    "describe": ("pymesh.cli.describe", "what the mesh does for a pod (istioctl x describe)"),
    "delete": ("pymesh.cli.delete", "delete configuration stored by apply"),
    "create": ("pymesh.cli.create", "create a namespace (kubectl create namespace)"),
    "label": ("pymesh.cli.label", "label a namespace, e.g. istio-injection=enabled"),
    "exec": ("pymesh.cli.exec", "run a command inside a demo pod (through its sidecar)"),
    "proxy-status": ("pymesh.cli.proxy_status", "sync state of every proxy connected to pilot"),
    "proxy-config": ("pymesh.cli.proxy_config", "a proxy's listeners, routes, clusters, ..."),
    "analyze": ("pymesh.cli.analyze", "check configuration for problems (offline with -f)"),
    "explain": ("pymesh.cli.explain", "how a request from a proxy to a URL would be routed"),
    "version": ("pymesh.cli.version", "versions of this client, pilot and the proxies"),
    "proxy": ("proxy.cli", "run the sidecar proxy from an Envoy v3 bootstrap"),
    "pilot": ("pilot.cli", "run the control plane: a config directory in, xDS (ADS) out"),
    "ca": ("auth.cli", "run the certificate authority (Istio's CA API); tokens, root"),
    "agent": ("auth.agent", "a proxy's identity agent: certificates from the CA, SDS to Envoy"),
    "iptables": ("pymesh.cli.iptables", "install Istio's traffic capture rules (istio-iptables)"),
    "kube-inject": ("pymesh.cli.kube_inject", "add the sidecar to Kubernetes workloads (istioctl)"),
    "injector": ("pymesh.cli.injector", "the sidecar injector's admission webhook (TLS)"),
    "mixer": ("mixer.cli", "run mixer: access logs in (ALS), Istio metrics, Zipkin, the graph"),
    "logs": ("pymesh.cli.logs", "a workload's recent access log, as mixer keeps it"),
    "dashboard": ("pymesh.cli.dashboard", "open the graph, Prometheus, Grafana or Zipkin"),
}
_USAGE_EXIT = 2


class _Parser(argparse.ArgumentParser):
    """kubectl's way with a usage error: the command's usage, one ``error:`` line, a hint."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(_USAGE_EXIT, f"error: {message}\nSee '{self.prog} --help' for more.\n")


def _build_parser(
    selected: str | None,
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser | None]:
    """The top-level parser and the selected command's own (``None`` when none is)."""
    parser = _Parser(
        prog="pymesh",
        description="pymesh: a service mesh in Python, with Istio's configuration and "
        "kubectl's and istioctl's habits.",
        epilog="`pymesh help COMMAND` (or `pymesh COMMAND --help`) shows a command's options.",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    parser.add_argument("--log-format", default="console", choices=["console", "json"])
    parser.add_argument("--version", action="store_true", help="the same as `pymesh version`")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    command_parser = None
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module).add_arguments(p)
            command_parser = p
    return parser, command_parser


def _split_command(args: list[str], selected: str | None) -> tuple[list[str], list[str] | None]:
    """``pymesh exec POD [flags] -- CMD ARGS``: what follows ``--`` is the command, never
    pymesh's options (argparse would read ``-n`` in ``-- curl -n`` as its own)."""
    if selected != "exec" or "--" not in args[args.index("exec") :]:
        return args, None
    cut = args.index("--", args.index("exec"))
    return args[:cut], args[cut + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["help"]:
        if len(args_list) == 1:
            args_list = []
        elif args_list[1] in COMMANDS:
            args_list = [args_list[1], "--help"]
        else:
            print(f"error: unknown command {args_list[1]!r}; `pymesh help` lists them")
            return _USAGE_EXIT
    selected = next((a for a in args_list if a in COMMANDS), None)
    parser, command_parser = _build_parser(selected)
    if not args_list:
        parser.print_help()
        return 0
    args_list, command_tail = _split_command(args_list, selected)
    args, extra = parser.parse_known_args(args_list)
    if extra:
        # argparse reports a command's unknown options with the top-level usage; kubectl
        # shows the command's own.
        (command_parser or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if command_tail is not None:
        args.cmd = command_tail
    if args.command is None:
        if not args.version:
            parser.print_help()
            return 0
        args = argparse.Namespace(**{**_defaults("version"), **vars(args), "command": "version"})
    from pymesh import log

    log.configure(args.log_level, args.log_format)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        rc: int = module.run(args)
    except BrokenPipeError:
        # The reader went away (`| head`): not our error. Point stdout at /dev/null so the
        # interpreter's final flush does not fail again, and exit like a shell would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return rc


def _defaults(command: str) -> dict[str, object]:
    """A command's options at their defaults (``pymesh --version`` runs ``version`` so)."""
    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
    return vars(parser.parse_args([]))


if __name__ == "__main__":
    sys.exit(main())
