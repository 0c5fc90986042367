"""An open-loop HTTP load generator: a fixed arrival rate, latency measured from each
request's scheduled start, and HDR histograms.

With a rate (``qps > 0``) every connection has its own schedule, ``connections / qps``
seconds apart, the connections' schedules interleaved. A request that cannot go on time
(its connection is still waiting for the previous answer) goes as soon as it can, and its
latency still counts from when it should have gone: a slow server is charged for the
requests it delayed, which a closed-loop tool leaves out ("coordinated omission"). Without a
rate (``qps == 0``) each connection sends as fast as answers come back, and latency is
measured from the actual send, as fortio and wrk do.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from math import sqrt

from hdrh.histogram import HdrHistogram

from pymesh.errors import ConfigError
from pymesh.load.client import Connection, Target

__all__ = [
    "ERROR_CODE",
    "MISMATCH_CODE",
    "ConnectionPlan",
    "LoadResult",
    "LoadSpec",
    "SizeStats",
    "new_histogram",
    "plan",
    "run_load",
]

#: the code a request that got no response at all is counted under (fortio's ``Code -1``)
ERROR_CODE = -1
#: a 200 whose body lacks the target's ``expect`` text is counted under this code instead
#: (not fortio's: only runs that ask for the check see it)
MISMATCH_CODE = -2
# Histogram values are microseconds, from 1 us to an hour, 3 significant digits.
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 3_600_000_000, 3


def new_histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to run. ``requests`` (all connections together) wins over ``duration``."""

    target: Target
    connections: int = 4
    qps: float = 8.0
    requests: int | None = None
    duration: float = 5.0
    timeout: float = 3.0

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ConfigError(f"connections must be at least 1, not {self.connections}")
        if self.qps < 0:
            raise ConfigError(f"qps must be 0 (as fast as possible) or more, not {self.qps}")
        if self.requests is not None and self.requests < 1:
            raise ConfigError(f"the number of requests must be at least 1, not {self.requests}")
        if self.requests is None and self.duration <= 0:
            raise ConfigError(f"the duration must be positive, not {self.duration}")


@dataclass(frozen=True, slots=True)
class ConnectionPlan:
    """One connection's share: ``calls`` requests (None: until the duration is over), the
    first at ``first`` seconds, then one every ``period`` seconds (0: back to back)."""

    calls: int | None
    first: float
    period: float


def plan(spec: LoadSpec) -> list[ConnectionPlan]:
    """How the load is spread over the connections (pure: tested on its own)."""
    c = spec.connections
    period = c / spec.qps if spec.qps > 0 else 0.0
    plans = []
    for j in range(c):
        calls = None
        if spec.requests is not None:
            calls = spec.requests // c + (1 if j < spec.requests % c else 0)
        plans.append(ConnectionPlan(calls, j * period / c, period))
    return plans


@dataclass(frozen=True, slots=True)
class SizeStats:
    count: int = 0
    total: int = 0
    minimum: int = 0
    maximum: int = 0
    mean: float = 0.0
    stddev: float = 0.0

    @classmethod
    def of(cls, values: Sequence[int]) -> SizeStats:
        if not values:
            return cls()
        n, total = len(values), sum(values)
        mean = total / n
        var = sum((v - mean) ** 2 for v in values) / n
        return cls(n, total, min(values), max(values), mean, sqrt(var))


@dataclass(frozen=True, slots=True)
class LoadResult:
    spec: LoadSpec
    started_at: float  # wall clock
    elapsed: float  # seconds from the first scheduled request to the last answer
    histogram: HdrHistogram = field(repr=False)  # every request, microseconds
    error_histogram: HdrHistogram = field(repr=False)  # those that were not a 200
    codes: Mapping[int, int]  # status -> count; ERROR_CODE for no response
    sockets: int
    header_sizes: SizeStats
    body_sizes: SizeStats
    errors: tuple[str, ...]  # the first few failures, for the log

    @property
    def count(self) -> int:
        return sum(self.codes.values())

    @property
    def actual_qps(self) -> float:
        return self.count / self.elapsed if self.elapsed > 0 else 0.0

    def percentile_ms(self, p: float) -> float:
        return float(self.histogram.get_value_at_percentile(p)) / 1000.0


class _Recorder:
    """Shared by the connections of one run (one event loop: no locking)."""

    __slots__ = ("bodies", "codes", "error_histogram", "errors", "headers", "histogram", "log")

    def __init__(self, log: Callable[[str], None] | None) -> None:
        self.histogram = new_histogram()
        self.error_histogram = new_histogram()
        self.codes: Counter[int] = Counter()
        self.headers: list[int] = []
        self.bodies: list[int] = []
        self.errors: list[str] = []
        self.log = log

    def latency(self, seconds: float, ok: bool) -> None:
        us = max(_LOWEST_US, min(_HIGHEST_US, round(seconds * 1e6)))
        self.histogram.record_value(us)
        if not ok:
            self.error_histogram.record_value(us)


async def _drive(
    conn: Connection,
    share: ConnectionPlan,
    t0: float,
    deadline: float | None,
    rec: _Recorder,
) -> None:
    loop = asyncio.get_running_loop()
    k = 0
    while share.calls is None or k < share.calls:
        scheduled = t0 + share.first + k * share.period
        now = loop.time()
        if deadline is not None and (scheduled if share.period else now) >= deadline:
            return
        if share.period and scheduled > now:
            await asyncio.sleep(scheduled - now)
        start = scheduled if share.period else loop.time()
        ok = False
        try:
            response = await conn.request()
        except (OSError, TimeoutError, ConnectionError) as exc:
            rec.codes[ERROR_CODE] += 1
            rec.headers.append(0)
            rec.bodies.append(0)
            message = f"{type(exc).__name__}: {exc}".rstrip(": ")
            if len(rec.errors) < 20:
                rec.errors.append(message)
            if rec.log is not None:
                rec.log(f"Unable to connect to {conn.target.address}: {message}")
        else:
            mismatch = response.status == 200 and not response.matched
            rec.codes[MISMATCH_CODE if mismatch else response.status] += 1
            rec.headers.append(response.header_bytes)
            rec.bodies.append(response.header_bytes + response.body_bytes)
            ok = response.status == 200 and not mismatch
            if mismatch and rec.log is not None:
                rec.log(f"200 without {conn.target.expect!r} in its body")
            elif not ok and rec.log is not None:
                rec.log(f"Parsed non ok code {response.status} (HTTP/1.1 {response.status})")
        rec.latency(loop.time() - start, ok)
        k += 1


async def run_load(spec: LoadSpec, log: Callable[[str], None] | None = None) -> LoadResult:
    """Run ``spec`` to the end; every connection is closed when it returns. ``log`` hears
    of every answer other than 200 and every request that got none."""
    loop = asyncio.get_running_loop()
    rec = _Recorder(log)
    conns = [Connection(spec.target, spec.timeout) for _ in range(spec.connections)]
    started_at = time.time()
    t0 = loop.time()
    deadline = None if spec.requests is not None else t0 + spec.duration
    try:
        await asyncio.gather(
            *(_drive(c, p, t0, deadline, rec) for c, p in zip(conns, plan(spec), strict=True))
        )
    finally:
        for c in conns:
            c.close()
    return LoadResult(
        spec=spec,
        started_at=started_at,
        elapsed=loop.time() - t0,
        histogram=rec.histogram,
        error_histogram=rec.error_histogram,
        codes=dict(rec.codes),
        sockets=sum(c.opened for c in conns),
        header_sizes=SizeStats.of(rec.headers),
        body_sizes=SizeStats.of(rec.bodies),
        errors=tuple(rec.errors),
    )
