"""Load generators: ``wrk`` (saturation, throughput), and for a fixed rate ``hey`` or the open-loop
generator pymesh ships (:mod:`pymesh.load`, the one the demo's fortio stand-in runs), parsed to
numbers.

wrk reports through a Lua ``done()`` hook that prints one JSON line, so nothing depends on
its human-readable output. hey writes one CSV row per request (0.1 ms resolution) and the
percentiles are computed here from all of them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymesh.load.report import latency_ms

__all__ = [
    "LoadResult",
    "ToolError",
    "missing_tools",
    "open_loop_document",
    "percentile",
    "run_hey",
    "run_open_loop",
    "run_wrk",
]

_WRK_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99)))
end
"""


class ToolError(RuntimeError):
    """A load generator failed or printed something unparseable."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    bytes: int
    errors: int  # socket errors + non-2xx/3xx responses
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0

    @property
    def error_ratio(self) -> float:
        return self.errors / max(self.requests, 1)


def missing_tools() -> list[str]:
    return [t for t in ("wrk", "hey", "nginx", "taskset") if shutil.which(t) is None]


def _pin(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus is not None else []


def _run(argv: list[str], timeout: float, env: Mapping[str, str] | None = None) -> str:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{argv[0]} did not finish in {timeout:.0f}s") from exc
    if done.returncode != 0:
        raise ToolError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    workdir: Path,
    threads: int = 1,
    cpus: str | None = "0",
    headers: Mapping[str, str] | None = None,
) -> LoadResult:
    """``wrk -t1 -cN -dS`` against ``url``, every request with ``headers`` added."""
    lua = "".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in (headers or {}).items()
    )
    lua += _WRK_LUA
    script = workdir / f"report-{zlib.crc32(lua.encode()):08x}.lua"
    if not script.exists():
        script.write_text(lua)
    # wrk takes whole seconds only ("-d1.5s" is a usage error).
    whole = max(1, round(seconds))
    argv = [*_pin(cpus), "wrk", f"-t{threads}", f"-c{connections}", f"-d{whole}s"]
    argv += ["--timeout", "5s", "-s", str(script), url]
    out = _run(argv, timeout=seconds + 30)
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise ToolError(f"wrk printed no report:\n{out[-1000:]}")
    d = json.loads(line[len("WRKJSON ") :])
    errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    return LoadResult(
        requests=d["requests"],
        seconds=d["duration_us"] / 1e6,
        bytes=d["bytes"],
        errors=errors,
        p50_ms=d["p50_us"] / 1e3,
        p90_ms=d["p90_us"] / 1e3,
        p99_ms=d["p99_us"] / 1e3,
    )


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def run_hey(
    url: str,
    *,
    rate: float,
    connections: int,
    seconds: float,
    cpus: str | None = "0",
) -> LoadResult:
    """``hey -c C -q rate/C -z S`` (a fixed total rate over C workers), latencies from CSV."""
    per_worker = rate / connections
    argv = [*_pin(cpus), "hey", "-c", str(connections), "-q", f"{per_worker:g}"]
    argv += ["-z", f"{seconds:g}s", "-o", "csv", url]
    out = _run(argv, timeout=seconds + 60)
    times: list[float] = []
    errors = 0
    last_offset = 0.0
    for row in csv.DictReader(io.StringIO(out)):
        try:
            times.append(float(row["response-time"]) * 1e3)
            last_offset = max(last_offset, float(row["offset"]))
            if not 200 <= int(row["status-code"]) < 400:
                errors += 1
        except (KeyError, ValueError):
            errors += 1
    if not times:
        raise ToolError(f"hey returned no requests:\n{out[-1000:]}")
    times.sort()
    return LoadResult(
        requests=len(times),
        seconds=last_offset or seconds,
        bytes=0,
        errors=errors,
        p50_ms=percentile(times, 50),
        p90_ms=percentile(times, 90),
        p99_ms=percentile(times, 99),
    )


def open_loop_document(
    url: str,
    *,
    rate: float,
    connections: int,
    seconds: float,
    cpus: str | None = "0",
    proxy: str | None = None,
    expect: str = "",
) -> dict[str, Any]:
    """pymesh's open-loop generator at a fixed arrival rate (in its own process, pinned like
    the other tools), its fortio ``-json`` document: unlike hey's rate-limited closed loops,
    a slow answer does not delay the requests after it, and latency counts from each
    request's scheduled start (no coordinated omission), into an HDR histogram. ``proxy``:
    sent through it as an app sends through its sidecar's ``HTTP_PROXY``. ``expect``: a 200
    whose body lacks this text is counted under code -2, a failure."""
    argv = [*_pin(cpus), sys.executable, "-m", "pymesh.samples.fortio", "load"]
    argv += ["-c", str(connections), "-qps", f"{rate:g}", "-t", f"{seconds:g}s"]
    argv += ["-expect", expect] if expect else []
    argv += ["-loglevel", "Error", "-json", "-", url]
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "no_proxy")}
    if proxy is not None:
        env["HTTP_PROXY"] = proxy
    doc: dict[str, Any] = json.loads(_run(argv, timeout=seconds + 60, env=env))
    return doc


def run_open_loop(
    url: str,
    *,
    rate: float,
    connections: int,
    seconds: float,
    cpus: str | None = "0",
    proxy: str | None = None,
) -> LoadResult:
    """:func:`open_loop_document`, reduced to a :class:`LoadResult`."""
    doc = open_loop_document(
        url, rate=rate, connections=connections, seconds=seconds, cpus=cpus, proxy=proxy
    )
    codes = {int(k): int(v) for k, v in doc["RetCodes"].items()}
    requests = sum(codes.values())
    if not requests:
        raise ToolError("the open-loop generator sent no request")
    return LoadResult(
        requests=requests,
        seconds=int(doc["ActualDuration"]) / 1e9,
        bytes=int(doc["Sizes"]["Sum"]),
        errors=sum(n for code, n in codes.items() if not 200 <= code < 400),
        p50_ms=latency_ms(doc, 50),
        p90_ms=latency_ms(doc, 90),
        p99_ms=latency_ms(doc, 99),
    )
