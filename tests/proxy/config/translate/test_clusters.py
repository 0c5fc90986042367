"""CDS / EDS resources translated on their own."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from google.protobuf import json_format  # type: ignore[import-untyped]

from proxy.config.model import DiscoveryType, HealthStatus, LbPolicy
from proxy.config.translate import translate_cluster, translate_cluster_load_assignment
from pymesh.errors import UnsupportedError, ValidationError

_TYPE = "type.googleapis.com/"


def _cluster(data: dict[str, Any]) -> Any:
    return translate_cluster(json_format.ParseDict(data, cluster_pb2.Cluster()))


def test_eds_cluster() -> None:
    cluster = _cluster(
        {
            "name": "outbound|9080||reviews",
            "type": "EDS",
            "eds_cluster_config": {
                "eds_config": {"ads": {}, "resource_api_version": "V3"},
                "service_name": "reviews",
            },
            "load_assignment": {"cluster_name": "ignored"},
        }
    )
    assert cluster.type is DiscoveryType.EDS
    assert cluster.service_name == "reviews"
    assert cluster.eds_config is not None and cluster.eds_config.ads
    assert cluster.load_assignment is None  # Envoy only takes EDS endpoints from EDS


def test_eds_config_must_be_ads() -> None:
    with pytest.raises(UnsupportedError) as caught:
        _cluster(
            {
                "name": "c",
                "type": "EDS",
                "eds_cluster_config": {
                    "eds_config": {"path_config_source": {"path": "/etc/eds.yaml"}}
                },
            }
        )
    assert caught.value.path == "eds_cluster_config.eds_config.path_config_source"


def test_unsupported_lb_policy_and_field() -> None:
    with pytest.raises(UnsupportedError):
        _cluster({"name": "c", "lb_subset_config": {"fallback_policy": "ANY_ENDPOINT"}})
    with pytest.raises(ValidationError, match="CLUSTER_PROVIDED"):
        _cluster({"name": "c", "lb_policy": "CLUSTER_PROVIDED"})


def test_least_request_and_maglev() -> None:
    cluster = _cluster(
        {"name": "c", "lb_policy": "LEAST_REQUEST", "least_request_lb_config": {"choice_count": 5}}
    )
    assert cluster.lb_policy is LbPolicy.LEAST_REQUEST
    assert cluster.least_request.choice_count == 5
    assert cluster.maglev.table_size == 65537


def test_outlier_detection_max_below_base_is_invalid() -> None:
    with pytest.raises(ValidationError) as caught:
        _cluster({"name": "c", "outlier_detection": {"base_ejection_time": "400s"}})
    assert caught.value.path == "outlier_detection.max_ejection_time"


def test_ring_sizes_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="minimum_ring_size"):
        _cluster(
            {
                "name": "c",
                "lb_policy": "RING_HASH",
                "ring_hash_lb_config": {"minimum_ring_size": 4096, "maximum_ring_size": 1024},
            }
        )


def test_max_requests_per_connection_in_two_places_is_invalid() -> None:
    with pytest.raises(ValidationError, match="Only one of max_requests_per_connection"):
        _cluster(
            {
                "name": "c",
                "max_requests_per_connection": 5,
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": _TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "common_http_protocol_options": {"max_requests_per_connection": 7},
                        "explicit_http_config": {"http_protocol_options": {}},
                    }
                },
            }
        )
    cluster = _cluster({"name": "c", "max_requests_per_connection": 5})
    assert cluster.max_requests_per_connection == 5


def test_load_assignment_flattens_localities() -> None:
    proto = json_format.ParseDict(
        {
            "cluster_name": "reviews",
            "endpoints": [
                {
                    "locality": {"zone": "a"},
                    "load_balancing_weight": 3,
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "10.0.0.1", "port_value": 80}
                                },
                                "health_check_config": {"port_value": 8080},
                            },
                            "health_status": "DRAINING",
                            "load_balancing_weight": 2,
                        }
                    ],
                },
                {
                    "priority": 1,
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "10.0.0.2", "port_value": 80}
                                }
                            }
                        }
                    ],
                },
            ],
        },
        endpoint_pb2.ClusterLoadAssignment(),
    )
    assignment = translate_cluster_load_assignment(proto)
    first, second = assignment.endpoints
    assert (first.address, first.port, first.weight, first.locality.zone) == (
        "10.0.0.1",
        80,
        2,
        "a",
    )
    assert first.health_status is HealthStatus.DRAINING
    assert first.locality_weight == 3 and first.health_check_port == 8080
    assert second.priority == 1 and second.weight == 1
    assert assignment.overprovisioning_factor == pytest.approx(1.4)


def test_load_assignment_rejects_host_names_for_eds() -> None:
    proto = json_format.ParseDict(
        {
            "cluster_name": "x",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": "db", "port_value": 1}}
                            }
                        }
                    ]
                }
            ],
        },
        endpoint_pb2.ClusterLoadAssignment(),
    )
    with pytest.raises(ValidationError) as caught:
        translate_cluster_load_assignment(proto)
    assert (
        caught.value.path == "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address"
    )
    assert (
        translate_cluster_load_assignment(proto, allow_hostnames=True).endpoints[0].address == "db"
    )


def _tls_socket(
    validation: dict[str, Any] | None = None,
    alpn: list[str] | None = None,
    **common_extra: Any,
) -> Any:
    common: dict[str, Any] = {"alpn_protocols": alpn or ["istio-peer-exchange", "istio"]}
    common.update(common_extra)
    if validation is not None:
        common["validation_context"] = validation
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common,
            "sni": "outbound_.9080_._.reviews.default.svc.cluster.local",
        },
    }


def test_istio_auto_mtls_transport_socket_matches() -> None:
    san = {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/r"}}
    cluster = _cluster(
        {
            "name": "outbound|9080||reviews",
            "transport_socket_matches": [
                {
                    "name": "tlsMode-istio",
                    "match": {"tlsMode": "istio"},
                    "transport_socket": _tls_socket({"match_typed_subject_alt_names": [san]}),
                },
                {
                    "name": "tlsMode-disabled",
                    "match": {},
                    "transport_socket": {
                        "name": "envoy.transport_sockets.raw_buffer",
                        "typed_config": {
                            "@type": _TYPE
                            + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
                        },
                    },
                },
            ],
        }
    )
    istio, plain = cluster.transport_socket_matches
    assert dict(istio.match) == {"tlsMode": "istio"} and dict(plain.match) == {}
    assert istio.transport_socket is not None and plain.transport_socket is None
    assert istio.transport_socket.sni == "outbound_.9080_._.reviews.default.svc.cluster.local"
    assert istio.transport_socket.common.alpn_protocols == ("istio-peer-exchange", "istio")
    validation = istio.transport_socket.common.validation_context
    assert validation is not None
    assert validation.match_subject_alt_names[0].matcher.value == (
        b"spiffe://cluster.local/ns/default/sa/r"
    )


@pytest.mark.parametrize(
    ("socket", "message"),
    [
        (_tls_socket(alpn=["h2"]), "ALPN protocol 'h2'"),
        (_tls_socket({"allow_expired_certificate": True}), "allow_expired_certificate"),
        (_tls_socket({"trust_chain_verification": "ACCEPT_UNTRUSTED"}), "ACCEPT_UNTRUSTED"),
        (_tls_socket(tls_params={"ecdh_curves": ["X25519", "P-256"]}), "ecdh_curves"),
        (
            _tls_socket()
            | {"typed_config": {**_tls_socket()["typed_config"], "allow_renegotiation": True}},
            "allow_renegotiation",
        ),
    ],
)
def test_upstream_tls_fields_pymesh_cannot_honour_are_refused(socket: Any, message: str) -> None:
    with pytest.raises(UnsupportedError, match=message):
        _cluster({"name": "c", "transport_socket": socket})
    with pytest.raises(UnsupportedError, match=message):
        _cluster(
            {
                "name": "c",
                "transport_socket_matches": [
                    {"name": "m", "match": {}, "transport_socket": socket}
                ],
            }
        )


def test_a_socket_match_without_a_socket_is_refused_as_envoy_does() -> None:
    with pytest.raises(ValidationError, match="registered implementation"):
        _cluster({"name": "c", "transport_socket_matches": [{"name": "m", "match": {}}]})
