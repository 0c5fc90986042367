"""LDS resources and SDS secrets translated on their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf import json_format  # type: ignore[import-untyped]

from proxy.config.model import HttpConnectionManager, TcpProxy
from proxy.config.translate import default_registry, translate_listener, translate_secret
from proxy.config.translate.parse import parse_message
from proxy.config.translate.tls import upstream_tls
from pymesh.errors import UnsupportedError, ValidationError

CERTS = Path(__file__).parent.parent / "data" / "certs"
_TYPE = "type.googleapis.com/"
HCM = _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def _tcp_chain(name: str, **match: Any) -> dict[str, Any]:
    return {
        "name": name,
        "filter_chain_match": match,
        "filters": [
            {"name": "tcp", "typed_config": {"@type": TCP, "stat_prefix": "t", "cluster": "c"}}
        ],
    }


def _listener(data: dict[str, Any]) -> Any:
    base = {"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}
    return translate_listener(parse_message(base | data, listener_pb2.Listener), default_registry())


def test_tcp_proxy_and_rds_listener() -> None:
    listener = _listener(
        {
            "filter_chains": [
                _tcp_chain(
                    "tcp",
                    destination_port=443,
                    prefix_ranges=[{"address_prefix": "10.0.0.0", "prefix_len": 8}],
                ),
                {
                    "filters": [
                        {
                            "name": "hcm",
                            "typed_config": {
                                "@type": HCM,
                                "stat_prefix": "h",
                                "rds": {
                                    "route_config_name": "80",
                                    "config_source": {"ads": {}, "resource_api_version": "V3"},
                                },
                            },
                        }
                    ]
                },
            ]
        }
    )
    tcp = listener.filter_chains[0]
    assert isinstance(tcp.filters[0].config, TcpProxy)
    assert tcp.filters[0].config.idle_timeout == 3600.0
    assert tcp.match.destination_port == 443
    assert tcp.match.prefix_ranges[0].network.num_addresses == 1 << 24
    hcm = listener.filter_chains[1].filters[0].config
    assert isinstance(hcm, HttpConnectionManager)
    assert hcm.rds is not None and hcm.rds.route_config_name == "80"
    assert hcm.route_config is None


def test_identical_filter_chain_matches_are_invalid() -> None:
    with pytest.raises(ValidationError) as caught:
        _listener(
            {
                "filter_chains": [
                    _tcp_chain("a", destination_port=1),
                    _tcp_chain("b", destination_port=1),
                ]
            }
        )
    assert caught.value.path == "filter_chains[1]"


def test_unsupported_network_and_listener_filters() -> None:
    with pytest.raises(UnsupportedError) as caught:
        _listener(
            {
                "filter_chains": [
                    {
                        "filters": [
                            {
                                "name": "envoy.filters.network.redis_proxy",
                                "typed_config": {
                                    "@type": _TYPE
                                    + "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy",
                                    "stat_prefix": "r",
                                },
                            }
                        ]
                    }
                ]
            }
        )
    assert caught.value.path == "filter_chains[0].filters[0]"
    with pytest.raises(UnsupportedError) as caught:
        _listener(
            {
                "listener_filters": [{"name": "envoy.filters.listener.proxy_protocol"}],
                "filter_chains": [_tcp_chain("a")],
            }
        )
    assert caught.value.path == "listener_filters[0]"


def test_partial_server_name_wildcards_are_invalid() -> None:
    with pytest.raises(ValidationError, match="partial wildcards"):
        _listener({"filter_chains": [_tcp_chain("a", server_names=["a*.example.com"])]})


def test_secret_from_files() -> None:
    proto = json_format.ParseDict(
        {
            "name": "default",
            "tls_certificate": {
                "certificate_chain": {"filename": str(CERTS / "workload.pem")},
                "private_key": {"filename": str(CERTS / "workload-key.pem")},
            },
        },
        secret_pb2.Secret(),
    )
    secret = translate_secret(proto)
    assert secret.tls_certificate is not None
    assert secret.tls_certificate.certificate_chain.startswith(b"-----BEGIN CERTIFICATE-----")
    assert secret.tls_certificate.private_key_path == str(CERTS / "workload-key.pem")


def test_secret_with_garbage_certificate_is_invalid() -> None:
    proto = json_format.ParseDict(
        {
            "name": "bad",
            "validation_context": {"trusted_ca": {"inline_string": "not a certificate"}},
        },
        secret_pb2.Secret(),
    )
    with pytest.raises(ValidationError) as caught:
        translate_secret(proto)
    assert caught.value.path == "validation_context.trusted_ca"


def _tls_chain_with_alpn(alpn: list[str]) -> dict[str, Any]:
    return _tcp_chain("a") | {
        "transport_socket": {
            "name": "tls",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": alpn,
                    "tls_certificate_sds_secret_configs": [{"name": "default"}],
                },
            },
        }
    }


def test_h2_alpn_is_offered_by_listeners_and_refused_upstream() -> None:
    # A listener serves a client that picks h2 over TLS with HTTP/2.
    listener = _listener({"filter_chains": [_tls_chain_with_alpn(["h2", "http/1.1"])]})
    tls = listener.filter_chains[0].transport_socket
    assert tls is not None and tls.common.alpn_protocols == ("h2", "http/1.1")
    with pytest.raises(UnsupportedError, match="ALPN protocol 'spdy/3'"):
        _listener({"filter_chains": [_tls_chain_with_alpn(["spdy/3"])]})
    # An upstream connection speaks HTTP/1.1 only: a server must not be let to pick h2.
    proto = json_format.ParseDict(
        {"common_tls_context": {"alpn_protocols": ["h2"]}},
        tls_pb2.UpstreamTlsContext(),
    )
    with pytest.raises(UnsupportedError, match="ALPN protocol 'h2'") as caught:
        upstream_tls(proto, "tls")
    assert caught.value.path == "tls.common_tls_context.alpn_protocols[0]"


def _inspected(disabled: dict[str, Any]) -> Any:
    http_inspector = {
        "name": "envoy.filters.listener.http_inspector",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
        },
        "filter_disabled": disabled,
    }
    return _listener({"listener_filters": [http_inspector], "filter_chains": [_tcp_chain("a")]})


def _port(start: int) -> dict[str, Any]:
    return {"destination_port_range": {"start": start, "end": start + 1}}


@pytest.mark.parametrize(
    ("disabled", "inspected_ports"),
    [
        ({"any_match": True}, set()),
        (_port(80), {81, 9080}),
        ({"not_match": _port(80)}, {80}),
        ({"not_match": {"or_match": {"rules": [_port(80), _port(9080)]}}}, {80, 9080}),
        ({"and_match": {"rules": [{"not_match": _port(80)}, {"not_match": _port(81)}]}}, {80, 81}),
    ],
)
def test_filter_disabled_by_destination_port(
    disabled: dict[str, Any], inspected_ports: set[int]
) -> None:
    """A listener filter's ``filter_disabled`` decides per destination port whether it runs
    (what pilot uses to sniff only the ports that name no protocol)."""
    listener = _inspected(disabled)
    name = "envoy.filters.listener.http_inspector"
    inspected = {p for p in (80, 81, 9080) if listener.filter_enabled(name, p)}
    assert inspected == inspected_ports


def test_filter_disabled_without_a_rule_is_invalid() -> None:
    with pytest.raises(ValidationError, match=r"rule: one of .* is required") as caught:
        _inspected({})
    assert caught.value.path == "listener_filters[0].filter_disabled.rule"
