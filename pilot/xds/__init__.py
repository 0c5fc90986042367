"""The xDS side of pilot: ADS streams, ACK/NACK bookkeeping, debounced pushes, metrics."""

from pilot.xds.debounce import Batch, DebounceConfig, Debouncer
from pilot.xds.metrics import XdsMetrics
from pilot.xds.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    PUSH_ORDER,
    ROUTE_TYPE,
    SECRET_TYPE,
)
from pilot.xds.server import DiscoveryServer
from pilot.xds.status import proxy_status
from pilot.xds.watch import SyncStatus, Verdict, Watch

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "PUSH_ORDER",
    "ROUTE_TYPE",
    "SECRET_TYPE",
    "Batch",
    "DebounceConfig",
    "Debouncer",
    "DiscoveryServer",
    "SyncStatus",
    "Verdict",
    "Watch",
    "XdsMetrics",
    "proxy_status",
]
