"""``pymesh dashboard graph|prometheus|grafana|zipkin``: where to look, like ``istioctl
dashboard``. Prints the URL and opens it when a graphical browser is available.

* ``graph`` — mixer's service graph page (live calls, per-edge metrics, traces);
* ``zipkin`` — the same page's trace view; Zipkin's API is on mixer's port 9411;
* ``prometheus`` — the Prometheus ``pymesh demo`` starts when the binary is installed;
* ``grafana`` — Grafana is not shipped: how to run it with pymesh's dashboards.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import webbrowser
from pathlib import Path

from pymesh.cli.mixer_client import DEFAULT_PROMETHEUS, add_mixer_arguments

__all__ = ["DASHBOARDS_DIR", "add_arguments", "run"]

#: the Grafana dashboards shipped with mixer
DASHBOARDS_DIR = Path(str(importlib.util.find_spec("mixer").origin)).parent / "dashboards"  # type: ignore[union-attr]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=("graph", "prometheus", "grafana", "zipkin"))
    parser.add_argument(
        "--prometheus",
        default=os.environ.get("PYMESH_PROMETHEUS") or DEFAULT_PROMETHEUS,
        help=f"Prometheus URL (PYMESH_PROMETHEUS, {DEFAULT_PROMETHEUS})",
    )
    parser.add_argument(
        "--browser",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="open the URL (default: when a graphical browser is available)",
    )
    add_mixer_arguments(parser)


def _grafana(prometheus: str) -> str:
    files = sorted(DASHBOARDS_DIR.glob("*.json"))
    listed = "\n".join(f"  {p}" for p in files)
    return (
        "Grafana is not part of pymesh. Run it, add a Prometheus data source at "
        f"{prometheus},\nthen import these dashboards (Dashboards > New > Import):\n{listed}\n"
        "For example, with Docker:\n"
        "  docker run --network host -e GF_AUTH_ANONYMOUS_ENABLED=true grafana/grafana\n"
        "and open http://127.0.0.1:3000"
    )


def _graphical() -> bool:
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        return not isinstance(webbrowser.get(), webbrowser.GenericBrowser)
    except webbrowser.Error:
        return False


def run(args: argparse.Namespace) -> int:
    if args.name == "grafana":
        print(_grafana(args.prometheus))
        return 0
    url = {
        "graph": args.mixer.rstrip("/") + "/",
        "zipkin": args.mixer.rstrip("/") + "/#traces",
        "prometheus": args.prometheus.rstrip("/") + "/graph",
    }[args.name]
    print(url)
    if args.browser or (args.browser is None and _graphical()):
        webbrowser.open(url)
    return 0
