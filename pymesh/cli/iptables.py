"""``pymesh iptables``: Istio's ``istio-iptables`` (the init container's command).

``pymesh iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d
15090,15021,15020`` installs the capture rules in the current network namespace;
``--dry-run`` prints them instead; ``pymesh iptables clean`` removes them.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pymesh.capture.rules import CaptureConfig

from pymesh.errors import ConfigError

__all__ = ["add_arguments", "config_from_args", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("action", nargs="?", choices=("clean",), help="'clean' removes the rules")
    add("-p", "--envoy-port", type=int, default=15001, help="outbound capture port (15001)")
    add("-z", "--inbound-capture-port", type=int, default=15006, help="inbound port (15006)")
    add("-u", "--proxy-uid", type=int, default=1337, help="the proxy's uid, not captured")
    add("-g", "--proxy-gid", type=int, default=None, help="the proxy's gid (= uid)")
    add("-m", "--istio-inbound-interception-mode", default="REDIRECT", help="REDIRECT")
    add("-i", "--istio-service-cidr", default="*", help="outbound CIDRs to capture ('*')")
    add("-x", "--istio-service-exclude-cidr", default="", help="outbound CIDRs never captured")
    add("-b", "--istio-inbound-ports", default="*", help="inbound ports to capture ('*')")
    add(
        "-d",
        "--istio-local-exclude-ports",
        default="15090,15021,15020",
        help="inbound ports never captured (with -b '*')",
    )
    add("-o", "--istio-local-outbound-ports-exclude", default="", help="outbound ports excluded")
    add("-q", "--istio-local-outbound-ports-include", default="", help="outbound ports included")
    add("-c", "--exclude-interfaces", default="", help="interfaces whose traffic is not captured")
    add("-n", "--dry-run", action="store_true", help="print the rules, change nothing")


def config_from_args(args: argparse.Namespace) -> CaptureConfig:
    from pymesh.capture.rules import CaptureConfig, parse_cidrs, parse_ports

    include = args.istio_service_cidr.strip()
    inbound = args.istio_inbound_ports.strip()
    return CaptureConfig(
        proxy_port=args.envoy_port,
        inbound_port=args.inbound_capture_port,
        proxy_uid=args.proxy_uid,
        proxy_gid=args.proxy_uid if args.proxy_gid is None else args.proxy_gid,
        mode=args.istio_inbound_interception_mode,
        include_outbound=None if include == "*" else parse_cidrs(include, "-i"),
        exclude_outbound=parse_cidrs(args.istio_service_exclude_cidr, "-x"),
        include_inbound_ports=None if inbound == "*" else parse_ports(inbound, "-b"),
        exclude_inbound_ports=parse_ports(args.istio_local_exclude_ports, "-d"),
        exclude_outbound_ports=parse_ports(args.istio_local_outbound_ports_exclude, "-o"),
        include_outbound_ports=parse_ports(args.istio_local_outbound_ports_include, "-q"),
        exclude_interfaces=tuple(i for i in args.exclude_interfaces.split(",") if i.strip()),
    )


def run(args: argparse.Namespace) -> int:
    from pymesh.capture.install import install, remove
    from pymesh.capture.rules import cleanup_commands, restore_input

    try:
        cfg = config_from_args(args)
        if args.action == "clean":
            if args.dry_run:
                for argv in cleanup_commands(cfg):
                    print("iptables " + " ".join(argv))
                return 0
            remove(cfg)
            print("capture rules removed")
            return 0
        if args.dry_run:
            sys.stdout.write(restore_input(cfg))
            return 0
        install(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(restore_input(cfg))
    return 0
