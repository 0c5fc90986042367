"""Istio's two telemetry HTTP filters, as istiod configures them on every sidecar:

* ``istio.metadata_exchange`` learns the peer from the ``x-envoy-peer-metadata`` headers and
  sends this proxy's own (see :mod:`proxy.istio.exchange`): on an inbound listener from the
  request and back on the response, on an outbound one on the request and from the response;
* ``istio.stats`` counts each finished request in Istio's standard metrics
  (:class:`proxy.istio.telemetry.IstioTelemetry`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.http.filter import FilterContext, FilterHeadersStatus, HttpFilter
from proxy.http.headers import get_header, remove_headers
from proxy.istio.exchange import PEER_ID, PEER_METADATA, decode_peer
from proxy.istio.telemetry import DOWNSTREAM_PEER, UPSTREAM_PEER, IstioTelemetry

if TYPE_CHECKING:
    from proxy.config.model_istio import IstioStatsConfig, PeerMetadataConfig
    from proxy.http.filter import DownstreamCallbacks, Headers

__all__ = ["IstioStatsFilter", "MetadataExchangeFilter", "exchange_factory", "stats_factory"]

_HEADERS = (PEER_METADATA, PEER_ID)


def _telemetry(ctx: FilterContext) -> IstioTelemetry:
    if ctx.istio is None:
        raise RuntimeError("Istio's filters need the proxy's node (FilterContext.istio)")
    return ctx.istio()


def _take_peer(headers: Headers, state: dict[str, object], key: str) -> None:
    value = get_header(headers, PEER_METADATA)
    if value is None:
        return
    peer = decode_peer(value, get_header(headers, PEER_ID))
    remove_headers(headers, _HEADERS)
    if peer is not None:
        state[key] = peer


class MetadataExchangeFilter(HttpFilter):
    __slots__ = ("config", "own")

    def __init__(self, config: PeerMetadataConfig, own: tuple[bytes, bytes]) -> None:
        self.config = config
        self.own = own

    def decode_headers(
        self, cb: DownstreamCallbacks, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        config = self.config
        if config.downstream_discovery:
            _take_peer(headers, cb.stream_info.filter_state, DOWNSTREAM_PEER)
        if config.upstream_propagation:
            remove_headers(headers, _HEADERS)
            headers.append((PEER_ID, self.own[0]))
            headers.append((PEER_METADATA, self.own[1]))
        return FilterHeadersStatus.CONTINUE

    def encode_headers(
        self, cb: DownstreamCallbacks, status: int, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        config = self.config
        if config.upstream_discovery:
            _take_peer(headers, cb.stream_info.filter_state, UPSTREAM_PEER)
        # Only a caller that told who it is hears who answered (a client outside the mesh
        # learns nothing of the workload).
        if config.downstream_propagation and DOWNSTREAM_PEER in cb.stream_info.filter_state:
            remove_headers(headers, _HEADERS)
            headers.append((PEER_ID, self.own[0]))
            headers.append((PEER_METADATA, self.own[1]))
        return FilterHeadersStatus.CONTINUE


class IstioStatsFilter(HttpFilter):
    __slots__ = ("response_headers", "telemetry")

    def __init__(self, telemetry: IstioTelemetry) -> None:
        self.telemetry = telemetry
        self.response_headers: Headers | None = None

    def decode_headers(
        self, cb: DownstreamCallbacks, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        cb.on_complete(lambda: self._done(cb))
        return FilterHeadersStatus.CONTINUE

    def encode_headers(
        self, cb: DownstreamCallbacks, status: int, headers: Headers, end_stream: bool
    ) -> FilterHeadersStatus:
        self.response_headers = headers
        return FilterHeadersStatus.CONTINUE

    def _done(self, cb: DownstreamCallbacks) -> None:
        self.telemetry.record_http(cb.stream_info, cb.request_headers, self.response_headers)


def exchange_factory(
    config: PeerMetadataConfig, ctx: FilterContext
) -> Callable[[], MetadataExchangeFilter]:
    own = _telemetry(ctx).exchange_headers
    return lambda: MetadataExchangeFilter(config, own)


def stats_factory(config: IstioStatsConfig, ctx: FilterContext) -> Callable[[], IstioStatsFilter]:
    telemetry = _telemetry(ctx)
    return lambda: IstioStatsFilter(telemetry)
