"""``pymesh kube-inject -f deployment.yaml`` (``istioctl kube-inject``): the manifests with
the init container, the sidecar, their volumes and annotations added, on stdout."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pymesh.inject.pod import InjectConfig

__all__ = ["add_arguments", "inject_arguments", "inject_config", "run"]


def inject_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", default="pymesh:latest", help="the sidecar's image")
    parser.add_argument(
        "--pilot-address",
        default="istiod.istio-system.svc:15010",
        help="where sidecars find pilot's xDS (PILOT_ADDRESS)",
    )
    parser.add_argument(
        "--ca-address",
        default="istiod.istio-system.svc:15012",
        help="where sidecars get their certificates (CA_ADDR)",
    )
    parser.add_argument(
        "--hold-application-until-proxy-starts",
        action="store_true",
        help="mesh default for holdApplicationUntilProxyStarts",
    )
    parser.add_argument(
        "--termination-drain-duration", default="5s", help="mesh default drain on SIGTERM"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--filename", required=True, help="Kubernetes YAML to inject ('-' for stdin)"
    )
    parser.add_argument("-o", "--output", help="write here instead of stdout")
    inject_arguments(parser)


def inject_config(args: argparse.Namespace) -> InjectConfig:
    from pymesh.config.durations import parse_duration
    from pymesh.inject.pod import InjectConfig

    return InjectConfig(
        image=args.image,
        pilot_address=args.pilot_address,
        ca_address=args.ca_address,
        hold_application_until_proxy_starts=args.hold_application_until_proxy_starts,
        termination_drain_duration=parse_duration(args.termination_drain_duration),
    )


def run(args: argparse.Namespace) -> int:
    import yaml

    from pymesh.errors import ConfigError
    from pymesh.inject.workloads import inject_documents

    try:
        cfg = inject_config(args)
        if args.filename == "-":
            text = sys.stdin.read()
        else:
            with open(args.filename, encoding="utf-8") as f:
                text = f.read()
        try:
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
        except yaml.YAMLError as exc:
            raise ConfigError(f"{args.filename}: not YAML: {exc}") from None
        result = inject_documents(documents, cfg)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(f"warning: {note}", file=sys.stderr)
    out = yaml.safe_dump_all(result.documents, sort_keys=False, explicit_start=True)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(out)
    else:
        sys.stdout.write(out)
    return 0
