"""Istio's Prometheus metrics merging at injection: a pod that may be scraped gets the
``prometheus.io/*`` annotations pointed at its agent's merged endpoint
(``:15020/stats/prometheus``), so a standard ``kubernetes-pods`` scrape job reaches the
proxy's metrics and the app's through one port. The app's own annotations, if it had any,
travel to the agent in ``ISTIO_PROMETHEUS_ANNOTATIONS`` (JSON), where it scrapes the app.

As Istio: ``prometheus.io/scrape: "false"`` or ``prometheus.istio.io/merge-metrics:
"false"`` leaves the pod alone; a pod already pointed at 15020 (injected before) too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = ["MERGE_ANNOTATION", "STATS_PATH", "STATUS_PORT", "prometheus_merge"]

STATUS_PORT = 15020
STATS_PATH = "/stats/prometheus"
MERGE_ANNOTATION = "prometheus.istio.io/merge-metrics"
_KEYS = ("scrape", "port", "path")
# Istio clears both spellings before writing its own.
_PREFIXES = ("prometheus.io/", "prometheus.io.")


def _false(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("false", "0", "f")


def prometheus_merge(annotations: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """(the pod's annotations after merging, ``ISTIO_PROMETHEUS_ANNOTATIONS`` or None)."""
    out = dict(annotations)
    found = {
        key: str(annotations[prefix + key])
        for key in _KEYS
        for prefix in _PREFIXES
        if prefix + key in annotations
    }
    if _false(found.get("scrape")) or _false(annotations.get(MERGE_ANNOTATION)):
        return out, None
    if found.get("port") == str(STATUS_PORT):
        return out, None
    for key in _KEYS:
        for prefix in _PREFIXES:
            out.pop(prefix + key, None)
    out["prometheus.io/port"] = str(STATUS_PORT)
    out["prometheus.io/path"] = STATS_PATH
    out["prometheus.io/scrape"] = "true"
    return out, (json.dumps(found, sort_keys=True) if found else None)
