"""Where the command line finds the telemetry side: mixer's dashboard site (graph, logs and
trace API) and the Prometheus that scrapes the mesh.

Mixer is ``--mixer`` / ``PYMESH_MIXER`` (default ``http://127.0.0.1:20001``), Prometheus
``--prometheus`` / ``PYMESH_PROMETHEUS`` (default ``http://127.0.0.1:9090``); ``pymesh demo
env`` prints both for a running demo. Plain ``urllib``, one line of error text.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from pymesh.errors import ControlPlaneError

__all__ = ["DEFAULT_MIXER", "DEFAULT_PROMETHEUS", "add_mixer_arguments", "get_json"]

DEFAULT_MIXER = "http://127.0.0.1:20001"
DEFAULT_PROMETHEUS = "http://127.0.0.1:9090"


def add_mixer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mixer",
        default=os.environ.get("PYMESH_MIXER") or DEFAULT_MIXER,
        help=f"mixer's dashboard URL (PYMESH_MIXER, {DEFAULT_MIXER})",
    )


def get_json(base: str, path: str, params: dict[str, str] | None = None) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = base.rstrip("/") + path + query
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace").strip()
        raise ControlPlaneError(f"mixer: {text or exc.reason} (HTTP {exc.code})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ControlPlaneError(f"mixer at {base} is not reachable: {reason}") from None
    except ValueError:
        raise ControlPlaneError(f"mixer at {base} did not answer JSON") from None
