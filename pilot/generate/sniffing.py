"""Protocol sniffing: the listeners and filter chains of ports that name no protocol (Istio's
``protocol.Unsupported``), in istiod's shape.

Such a port carries HTTP or anything else, told per connection by Envoy's ``http_inspector``
(plaintext) or by the ALPN a client sidecar offers (mTLS):

- outbound, the port's listener runs ``http_inspector`` and has an HTTP chain
  (``application_protocols: [http/1.1, http/1.0, h2c]``) to the port's routes, and a fallback
  chain to ``tcp_proxy``;
- inbound, per port: over mTLS ``transport_protocol: tls`` with ``application_protocols:
  [istio-http/1.0, istio-http/1.1, istio-h2]`` (what Istio's ``istio.alpn`` filter makes an
  HTTP client sidecar offer) to the connection manager, any other TLS to ``tcp_proxy``; in
  plaintext the HTTP application protocols to the connection manager, the rest to
  ``tcp_proxy``. Which of them exist follows the port's PeerAuthentication mode.

The listener waits ``protocolDetectionTimeout`` (mesh config, 0: for ever) for the client's
first bytes, then goes on as TCP (``continue_on_listener_filters_timeout``), as istiod sets it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pilot.generate.common import typed
from pilot.generate.scope import OutboundPort
from pilot.generate.tls import inbound_mtls
from pilot.model.mesh import MeshConfig
from pilot.registry.registry import Service
from pymesh.config.model.security import MTLSMode

__all__ = [
    "MTLS_HTTP_ALPNS",
    "PLAINTEXT_HTTP_ALPNS",
    "detection_settings",
    "http_inspector",
    "inbound_sniffing_chains",
    "outbound_http_listeners",
    "outbound_sniffing_chains",
]

#: What ``http_inspector`` sets for an HTTP client (Istio's ``plaintextHTTPALPNs``).
PLAINTEXT_HTTP_ALPNS = ("http/1.0", "http/1.1", "h2c")
#: What an HTTP client sidecar offers over mesh mTLS (Istio's ``mtlsHTTPALPNs``).
MTLS_HTTP_ALPNS = ("istio-http/1.0", "istio-http/1.1", "istio-h2")

Filters = Callable[[bool], list[dict[str, Any]]]


def http_inspector(only_ports: Sequence[int] = ()) -> dict[str, Any]:
    """The listener filter; with ``only_ports`` it is disabled for every other destination
    port, so that a plaintext server-first protocol on a named TCP port of the same listener
    is not held waiting for bytes its client never sends first."""
    body: dict[str, Any] = {
        "name": "envoy.filters.listener.http_inspector",
        "typed_config": typed("http_inspector"),
    }
    if only_ports:
        rules = [
            {"destination_port_range": {"start": p, "end": p + 1}} for p in sorted(set(only_ports))
        ]
        body["filter_disabled"] = {
            "not_match": rules[0] if len(rules) == 1 else {"or_match": {"rules": rules}}
        }
    return body


def detection_settings(mesh: MeshConfig) -> dict[str, Any]:
    """The listener fields istiod sets where it sniffs."""
    return {
        "listener_filters_timeout": f"{mesh.protocol_detection_timeout:g}s",
        "continue_on_listener_filters_timeout": True,
    }


def outbound_sniffing_chains(
    name: str, hcm: dict[str, Any], tcp: dict[str, Any]
) -> list[dict[str, Any]]:
    """A sniffed port's outbound chains: HTTP to the connection manager, the rest to TCP."""
    return [
        {
            "name": f"{name}-http",
            "filter_chain_match": {"application_protocols": list(PLAINTEXT_HTTP_ALPNS)},
            "filters": [hcm],
        },
        {"name": f"{name}-tcp", "filters": [tcp]},
    ]


def inbound_sniffing_chains(
    name: str, match: dict[str, int], mode: MTLSMode, http: Filters, tcp: Filters
) -> list[dict[str, Any]]:
    """A sniffed port's inbound chains under a PeerAuthentication mode: STRICT the two mTLS
    chains, DISABLE the two plaintext ones, PERMISSIVE all four (``http`` and ``tcp`` build
    the network filters, given whether the chain is mTLS)."""
    chains: list[dict[str, Any]] = []
    secure = mode in (MTLSMode.STRICT, MTLSMode.PERMISSIVE)
    if secure:
        chains += [
            {
                "name": name,
                "filter_chain_match": {
                    **match,
                    "transport_protocol": "tls",
                    "application_protocols": list(MTLS_HTTP_ALPNS),
                },
                "filters": http(True),
                "transport_socket": inbound_mtls(http=True),
            },
            {
                "name": f"{name}-tcp",
                "filter_chain_match": {**match, "transport_protocol": "tls"},
                "filters": tcp(True),
                "transport_socket": inbound_mtls(http=False),
            },
        ]
    if mode is not MTLSMode.STRICT:
        # Envoy refuses a listener whose filter chains share a name.
        plain = f"{name}-plaintext" if secure else name
        transport = {"transport_protocol": "raw_buffer"} if secure else {}
        chains += [
            {
                "name": plain,
                "filter_chain_match": {
                    **match,
                    **transport,
                    "application_protocols": list(PLAINTEXT_HTTP_ALPNS),
                },
                "filters": http(False),
            },
            {
                "name": f"{plain}-tcp",
                "filter_chain_match": {**match, **transport},
                "filters": tcp(False),
            },
        ]
    return chains


def outbound_http_listeners(
    mesh: MeshConfig,
    op: OutboundPort,
    hcm: dict[str, Any],
    routed: Callable[[Service], dict[str, Any]],
    listener: Callable[..., dict[str, Any]],
) -> list[dict[str, Any]]:
    """``0.0.0.0_<port>`` for the port's HTTP, sniffing when a service without a VIP names no
    protocol (its TCP goes to the first such service, as Istio keeps the first); a sniffed
    service with a VIP gets ``<vip>_<port>`` of its own, whose TCP goes to it."""
    sniffing = {"listener_filters": [http_inspector()], **detection_settings(mesh)}
    shared = [s for s in op.sniffed if not s.address]
    if shared:
        chains = outbound_sniffing_chains(f"0.0.0.0_{op.port}", hcm, routed(shared[0]))
        found = [listener("0.0.0.0", chains, **sniffing)]
    else:
        found = [listener("0.0.0.0", [{"filters": [hcm]}])]
    for service in (s for s in op.sniffed if s.address):
        name = f"{service.address}_{op.port}"
        chains = outbound_sniffing_chains(name, hcm, routed(service))
        found.append(listener(service.address, chains, **sniffing))
    return found
