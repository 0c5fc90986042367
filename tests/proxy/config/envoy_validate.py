"""Run the real Envoy in ``--mode validate`` on a bootstrap: the reference verdict."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENVOY = Path(sys.executable).parent / "envoy"
# Each validate run gets its own --base-id so parallel runs never share Envoy's shared memory.
_BASE_IDS = itertools.count(20_000 + (os.getpid() % 2_000) * 20)

needs_envoy = pytest.mark.skipif(not ENVOY.exists(), reason="Envoy binary not installed")


def envoy_validate(config: Path, cwd: Path | None = None) -> tuple[bool, str]:
    """(accepted, output) from ``envoy --mode validate -c config``."""
    result = subprocess.run(
        [
            str(ENVOY),
            "--mode",
            "validate",
            "-c",
            str(config),
            "--base-id",
            str(next(_BASE_IDS)),
            "-l",
            "error",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    return result.returncode == 0, result.stdout + result.stderr
