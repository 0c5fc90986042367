"""The recent access log: the last N reports (and no older than the retention), searchable by
workload, status class and age — what ``pymesh logs WORKLOAD`` shows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mixer.report import Report

__all__ = ["LogQuery", "RecentLog", "parse_status", "report_json"]


@dataclass(frozen=True, slots=True)
class LogQuery:
    """``workload`` matches the reporting proxy's workload (``name`` or ``name.namespace``);
    ``status`` is a code (``503``) or a class (``5xx``); ``since`` is seconds back from now."""

    workload: str = ""
    status: str = ""
    since: float | None = None
    limit: int = 100


def parse_status(text: str) -> Callable[[int], bool]:
    """``"5xx"`` → codes 500-599, ``"404"`` → 404; raises ValueError otherwise."""
    text = text.strip().lower()
    if len(text) == 3 and text[0] in "12345" and text[1:] == "xx":
        low = int(text[0]) * 100
        return lambda code: low <= code < low + 100
    if text.isdigit() and len(text) == 3:
        want = int(text)
        return lambda code: code == want
    raise ValueError(f"status {text!r}: expected a code (503) or a class (5xx)")


class RecentLog:
    """A bounded ring of reports with time-based expiry; ``record`` is O(1)."""

    def __init__(self, max_entries: int, retention: float, clock: Callable[[], float]) -> None:
        self.retention = retention
        self.clock = clock
        self._entries: deque[Report] = deque(maxlen=max_entries)

    def __len__(self) -> int:
        return len(self._entries)

    def record(self, report: Report) -> None:
        self._entries.append(report)

    def _expire(self, now: float) -> None:
        cutoff = now - self.retention
        entries = self._entries
        while entries and entries[0].start < cutoff:
            entries.popleft()

    def search(self, query: LogQuery) -> list[Report]:
        """Newest first, at most ``query.limit``."""
        now = self.clock()
        self._expire(now)
        status = parse_status(query.status) if query.status else None
        cutoff = now - query.since if query.since is not None else None
        name, _, namespace = query.workload.partition(".")
        out: list[Report] = []
        for r in self._newest_first():
            if cutoff is not None and r.start < cutoff:
                break
            me = r.source if r.reporter == "source" else r.destination
            if name and (me.workload != name or (namespace and me.namespace != namespace)):
                continue
            if status is not None and not status(r.response_code):
                continue
            out.append(r)
            if len(out) >= query.limit:
                break
        return out

    def _newest_first(self) -> Iterator[Report]:
        return reversed(self._entries)


def report_json(r: Report) -> dict[str, Any]:
    """One entry as the logs API returns it (Istio's access-log field names where they exist)."""
    return {
        "start_time": r.start,
        "reporter": r.reporter,
        "source_workload": r.source.workload,
        "source_namespace": r.source.namespace,
        "destination_workload": r.destination.workload,
        "destination_namespace": r.destination.namespace,
        "destination_service": r.service.host,
        "protocol": r.protocol,
        "method": r.method,
        "path": r.path,
        "authority": r.authority,
        "response_code": r.response_code,
        "response_flags": r.flags,
        "response_code_details": r.response_code_details,
        "duration": round(r.duration_ms, 3),
        "bytes_received": r.request_bytes,
        "bytes_sent": r.response_bytes,
        "upstream_cluster": r.upstream_cluster,
        "upstream_host": r.upstream_host,
        "route_name": r.route_name,
        "request_id": r.request_id,
        "trace_id": r.trace_id,
        "connection_security_policy": r.security_policy,
    }
