"""Where the upstream Istio samples live: ``../shared/istio-samples`` beside the repository."""

from __future__ import annotations

from pathlib import Path

# tests/pymesh/config/_samples.py -> parents[3] is the repository root.
SAMPLES = Path(__file__).resolve().parents[3] / ".." / "shared" / "istio-samples"


def sample_files() -> list[Path]:
    """Every YAML file under the samples, or nothing when they are absent."""
    if not SAMPLES.is_dir():
        return []
    return sorted(p for p in SAMPLES.rglob("*") if p.suffix in (".yaml", ".yml"))
