"""Where tests keep what a person should be able to look at afterwards (screenshots):
``$PYMESH_TEST_ARTIFACTS`` or ``test-artifacts/`` at the repository root (git ignores it).
The session's summary names the directory and the files written during the run."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["artifact_path", "artifacts_dir", "written_since"]

ROOT = Path(__file__).resolve().parents[2]


def artifacts_dir() -> Path:
    return Path(os.environ.get("PYMESH_TEST_ARTIFACTS") or ROOT / "test-artifacts")


def artifact_path(name: str) -> Path:
    """``<artifacts dir>/<name>``; the directory is created."""
    path = artifacts_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path / name


def written_since(start: float) -> list[Path]:
    """The artifacts written since ``start`` (``time.time()``), sorted by name."""
    path = artifacts_dir()
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.is_file() and p.stat().st_mtime >= start - 1)
