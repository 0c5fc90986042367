"""The rate limit service's statistics, named as the reference service names them.

Per limit (``ratelimit.service.rate_limit.<domain>.<key…>.<stat>``): ``total_hits``,
``over_limit``, ``near_limit``, ``within_limit``, ``shadow_mode``. Per service:
``ratelimit.service.config_load_success`` / ``config_load_error`` and
``ratelimit.service.call.should_rate_limit.redis_error`` / ``service_error``. In Prometheus
text the per-limit ones are ``ratelimit_service_rate_limit_<stat>{domain, key}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, Metric

__all__ = ["LIMIT_STATS", "SERVICE_STATS", "RateLimitCollector", "RateLimitStats", "Sample"]

LIMIT_STATS = ("total_hits", "over_limit", "near_limit", "within_limit", "shadow_mode")
SERVICE_STATS = (
    "config_load_success",
    "config_load_error",
    "call.should_rate_limit.redis_error",
    "call.should_rate_limit.service_error",
)
# Keep the number of label sets bounded: a detailed_metric limit on a user-controlled value
# would otherwise grow the table without end.
MAX_LIMIT_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class Sample:
    """One counter for Prometheus: ``name{labels} value``."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: int


class RateLimitStats:
    """Counters owned by one service instance (no module-level registry)."""

    __slots__ = ("_limits", "_service", "dropped_keys")

    def __init__(self) -> None:
        self._limits: dict[str, dict[str, int]] = {}
        self._service = dict.fromkeys(SERVICE_STATS, 0)
        self.dropped_keys = 0

    def add(self, stat_key: str, stat: str, value: int) -> None:
        if value <= 0:
            return
        counters = self._limits.get(stat_key)
        if counters is None:
            if len(self._limits) >= MAX_LIMIT_KEYS:
                self.dropped_keys += 1
                return
            counters = self._limits[stat_key] = dict.fromkeys(LIMIT_STATS, 0)
        counters[stat] += value

    def inc(self, stat: str) -> None:
        self._service[stat] += 1

    def limit(self, stat_key: str, stat: str) -> int:
        return self._limits.get(stat_key, {}).get(stat, 0)

    def service(self, stat: str) -> int:
        return self._service[stat]

    def flat(self) -> dict[str, int]:
        """Every counter under its reference-service name (for ``/stats``-style dumps)."""
        out = {f"ratelimit.service.{name}": value for name, value in self._service.items()}
        for key, counters in self._limits.items():
            for stat, value in counters.items():
                out[f"ratelimit.service.rate_limit.{key}.{stat}"] = value
        return out

    def samples(self) -> Iterator[Sample]:
        for name, value in self._service.items():
            yield Sample("ratelimit_service_" + name.replace(".", "_"), (), value)
        for key, counters in self._limits.items():
            domain, _, rest = key.partition(".")
            labels = (("domain", domain), ("key", rest))
            for stat, value in counters.items():
                yield Sample(f"ratelimit_service_rate_limit_{stat}", labels, value)

    def prometheus_text(self) -> str:
        """Every counter in Prometheus' text format (counters, one ``# TYPE`` per name)."""
        lines: list[str] = []
        typed: set[str] = set()
        # A family's samples must stand together in the text format.
        for sample in sorted(self.samples(), key=lambda s: s.name):
            if sample.name not in typed:
                typed.add(sample.name)
                lines.append(f"# TYPE {sample.name} counter")
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels)
            lines.append(
                f"{sample.name}{{{labels}}} {sample.value}"
                if labels
                else f"{sample.name} {sample.value}"
            )
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class RateLimitCollector:
    """The service's counters as a ``prometheus_client`` collector, for mixer's ``/metrics``
    (counter families gain the ``_total`` suffix there, as Prometheus names counters)."""

    def __init__(self, stats: RateLimitStats) -> None:
        self._stats = stats

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for sample in self._stats.samples():
            family = families.get(sample.name)
            if family is None:
                label_names = [name for name, _ in sample.labels]
                family = families[sample.name] = CounterMetricFamily(
                    sample.name,
                    _HELP.get(sample.name, "rate limit service counter"),
                    labels=label_names,
                )
            family.add_metric([value for _, value in sample.labels], sample.value)
        yield from families.values()


_HELP = {
    "ratelimit_service_rate_limit_total_hits": "hits counted against a limit",
    "ratelimit_service_rate_limit_over_limit": "hits over their limit",
    "ratelimit_service_rate_limit_near_limit": "hits within 80% of their limit",
    "ratelimit_service_rate_limit_within_limit": "hits within their limit",
    "ratelimit_service_rate_limit_shadow_mode": "over-limit hits let through by shadow_mode",
}
