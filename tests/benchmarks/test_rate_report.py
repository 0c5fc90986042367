"""The two-sidecar benchmark's report: added latency pairs runs of one repetition, failed
runs are named and left out, and the plot is a real PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.rate_report import markdown, plot


def run(plane: str, rate: Any, rep: int, p50: float, **extra: Any) -> dict[str, Any]:
    return {
        "plane": plane, "rate": rate, "rep": rep, "p50_ms": p50, "p90_ms": p50 * 2,
        "p99_ms": p50 * 3, "p99.9_ms": p50 * 4,
        "rps": float(rate) if rate != "saturation" else 900.0, "load1": 3.5,
        "cpu_a_us": 100.0, "cpu_b_us": 90.0, **extra,
    }  # fmt: skip


RUNS = [
    run("direct", 100.0, 0, 1.0),
    run("direct", 100.0, 1, 2.0),
    run("envoy", 100.0, 0, 3.0),
    run("envoy", 100.0, 1, 6.0),
    run("envoy", "saturation", 0, 0.0),
    run("pymesh", 100.0, 0, 9.0, error="12 of 300 requests failed"),
]


def test_added_latency_is_against_the_direct_run_of_the_same_repetition() -> None:
    table = markdown(RUNS, ["direct", "envoy", "pymesh"])
    envoy = next(line for line in table.splitlines() if line.startswith("| envoy | 100 "))
    cells = [c.strip() for c in envoy.split("|")[1:-1]]
    # p50: 3 and 6 → median 4.5; added: 3-1 and 6-2 → median 3.
    assert cells[2] == "4.50 (3.00-6.00)" and cells[6] == "3.00 (2.00-4.00)"
    assert "| envoy | saturation | | | | | | | 900 | 100 | 90 | 3.5 |" in table
    # The failed run is named, not averaged in.
    assert not any(line.startswith("| pymesh | 100 ") for line in table.splitlines())
    assert "failed: pymesh at 100.0 (rep 0): 12 of 300 requests failed" in table


def test_the_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "latency.png"
    assert plot(RUNS, ["direct", "envoy", "pymesh"], out, "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
