"""How the command line reaches pilot's admin API: where it is, the token, one HTTP call.

Plain ``urllib`` (no event loop, no aiohttp import) keeps ``pymesh get`` quick to start.
Pilot is ``--pilot`` / ``PYMESH_PILOT``, else the running demo's (:mod:`pymesh.cli.context`),
else ``http://127.0.0.1:15080``. The token is ``--token`` / ``PYMESH_TOKEN``, else read from
``--token-file`` / ``PYMESH_TOKEN_FILE``, else from ``.pymesh-token`` in ``--config-dir`` /
``PYMESH_CONFIG_DIR`` (where pilot writes it), else the running demo's pilot's.
Every failure becomes a :class:`~pymesh.errors.ControlPlaneError` with one line of text.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymesh.cli.context import RunningDemo, running_demo
from pymesh.errors import ControlPlaneError, PymeshError

__all__ = [
    "DEFAULT_PILOT",
    "PilotClient",
    "add_pilot_arguments",
    "add_run_dir_argument",
    "client_from_args",
    "guarded",
    "read_inputs",
]

DEFAULT_PILOT = "http://127.0.0.1:15080"
TOKEN_FILE = ".pymesh-token"


def add_pilot_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pilot connection")
    group.add_argument("--pilot", help=f"pilot admin API URL (PYMESH_PILOT, {DEFAULT_PILOT})")
    group.add_argument("--token", help="admin API bearer token (PYMESH_TOKEN)")
    group.add_argument("--token-file", help="file holding the token (PYMESH_TOKEN_FILE)")
    group.add_argument(
        "--config-dir", help="pilot's config directory, to read its token (PYMESH_CONFIG_DIR)"
    )
    group.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for pilot")
    add_run_dir_argument(group)


def add_run_dir_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--run-dir", help="the running demo to use (PYMESH_DEMO_DIR, else ~/.pymesh/demo)"
    )


def _token(args: argparse.Namespace, demo: RunningDemo | None) -> str:
    token = getattr(args, "token", None) or os.environ.get("PYMESH_TOKEN")
    if token:
        return str(token).strip()
    token_file = getattr(args, "token_file", None) or os.environ.get("PYMESH_TOKEN_FILE")
    config_dir = getattr(args, "config_dir", None) or os.environ.get("PYMESH_CONFIG_DIR")
    path = Path(token_file) if token_file else Path(config_dir) / TOKEN_FILE if config_dir else None
    if path is None and demo is not None:
        path = demo.token_file
    if path is None:
        raise ControlPlaneError(
            "no token for pilot: no demo is running here (`pymesh demo up`), so pass --token, "
            "set PYMESH_TOKEN, or point --config-dir (PYMESH_CONFIG_DIR) at pilot's config "
            'directory; for a demo elsewhere: eval "$(pymesh demo env --run-dir DIR)"'
        )
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ControlPlaneError(f"cannot read the token from {path}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class PilotClient:
    base: str
    token: str
    timeout: float = 30.0

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, str]] | Mapping[str, str] = (),
        body: bytes | None = None,
        ok: Iterable[int] = (200,),
    ) -> tuple[int, Any]:
        """One request; returns ``(status, json)`` for the statuses in ``ok``, raises
        ControlPlaneError with pilot's message otherwise."""
        items = list(query.items()) if isinstance(query, Mapping) else list(query)
        url = self.base.rstrip("/") + path + (f"?{urllib.parse.urlencode(items)}" if items else "")
        request = urllib.request.Request(url, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            request.add_header("Content-Type", "application/yaml")
        # Pilot is reached directly: an HTTP_PROXY meant for the apps must not apply here.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=self.timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except urllib.error.URLError as exc:
            raise ControlPlaneError(f"cannot reach pilot at {self.base}: {exc.reason}") from None
        except (TimeoutError, OSError) as exc:
            raise ControlPlaneError(f"cannot reach pilot at {self.base}: {exc}") from None
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"error": raw.decode("utf-8", "replace").strip()[:300]}
        if status not in set(ok):
            message = data.get("error") if isinstance(data, dict) else None
            raise ControlPlaneError(str(message or f"pilot answered HTTP {status}"))
        return status, data


def _url(text: str) -> str:
    return text if "://" in text else f"http://{text}"


def client_from_args(args: argparse.Namespace) -> PilotClient:
    given = getattr(args, "pilot", None) or os.environ.get("PYMESH_PILOT")
    demo = running_demo(args)
    if demo is not None and given and _url(given).rstrip("/") != _url(demo.pilot_url):
        demo = None  # another pilot was asked for: the demo's token is not its token
    base = _url(given or (demo.pilot_url if demo is not None else DEFAULT_PILOT))
    return PilotClient(base, _token(args, demo), getattr(args, "timeout", 30.0))


def read_inputs(paths: Iterable[str]) -> list[tuple[str, str]]:
    """``(source, text)`` for each ``-f`` argument: a file, every YAML/JSON file under a
    directory (sorted), or ``-`` for stdin."""
    out: list[tuple[str, str]] = []
    for item in paths:
        if item == "-":
            out.append(("<stdin>", sys.stdin.read()))
            continue
        path = Path(item)
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in (".yaml", ".yml", ".json")
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not files:
                raise ControlPlaneError(f"{path}: no .yaml, .yml or .json files")
        elif path.is_file():
            files = [path]
        else:
            raise ControlPlaneError(f"{path}: no such file or directory")
        for file in files:
            try:
                out.append((str(file), file.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise ControlPlaneError(f"{file}: cannot read: {exc}") from None
    return out


def guarded(body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; a pymesh error is one line on stderr and exit status 1."""
    try:
        return body(args)
    except PymeshError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
