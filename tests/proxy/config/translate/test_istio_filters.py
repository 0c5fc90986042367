"""Istio's own filters (``istio.metadata_exchange``, ``istio.stats``) as istiod sends them, in
``TypedStruct``: what pymesh implements translates, anything else is refused with its path."""

from __future__ import annotations

import pytest

from proxy.config.model_istio import IstioStatsConfig, PeerMetadataConfig
from proxy.config.translate.filters import default_registry
from proxy.config.translate.istio import PEER_METADATA_URL, STATS_URL
from pymesh.errors import UnsupportedError, ValidationError
from tests.proxy.config.translate.test_typed_struct import typed_struct

HEADERS = [{"istio_headers": {}}]


def test_inbound_and_outbound_exchange_configs() -> None:
    registry = default_registry()
    inbound = {"downstream_discovery": HEADERS, "downstream_propagation": HEADERS}
    _, config = registry.translate(
        "istio.metadata_exchange", typed_struct(PEER_METADATA_URL, inbound), "f"
    )
    assert config == PeerMetadataConfig(downstream_discovery=True, downstream_propagation=True)
    outbound = {"upstream_discovery": HEADERS, "upstream_propagation": HEADERS}
    _, config = registry.translate(
        "istio.metadata_exchange", typed_struct(PEER_METADATA_URL, outbound), "f"
    )
    assert config == PeerMetadataConfig(upstream_discovery=True, upstream_propagation=True)
    _, stats = registry.translate("istio.stats", typed_struct(STATS_URL, {}), "f")
    assert stats == IstioStatsConfig()


@pytest.mark.parametrize(
    ("name", "type_url", "value", "error", "path"),
    [
        # peers found through the workload discovery service: pymesh has none
        ("istio.metadata_exchange", PEER_METADATA_URL,
         {"upstream_discovery": [{"workload_discovery": {}}]}, UnsupportedError,
         "f.typed_config.value.upstream_discovery[0].workload_discovery"),
        ("istio.metadata_exchange", PEER_METADATA_URL, {"shared_with_upstream": True},
         UnsupportedError, "f.typed_config.value.shared_with_upstream"),
        ("istio.metadata_exchange", PEER_METADATA_URL, {"upstream_discovery": [{}]},
         UnsupportedError, "f.typed_config.upstream_discovery[0]"),
        # Istio's metric overrides and custom definitions are not implemented in the proxy
        ("istio.stats", STATS_URL, {"metrics": [{"name": "requests_total"}]}, ValidationError,
         "f.typed_config.value"),
    ],
)  # fmt: skip
def test_what_pymesh_does_not_implement_is_refused(
    name: str, type_url: str, value: dict, error: type, path: str
) -> None:
    with pytest.raises(error) as caught:
        default_registry().translate(name, typed_struct(type_url, value), "f")
    assert caught.value.path == path
