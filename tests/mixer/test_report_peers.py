"""Who a report names as the peer: the proxy at the peer's address, else the peer the reporter
learnt by metadata exchange and logged (Istio's ``wasm.downstream_peer``), else ``unknown``
with the address kept for a later look-up."""

from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import struct_pb2

from mixer.peers import DOWNSTREAM_PEER, PeerInfo
from mixer.report import ReportContext, http_report

PRODUCTPAGE = PeerInfo.from_metadata(
    {"NAMESPACE": "default", "WORKLOAD_NAME": "productpage-v1", "LABELS": {"app": "productpage"}}
)
GATEWAY = {
    "NAMESPACE": "istio-system",
    "WORKLOAD_NAME": "istio-ingressgateway",
    "SERVICE_ACCOUNT": "istio-ingressgateway-service-account",
    "LABELS": {"app": "istio-ingressgateway"},
}


def _inbound_entry(peer: dict[str, object] | None) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    common = entry.common_properties
    common.start_time.FromSeconds(1_700_000_000)
    common.upstream_cluster = "inbound|9080||"
    # A gateway on the host reaches a pod on a bridge from the host's bridge address.
    common.downstream_direct_remote_address.socket_address.address = "10.244.99.1"
    common.downstream_direct_remote_address.socket_address.port_value = 40000
    entry.request.authority = "productpage:9080"
    if peer is not None:
        struct = struct_pb2.Struct()
        struct.update(peer)
        common.filter_state_objects[DOWNSTREAM_PEER].Pack(struct)
    return entry


def test_an_address_no_proxy_has_is_named_by_the_exchanged_peer() -> None:
    report = http_report(_inbound_entry(GATEWAY), ReportContext(PRODUCTPAGE, lambda _: None))
    assert report.reporter == "destination"
    assert (report.source.workload, report.source.namespace) == (
        "istio-ingressgateway",
        "istio-system",
    )
    assert report.source.app == "istio-ingressgateway"
    assert report.peer_address == ""


def test_the_proxy_at_the_address_comes_first() -> None:
    at_address = PeerInfo.from_metadata({"NAMESPACE": "default", "WORKLOAD_NAME": "sleep"})
    report = http_report(_inbound_entry(GATEWAY), ReportContext(PRODUCTPAGE, lambda _: at_address))
    assert report.source.workload == "sleep"


def test_without_either_the_peer_waits_unknown() -> None:
    report = http_report(_inbound_entry(None), ReportContext(PRODUCTPAGE, lambda _: None))
    assert not report.source.known
    assert report.peer_address == "10.244.99.1:40000"
