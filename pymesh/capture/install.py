"""Installing and removing the capture rules with the system's ``iptables`` tools.

The rules go in with one ``iptables-restore --noflush`` (atomic: all or none, and the rest of
the table, such as Docker's embedded-DNS rules, is kept). An earlier run's rules are removed
first, so an init container that runs again after a pod restart converges instead of failing
on "chain already exists".
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence

from pymesh.capture.rules import CaptureConfig, cleanup_commands, restore_input
from pymesh.errors import ConfigError

__all__ = ["Runner", "install", "remove", "subprocess_runner"]

#: ``runner(argv, stdin) -> (exit code, stderr)``
Runner = Callable[[Sequence[str], str | None], tuple[int, str]]


def subprocess_runner(argv: Sequence[str], stdin: str | None) -> tuple[int, str]:
    try:
        done = subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        raise ConfigError(f"{argv[0]} not found: install iptables") from None
    return done.returncode, done.stderr.strip()


def _tool(name: str) -> str:
    return shutil.which(name) or name


def remove(cfg: CaptureConfig, runner: Runner = subprocess_runner) -> None:
    iptables = _tool("iptables")
    for args in cleanup_commands(cfg):
        runner([iptables, *args], None)


def install(cfg: CaptureConfig, runner: Runner = subprocess_runner) -> None:
    """Replace any earlier capture rules with the ones for ``cfg``; ConfigError (with
    iptables' own message) when the kernel or the tool refuses them."""
    remove(cfg, runner)
    code, err = runner([_tool("iptables-restore"), "--noflush"], restore_input(cfg))
    if code != 0:
        hint = " (needs CAP_NET_ADMIN in the pod's network namespace)" if code in (1, 4) else ""
        raise ConfigError(f"iptables-restore failed with status {code}{hint}: {err}")
