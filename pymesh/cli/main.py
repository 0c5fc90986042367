"""``pymesh`` entry point.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Only the module of the chosen subcommand is imported, so
``pymesh proxy`` starts without loading the control plane (and vice versa).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence

__all__ = ["main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "proxy": ("proxy.cli", "run the sidecar proxy from an Envoy v3 bootstrap"),
    "pilot": ("pilot.cli", "run the control plane: a config directory in, xDS (ADS) out"),
    "ca": ("auth.cli", "run the certificate authority (Istio's CA API); tokens, root"),
    "agent": ("auth.agent", "a proxy's identity agent: certificates from the CA, SDS to Envoy"),
    "apply": ("pymesh.cli.apply", "apply configuration from files, a directory or stdin"),
    "delete": ("pymesh.cli.delete", "delete configuration stored by apply"),
    "create": ("pymesh.cli.create", "create a namespace (kubectl create namespace)"),
    "label": ("pymesh.cli.label", "label a namespace, e.g. istio-injection=enabled"),
    "get": ("pymesh.cli.get", "show the configuration pilot runs"),
    "proxy-status": ("pymesh.cli.proxy_status", "sync state of every proxy connected to pilot"),
    "proxy-config": ("pymesh.cli.proxy_config", "what pilot sent a proxy: listeners, routes, ..."),
    "analyze": ("pymesh.cli.analyze", "check configuration for problems (offline with -f)"),
    "explain": ("pymesh.cli.explain", "how a request from a proxy to a URL would be routed"),
    "demo": ("pymesh.cli.demo", "run Bookinfo with pilot and an ingress gateway on this machine"),
    "exec": ("pymesh.cli.exec", "run a command inside a demo pod (through its sidecar)"),
}


def _build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pymesh", description="pymesh service mesh")
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    parser.add_argument("--log-format", default="console", choices=["console", "json"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in args_list if a in COMMANDS), None)
    parser = _build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(args_list)
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


if __name__ == "__main__":
    sys.exit(main())
