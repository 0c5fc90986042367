"""Circuit breaking: per-cluster, per-priority resource limits (Envoy's ``ResourceManager``).

Each ``try_acquire_*`` either takes one unit and returns True, or counts an overflow and
returns False; every successful acquire must be paired with one ``release_*``. The overflow
counters carry Envoy's stat names; like Envoy, a request refused by ``max_requests`` counts
as ``upstream_rq_pending_overflow``.

With a ``retry_budget`` the retry limit is dynamic: ``max(min_retry_concurrency,
budget_percent * (active requests + pending requests))``, replacing ``max_retries``.
"""

from __future__ import annotations

from proxy.config.model import CircuitBreakers, CircuitBreakerThresholds

__all__ = ["ClusterResourceLimits", "ResourceLimits"]


class ResourceLimits:
    """Counters for one cluster and priority. ``max_*`` are readable for stats."""

    __slots__ = (
        "_budget_min",
        "_budget_percent",
        "connections",
        "max_connections",
        "max_pending_requests",
        "max_requests",
        "max_retries",
        "pending_requests",
        "requests",
        "retries",
        "track_remaining",
        "upstream_cx_overflow",
        "upstream_rq_pending_overflow",
        "upstream_rq_retry_overflow",
    )

    def __init__(self, thresholds: CircuitBreakerThresholds | None = None) -> None:
        t = thresholds if thresholds is not None else CircuitBreakerThresholds()
        self.max_connections = t.max_connections
        self.max_pending_requests = t.max_pending_requests
        self.max_requests = t.max_requests
        self.max_retries = t.max_retries
        self.track_remaining = t.track_remaining
        budget = t.retry_budget
        self._budget_percent = budget.budget_percent if budget is not None else None
        self._budget_min = budget.min_retry_concurrency if budget is not None else 0
        self.connections = 0
        self.pending_requests = 0
        self.requests = 0
        self.retries = 0
        self.upstream_cx_overflow = 0
        self.upstream_rq_pending_overflow = 0
        self.upstream_rq_retry_overflow = 0

    # -- connections ----------------------------------------------------------------------
    def try_acquire_connection(self) -> bool:
        if self.connections >= self.max_connections:
            self.upstream_cx_overflow += 1
            return False
        self.connections += 1
        return True

    def release_connection(self) -> None:
        if self.connections > 0:
            self.connections -= 1

    # -- pending requests -----------------------------------------------------------------
    def try_acquire_pending(self) -> bool:
        if self.pending_requests >= self.max_pending_requests:
            self.upstream_rq_pending_overflow += 1
            return False
        self.pending_requests += 1
        return True

    def release_pending(self) -> None:
        if self.pending_requests > 0:
            self.pending_requests -= 1

    # -- requests -------------------------------------------------------------------------
    def try_acquire_request(self) -> bool:
        if self.requests >= self.max_requests:
            self.upstream_rq_pending_overflow += 1
            return False
        self.requests += 1
        return True

    def release_request(self) -> None:
        if self.requests > 0:
            self.requests -= 1

    # -- retries --------------------------------------------------------------------------
    @property
    def retry_limit(self) -> int:
        percent = self._budget_percent
        if percent is None:
            return self.max_retries
        return max(self._budget_min, int(percent * (self.requests + self.pending_requests)))

    def can_retry(self) -> bool:
        return self.retries < self.retry_limit

    def try_acquire_retry(self) -> bool:
        if self.retries >= self.retry_limit:
            self.upstream_rq_retry_overflow += 1
            return False
        self.retries += 1
        return True

    def release_retry(self) -> None:
        if self.retries > 0:
            self.retries -= 1

    # -- stats ----------------------------------------------------------------------------
    @property
    def remaining_cx(self) -> int:
        return max(0, self.max_connections - self.connections)

    @property
    def remaining_pending(self) -> int:
        return max(0, self.max_pending_requests - self.pending_requests)

    @property
    def remaining_rq(self) -> int:
        return max(0, self.max_requests - self.requests)

    @property
    def remaining_retries(self) -> int:
        return max(0, self.retry_limit - self.retries)

    def open_gauges(self) -> dict[str, int]:
        """Envoy's ``circuit_breakers.<priority>.*_open`` gauges: 1 while a breaker is full."""
        return {
            "cx_open": int(self.connections >= self.max_connections),
            "rq_pending_open": int(self.pending_requests >= self.max_pending_requests),
            "rq_open": int(self.requests >= self.max_requests),
            "rq_retry_open": int(self.retries >= self.retry_limit),
        }

    def remaining_gauges(self) -> dict[str, int]:
        """Envoy's ``circuit_breakers.<priority>.remaining_*`` gauges (only published when
        ``track_remaining`` is set)."""
        return {
            "remaining_cx": self.remaining_cx,
            "remaining_pending": self.remaining_pending,
            "remaining_rq": self.remaining_rq,
            "remaining_retries": self.remaining_retries,
        }


class ClusterResourceLimits:
    """The DEFAULT and HIGH priority limits of one cluster."""

    __slots__ = ("default", "high")

    def __init__(self, breakers: CircuitBreakers | None = None) -> None:
        b = breakers if breakers is not None else CircuitBreakers()
        self.default = ResourceLimits(b.default)
        self.high = ResourceLimits(b.high)

    def for_priority(self, high: bool) -> ResourceLimits:
        """``high`` is ``RouteAction.priority_high``."""
        return self.high if high else self.default
