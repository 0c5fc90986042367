"""Shared fixtures: the upstream Istio samples kept beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

# tests/pymesh/config/conftest.py -> parents[3] is the repository root.
SAMPLES = Path(__file__).resolve().parents[3] / ".." / "shared" / "istio-samples"


def sample_files() -> list[Path]:
    if not SAMPLES.is_dir():
        return []
    return sorted(p for p in SAMPLES.rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.fixture
def samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(
            f"Istio samples not found at {SAMPLES.resolve()} (expected ../shared/istio-samples)"
        )
    return SAMPLES
