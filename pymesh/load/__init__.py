"""The load generator the ``fortio`` stand-in and ``benchmarks/`` share: open loop at a fixed
rate, latency from each request's scheduled start, HDR histograms (:mod:`.generator`), over
keep-alive HTTP/1.1 connections (:mod:`.client`)."""

from pymesh.load.client import Target, parse_target
from pymesh.load.generator import (
    ERROR_CODE,
    MISMATCH_CODE,
    LoadResult,
    LoadSpec,
    plan,
    run_load,
)

__all__ = [
    "ERROR_CODE",
    "MISMATCH_CODE",
    "LoadResult",
    "LoadSpec",
    "Target",
    "parse_target",
    "plan",
    "run_load",
]
