"""What the TCP proxy knows of a connection when it ends: a plain value, so the TCP proxy
hands it to its loggers without knowing how they encode it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from proxy.http.stream_info import ConnectionInfo

__all__ = ["ConnectionLogger", "TcpFacts"]


@dataclass(frozen=True, slots=True)
class TcpFacts:
    """One proxied connection (loop times; ``end_time`` None while it lasts)."""

    connection: ConnectionInfo
    start_time: float
    end_time: float | None
    received_bytes: int
    sent_bytes: int
    upstream_cluster: str | None = None
    upstream_cluster_metadata: Mapping[str, object] | None = None
    upstream_host: str | None = None
    upstream_local_address: tuple[str, int] | None = None
    response_flags: tuple[str, ...] = ()
    # Why the last TLS handshake with the upstream failed (Envoy's
    # ``%UPSTREAM_TRANSPORT_FAILURE_REASON%``), empty when none did.
    upstream_transport_failure_reason: str = ""


class ConnectionLogger(Protocol):
    def log_connection(self, facts: TcpFacts) -> None: ...
