"""Pilot's Prometheus metrics, under Istio's names.

Rendered by hand rather than with ``prometheus_client``: that library appends ``_total`` to
every counter, while Istio's dashboards and alerts query ``pilot_xds_pushes`` and
``pilot_total_xds_rejects`` as they are. The text format (0.0.4) accepts both spellings.
"""

from __future__ import annotations

import bisect
from collections import Counter

__all__ = ["CONVERGENCE_BUCKETS", "XdsMetrics", "short_type"]

#: Istio's buckets for ``pilot_proxy_convergence_time`` (seconds).
CONVERGENCE_BUCKETS: tuple[float, ...] = (0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0)

_SHORT = {
    "envoy.config.listener.v3.Listener": "lds",
    "envoy.config.route.v3.RouteConfiguration": "rds",
    "envoy.config.cluster.v3.Cluster": "cds",
    "envoy.config.endpoint.v3.ClusterLoadAssignment": "eds",
    "envoy.extensions.transport_sockets.tls.v3.Secret": "sds",
}


def short_type(type_url: str) -> str:
    """``type.googleapis.com/envoy.config.cluster.v3.Cluster`` -> ``cds`` (Istio's labels)."""
    name = type_url.rpartition("/")[2]
    return _SHORT.get(name, name)


def _fmt(value: float) -> str:
    return repr(float(value)) if value != int(value) else f"{int(value)}"


class _Histogram:
    __slots__ = ("buckets", "count", "counts", "total")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.count += 1
        self.total += value

    def render(self, name: str) -> list[str]:
        lines, running = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            lines.append(f'{name}_bucket{{le="{_fmt(bound)}"}} {running}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {_fmt(self.total)}")
        lines.append(f"{name}_count {self.count}")
        return lines


class XdsMetrics:
    """Counters owned by one discovery server (no process-wide registry)."""

    def __init__(self) -> None:
        # Present from the start, so dashboards see the series before the first push.
        self.pushes: Counter[str] = Counter(dict.fromkeys(("cds", "eds", "lds", "rds"), 0))
        self.rejects: Counter[str] = Counter()
        self.connected = 0
        self.convergence = _Histogram(CONVERGENCE_BUCKETS)
        self.triggers: Counter[str] = Counter()

    def pushed(self, type_url: str) -> None:
        self.pushes[short_type(type_url)] += 1

    def rejected(self, type_url: str) -> None:
        self.rejects[short_type(type_url)] += 1

    def render(self) -> str:
        out = [
            "# HELP pilot_xds_pushes Pilot build and send errors for lds, rds, cds and eds.",
            "# TYPE pilot_xds_pushes counter",
            *(f'pilot_xds_pushes{{type="{t}"}} {n}' for t, n in sorted(self.pushes.items())),
            "# HELP pilot_xds Number of endpoints connected to this pilot using XDS.",
            "# TYPE pilot_xds gauge",
            f"pilot_xds {self.connected}",
            "# HELP pilot_total_xds_rejects Total number of XDS responses from pilot rejected "
            "by proxy.",
            "# TYPE pilot_total_xds_rejects counter",
        ]
        if self.rejects:
            out += [
                f'pilot_total_xds_rejects{{type="{t}"}} {n}'
                for t, n in sorted(self.rejects.items())
            ]
        else:
            out.append("pilot_total_xds_rejects 0")
        out += [
            "# HELP pilot_proxy_convergence_time Delay in seconds between config change and a "
            "proxy receiving all required configuration.",
            "# TYPE pilot_proxy_convergence_time histogram",
            *self.convergence.render("pilot_proxy_convergence_time"),
            "# HELP pilot_push_triggers Total number of times a push was triggered, labeled by "
            "reason for the push.",
            "# TYPE pilot_push_triggers counter",
            *(f'pilot_push_triggers{{type="{t}"}} {n}' for t, n in sorted(self.triggers.items())),
        ]
        return "\n".join(out) + "\n"
