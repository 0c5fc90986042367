"""Translated configs of Istio's own HTTP filters (``istio.metadata_exchange``,
``istio.stats``), which istiod adds to every sidecar's connection managers."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["IstioStatsConfig", "PeerMetadataConfig"]


@dataclass(frozen=True, slots=True)
class PeerMetadataConfig:
    """``io.istio.http.peer_metadata.Config``: which side's peer this proxy learns from the
    ``x-envoy-peer-metadata`` headers (``*_discovery``) and to which side it sends its own
    (``*_propagation``). istiod sets the downstream pair on inbound listeners and the upstream
    pair on outbound ones."""

    downstream_discovery: bool = False
    upstream_discovery: bool = False
    downstream_propagation: bool = False
    upstream_propagation: bool = False


@dataclass(frozen=True, slots=True)
class IstioStatsConfig:
    """``stats.PluginConfig`` with Istio's defaults (its standard metrics and labels)."""
