"""Istio's standard metrics as one proxy computes them (Istio's ``istio.stats`` filter): each
finished request becomes a report from this proxy's side (``reporter="destination"`` on
inbound clusters, ``"source"`` otherwise), with the peer learnt from the metadata exchange,
and is counted in :class:`mixer.metrics.IstioMetrics`.

The report is made by the same code mixer uses for the access-log entries it receives
(:func:`mixer.report.http_report` on the entry :func:`proxy.als.entry.http_entry` builds), so
a proxy's ``istio_requests_total`` carries exactly the labels mixer's does for the same
request. The series are served beside the proxy's Envoy statistics on ``/stats/prometheus``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest

from mixer.metrics import IstioMetrics
from mixer.peers import DOWNSTREAM_PEER, UPSTREAM_PEER, PeerInfo
from mixer.report import SERVICES_TAG, ReportContext, http_report
from proxy.als.entry import http_entry
from proxy.config.model_common import CustomTag, CustomTagKind
from proxy.config.model_http import GrpcAccessLogService
from proxy.istio.exchange import encode_node

if TYPE_CHECKING:
    from proxy.config.model_bootstrap import Node
    from proxy.http.stream_info import StreamInfo

__all__ = ["DOWNSTREAM_PEER", "UPSTREAM_PEER", "IstioTelemetry"]

Headers = list[tuple[bytes, bytes]]

# What the report reads: gRPC or not, a gRPC call's status, and on the inbound side the
# services the cluster serves (Istio's stats filter reads the cluster's metadata too).
_ENTRY_CONFIG = GrpcAccessLogService(
    log_name="istio.stats",
    cluster_name="",
    additional_request_headers=("content-type",),
    additional_response_headers=("grpc-status",),
    additional_response_trailers=("grpc-status",),
    custom_tags=(
        CustomTag(SERVICES_TAG, CustomTagKind.CLUSTER_METADATA, path=("istio", "services")),
    ),
)


class IstioTelemetry:
    """One proxy's Istio metrics and the metadata it tells its peers."""

    def __init__(self, node: Node, *, domain: str = "cluster.local") -> None:
        self.local = PeerInfo.from_metadata(node.metadata, node.id)
        self.exchange_headers = encode_node(node.id, node.metadata)
        self.metrics = IstioMetrics()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self.metrics)
        self._domain = domain
        # Loop times are CLOCK_MONOTONIC; entries carry Unix times.
        self._wall_offset = time.time() - time.monotonic()

    def record_http(
        self,
        info: StreamInfo,
        request_headers: Headers,
        response_headers: Headers | None,
    ) -> None:
        entry = http_entry(
            info,
            request_headers,
            response_headers,
            _ENTRY_CONFIG,
            self._wall_offset,
            info.response_trailers,
            local_uri_sans=info.connection.local_uri_sans,
        )
        inbound = (info.upstream_cluster or "").startswith("inbound|")
        state = info.filter_state
        peer = state.get(DOWNSTREAM_PEER if inbound else UPSTREAM_PEER)
        known = peer if isinstance(peer, PeerInfo) else None
        try:
            report = http_report(entry, ReportContext(self.local, lambda _: known, self._domain))
        except ValueError:
            return
        self.metrics.record(report)

    def exposition(self) -> str:
        """The series in Prometheus text format; empty before the first request."""
        if not self.metrics.series:
            return ""
        return str(generate_latest(self._registry).decode())
