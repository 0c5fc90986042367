"""Outlier detection: Envoy's passive health checking for one cluster.

The runtime reports every upstream response (``record``) and every local-origin failure
(``record_local_failure``: connect failure, reset, per-try or global timeout), calls ``tick()``
every ``config.interval`` seconds, and applies the returned events (mark the host ejected or
not, refresh the load balancer, log and count). Only enforced ejections and unejections are
events; detections that were not enforced or hit ``max_ejection_percent`` only move counters
in ``stats`` (Envoy's ``outlier_detection.*`` names).

Semantics, as in Envoy 1.40:

* Without ``split_external_local_origin_errors``, local-origin failures are mapped to HTTP
  codes: a connect failure or a reset counts as a 503, a timeout as a 504. Both are 5xx and
  gateway errors, so they feed ``consecutive_5xx`` and ``consecutive_gateway_failure``. With
  the split they feed ``consecutive_local_origin_failure`` and the local-origin success rate.
* A consecutive counter fires when it reaches its threshold exactly; the detection is
  enforced with probability ``enforcing_*`` (``enforcing_consecutive_gateway_failure`` is 0
  by default: detected, never enforced).
* ``max_ejection_percent``: a host is ejected only while ``(ejected + 1) / hosts`` stays at
  or under it. Envoy 1.40 does NOT eject at least one host by default (older docs said it
  did): that now needs ``always_eject_one_host``, read here when the config has it.
* An ejection lasts ``min(base_ejection_time * backoff, max_ejection_time) + jitter`` and ends
  on the first ``tick()`` after that. ``backoff`` grows by one per ejection (bounded so that
  the product stays under ``max_ejection_time + base_ejection_time``) and shrinks by one per
  tick once the host has been back for at least ``interval``.
* Success rate and failure percentage are computed on ``tick()`` over the interval that just
  ended, for hosts with enough requests, when enough hosts qualify.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from proxy.config.model import OutlierDetection

__all__ = [
    "EjectionType",
    "LocalFailure",
    "OutlierAction",
    "OutlierDetector",
    "OutlierEvent",
    "OutlierStats",
]

K = TypeVar("K", bound=Hashable)


class EjectionType(StrEnum):
    CONSECUTIVE_5XX = "consecutive_5xx"
    CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
    CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"
    SUCCESS_RATE = "success_rate"
    SUCCESS_RATE_LOCAL_ORIGIN = "local_origin_success_rate"
    FAILURE_PERCENTAGE = "failure_percentage"
    FAILURE_PERCENTAGE_LOCAL_ORIGIN = "local_origin_failure_percentage"


class LocalFailure(StrEnum):
    CONNECT_FAILURE = "connect_failure"
    RESET = "reset"
    TIMEOUT = "timeout"


class OutlierAction(StrEnum):
    EJECT = "eject"
    UNEJECT = "uneject"


@dataclass(frozen=True, slots=True)
class OutlierEvent(Generic[K]):
    action: OutlierAction
    host: K
    type: EjectionType | None
    num_ejections: int


class OutlierStats:
    """Counters (and the ``ejections_active`` gauge) under Envoy's names, without the
    ``cluster.<name>.outlier_detection.`` prefix. ``detected`` / ``enforced`` are keyed by
    ``EjectionType`` value: ``ejections_detected_<type>`` / ``ejections_enforced_<type>``."""

    __slots__ = (
        "detected",
        "ejections_active",
        "ejections_consecutive_5xx",
        "ejections_enforced_total",
        "ejections_overflow",
        "ejections_success_rate",
        "ejections_total",
        "enforced",
    )

    def __init__(self) -> None:
        self.ejections_active = 0
        self.ejections_overflow = 0
        self.ejections_enforced_total = 0
        self.ejections_total = 0  # deprecated in Envoy, still published
        self.ejections_consecutive_5xx = 0  # deprecated in Envoy, still published
        self.ejections_success_rate = 0  # deprecated in Envoy, still published
        self.detected: dict[str, int] = {t.value: 0 for t in EjectionType}
        self.enforced: dict[str, int] = {t.value: 0 for t in EjectionType}

    def as_dict(self) -> dict[str, int]:
        out = {
            "ejections_active": self.ejections_active,
            "ejections_overflow": self.ejections_overflow,
            "ejections_enforced_total": self.ejections_enforced_total,
            "ejections_total": self.ejections_total,
            "ejections_consecutive_5xx": self.ejections_consecutive_5xx,
            "ejections_success_rate": self.ejections_success_rate,
        }
        for name, n in self.detected.items():
            out[f"ejections_detected_{name}"] = n
        for name, n in self.enforced.items():
            out[f"ejections_enforced_{name}"] = n
        return out


class _Monitor:
    __slots__ = (
        "backoff",
        "ejected",
        "gateway",
        "jitter",
        "last_ejection",
        "last_unejection",
        "lo_prev",
        "lo_success",
        "lo_total",
        "local",
        "num_ejections",
        "prev",
        "success",
        "total",
        "x5xx",
    )

    def __init__(self) -> None:
        self.x5xx = 0
        self.gateway = 0
        self.local = 0
        self.ejected = False
        self.num_ejections = 0
        self.backoff = 0
        self.jitter = 0.0
        self.last_ejection = 0.0
        self.last_unejection: float | None = None
        # Success-rate buckets: the interval being written, and the one that just ended.
        self.total = 0
        self.success = 0
        self.prev = (0, 0)
        self.lo_total = 0
        self.lo_success = 0
        self.lo_prev = (0, 0)


class OutlierDetector(Generic[K]):
    """Outlier detection state for one cluster. Hosts are keyed by identity/hash."""

    __slots__ = ("_clock", "_enforcing", "_monitors", "_rng", "config", "stats")

    def __init__(
        self,
        config: OutlierDetection,
        clock: Callable[[], float],
        rng: random.Random,
        hosts: Iterable[K] = (),
    ) -> None:
        self.config = config
        self._clock = clock
        self._rng = rng
        self.stats = OutlierStats()
        self._monitors: dict[K, _Monitor] = {h: _Monitor() for h in hosts}
        c = config
        self._enforcing = {
            EjectionType.CONSECUTIVE_5XX: c.enforcing_consecutive_5xx,
            EjectionType.CONSECUTIVE_GATEWAY_FAILURE: c.enforcing_consecutive_gateway_failure,
            EjectionType.CONSECUTIVE_LOCAL_ORIGIN_FAILURE: (
                c.enforcing_consecutive_local_origin_failure
            ),
            EjectionType.SUCCESS_RATE: c.enforcing_success_rate,
            EjectionType.SUCCESS_RATE_LOCAL_ORIGIN: c.enforcing_local_origin_success_rate,
            EjectionType.FAILURE_PERCENTAGE: c.enforcing_failure_percentage,
            EjectionType.FAILURE_PERCENTAGE_LOCAL_ORIGIN: (
                c.enforcing_failure_percentage_local_origin
            ),
        }

    # -- host set -------------------------------------------------------------------------
    def add_host(self, host: K) -> None:
        self._monitors.setdefault(host, _Monitor())

    def remove_host(self, host: K) -> None:
        m = self._monitors.pop(host, None)
        if m is not None and m.ejected:
            self.stats.ejections_active -= 1

    def set_hosts(self, hosts: Iterable[K]) -> None:
        """Track exactly ``hosts``; the state of hosts already known is kept."""
        wanted = set(hosts)
        for host in [h for h in self._monitors if h not in wanted]:
            self.remove_host(host)
        for host in wanted:
            self.add_host(host)

    def is_ejected(self, host: K) -> bool:
        m = self._monitors.get(host)
        return m is not None and m.ejected

    def num_ejections(self, host: K) -> int:
        m = self._monitors.get(host)
        return m.num_ejections if m is not None else 0

    # -- results --------------------------------------------------------------------------
    def record(self, host: K, status: int) -> OutlierEvent[K] | None:
        """An upstream response with ``status`` from ``host``."""
        m = self._monitors.get(host)
        if m is None:
            return None
        m.total += 1
        if status < 500 or status >= 600:
            m.success += 1
            m.x5xx = 0
            m.gateway = 0
            return None
        cfg = self.config
        event = None
        if 502 <= status <= 504:
            m.gateway += 1
            if m.gateway == cfg.consecutive_gateway_failure:
                event = self._on_consecutive(host, m, EjectionType.CONSECUTIVE_GATEWAY_FAILURE)
        else:
            m.gateway = 0
        m.x5xx += 1
        if m.x5xx == cfg.consecutive_5xx:
            event = self._on_consecutive(host, m, EjectionType.CONSECUTIVE_5XX) or event
        return event

    def record_local_failure(self, host: K, kind: LocalFailure) -> OutlierEvent[K] | None:
        """A local-origin failure talking to ``host``."""
        if not self.config.split_external_local_origin_errors:
            return self.record(host, 504 if kind == LocalFailure.TIMEOUT else 503)
        m = self._monitors.get(host)
        if m is None:
            return None
        m.lo_total += 1
        m.local += 1
        if m.local == self.config.consecutive_local_origin_failure:
            return self._on_consecutive(host, m, EjectionType.CONSECUTIVE_LOCAL_ORIGIN_FAILURE)
        return None

    def record_local_success(self, host: K) -> None:
        """The connection to ``host`` was established (counts only with the split)."""
        if not self.config.split_external_local_origin_errors:
            return
        m = self._monitors.get(host)
        if m is not None:
            m.lo_total += 1
            m.lo_success += 1
            m.local = 0

    def uneject(self, host: K, now: float | None = None) -> OutlierEvent[K] | None:
        """Return an ejected host to service (an active health check succeeded, when
        ``successful_active_health_check_uneject_host``)."""
        m = self._monitors.get(host)
        if m is None or not m.ejected:
            return None
        return self._uneject(host, m, self._clock() if now is None else now)

    # -- interval -------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> list[OutlierEvent[K]]:
        """The interval timer fired: unejections, then success-rate and failure-percentage
        ejections over the interval that just ended."""
        if now is None:
            now = self._clock()
        cfg = self.config
        events: list[OutlierEvent[K]] = []
        for host, m in self._monitors.items():
            if m.ejected:
                duration = min(cfg.base_ejection_time * m.backoff, cfg.max_ejection_time)
                if now - m.last_ejection >= duration + m.jitter:
                    events.append(self._uneject(host, m, now))
            m.prev = (m.total, m.success)
            m.total = m.success = 0
            m.lo_prev = (m.lo_total, m.lo_success)
            m.lo_total = m.lo_success = 0
        self._rate_ejections(False, now, events)
        if cfg.split_external_local_origin_errors:
            self._rate_ejections(True, now, events)
        for m in self._monitors.values():
            if (
                not m.ejected
                and m.backoff
                and m.last_unejection is not None
                and now - m.last_unejection >= cfg.interval
            ):
                m.backoff -= 1
        return events

    # -- internals ------------------------------------------------------------------------
    def _on_consecutive(self, host: K, m: _Monitor, kind: EjectionType) -> OutlierEvent[K] | None:
        if m.ejected:
            return None
        self.stats.detected[kind.value] += 1
        event = self._eject(host, m, kind, self._clock())
        # Reset so that another full run of errors is needed even without a success between.
        if kind is EjectionType.CONSECUTIVE_5XX:
            self.stats.ejections_consecutive_5xx += 1
            m.x5xx = 0
        elif kind is EjectionType.CONSECUTIVE_GATEWAY_FAILURE:
            m.gateway = 0
        else:
            m.local = 0
        return event

    def _eject(
        self, host: K, m: _Monitor, kind: EjectionType, now: float
    ) -> OutlierEvent[K] | None:
        cfg = self.config
        stats = self.stats
        max_percent = min(100, round(cfg.max_ejection_percent * 100))
        ejected_percent = 100.0 * (stats.ejections_active + 1) / len(self._monitors)
        allowed = ejected_percent <= max_percent
        if getattr(cfg, "always_eject_one_host", False) and stats.ejections_active == 0:
            allowed = True
        if not allowed:
            stats.ejections_overflow += 1
            return None
        if kind is EjectionType.CONSECUTIVE_5XX or kind is EjectionType.SUCCESS_RATE:
            stats.ejections_total += 1
        enforcing = self._enforcing[kind]
        if enforcing < 1.0 and not self._rng.random() < enforcing:
            return None
        stats.ejections_active += 1
        stats.ejections_enforced_total += 1
        stats.enforced[kind.value] += 1
        m.ejected = True
        m.num_ejections += 1
        m.last_ejection = now
        jitter_ms = int(cfg.max_ejection_time_jitter * 1000)
        m.jitter = self._rng.randrange(jitter_ms + 1) / 1000.0 if jitter_ms > 0 else 0.0
        if m.backoff * cfg.base_ejection_time < cfg.max_ejection_time + cfg.base_ejection_time:
            m.backoff += 1
        return OutlierEvent(OutlierAction.EJECT, host, kind, m.num_ejections)

    def _uneject(self, host: K, m: _Monitor, now: float) -> OutlierEvent[K]:
        self.stats.ejections_active -= 1
        m.ejected = False
        # Fresh counters: a host close to a threshold must not be re-ejected on one error.
        m.x5xx = m.gateway = m.local = 0
        m.last_unejection = now
        return OutlierEvent(OutlierAction.UNEJECT, host, None, m.num_ejections)

    def _rate_ejections(self, local: bool, now: float, events: list[OutlierEvent[K]]) -> None:
        cfg = self.config
        n_hosts = len(self._monitors)
        if n_hosts < cfg.success_rate_minimum_hosts and n_hosts < (
            cfg.failure_percentage_minimum_hosts
        ):
            return
        sr_hosts: list[tuple[K, _Monitor, float]] = []
        fp_hosts: list[tuple[K, _Monitor, float]] = []
        for host, m in self._monitors.items():
            if m.ejected:
                continue
            total, success = m.lo_prev if local else m.prev
            if not total:
                continue
            rate = success * 100.0 / total
            if total >= cfg.success_rate_request_volume:
                sr_hosts.append((host, m, rate))
            if total >= cfg.failure_percentage_request_volume:
                fp_hosts.append((host, m, rate))
        if sr_hosts and len(sr_hosts) >= cfg.success_rate_minimum_hosts:
            mean = sum(r for _, _, r in sr_hosts) / len(sr_hosts)
            variance = sum((r - mean) ** 2 for _, _, r in sr_hosts) / len(sr_hosts)
            threshold = mean - cfg.success_rate_stdev_factor / 1000.0 * math.sqrt(variance)
            kind = EjectionType.SUCCESS_RATE_LOCAL_ORIGIN if local else EjectionType.SUCCESS_RATE
            for host, m, rate in sr_hosts:
                if rate < threshold and not m.ejected:
                    self.stats.ejections_success_rate += 1
                    self.stats.detected[kind.value] += 1
                    event = self._eject(host, m, kind, now)
                    if event is not None:
                        events.append(event)
        if fp_hosts and len(fp_hosts) >= cfg.failure_percentage_minimum_hosts:
            limit = cfg.failure_percentage_threshold * 100.0
            kind = (
                EjectionType.FAILURE_PERCENTAGE_LOCAL_ORIGIN
                if local
                else EjectionType.FAILURE_PERCENTAGE
            )
            for host, m, rate in fp_hosts:
                if 100.0 - rate >= limit and not m.ejected:
                    self.stats.detected[kind.value] += 1
                    event = self._eject(host, m, kind, now)
                    if event is not None:
                        events.append(event)
