"""Which service a report names. The source side reads it from the upstream cluster's name
(else the Host header); the destination side never trusts the Host header, which any caller
chooses: it reads the services of the inbound cluster (its ``istio.services`` metadata,
logged by pilot's access-log config as the ``istio.services`` custom tag), else falls back to
the reporter's canonical service, as Istio's stats filter has since 1.10."""

from __future__ import annotations

import json

import pytest
from envoy.data.accesslog.v3 import accesslog_pb2

from mixer.peers import PeerInfo
from mixer.report import SERVICES_TAG, ReportContext, ServiceName, http_report, tcp_report

PRODUCTPAGE = PeerInfo.from_metadata(
    {
        "NAMESPACE": "bookinfo",
        "WORKLOAD_NAME": "productpage-v1",
        "LABELS": {"app": "productpage", "service.istio.io/canonical-name": "pp"},
    }
)
CTX = ReportContext(PRODUCTPAGE, lambda _: None)
SERVICES = [
    {"host": "productpage.bookinfo.svc.cluster.local", "name": "productpage",
     "namespace": "bookinfo"},
    {"host": "frontend.bookinfo.svc.cluster.local", "name": "frontend", "namespace": "bookinfo"},
]  # fmt: skip
FROM_CLUSTER = ServiceName("productpage.bookinfo.svc.cluster.local", "productpage", "bookinfo")
CANONICAL = ServiceName("pp", "pp", "bookinfo")


def _http(cluster: str, authority: str, tag: str | None) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.common_properties.start_time.FromSeconds(1_700_000_000)
    entry.common_properties.upstream_cluster = cluster
    entry.request.authority = authority
    if tag is not None:
        entry.common_properties.custom_tags[SERVICES_TAG] = tag
    return entry


@pytest.mark.parametrize("authority", ["productpage:9080", "127.0.64.1:8080", "evil.example"])
def test_inbound_names_the_clusters_first_service_whatever_the_host(authority: str) -> None:
    report = http_report(_http("inbound|9080||", authority, json.dumps(SERVICES)), CTX)
    assert report.reporter == "destination"
    assert report.service == FROM_CLUSTER
    assert report.authority == authority  # the recent log still shows what was asked for


def test_a_service_without_a_name_is_named_by_its_hosts_first_label() -> None:
    tag = json.dumps([{"host": "details.bookinfo.svc.cluster.local"}])
    report = http_report(_http("inbound|9080||", "x", tag), CTX)
    assert report.service == ServiceName(
        "details.bookinfo.svc.cluster.local", "details", "bookinfo"
    )


@pytest.mark.parametrize("tag", [None, "", "not json", "[]", '["a"]', '[{"host": ""}]', "{}"])
def test_without_usable_cluster_services_inbound_falls_back_to_canonical(tag: str | None) -> None:
    report = http_report(_http("inbound|9080||", "evil.example", tag), CTX)
    assert report.service == CANONICAL


def test_inbound_tcp_uses_the_same_rule() -> None:
    entry = accesslog_pb2.TCPAccessLogEntry()
    entry.common_properties.upstream_cluster = "inbound|3306||"
    assert tcp_report(entry, CTX).service == CANONICAL
    entry.common_properties.custom_tags[SERVICES_TAG] = json.dumps(SERVICES)
    assert tcp_report(entry, CTX).service == FROM_CLUSTER


def test_outbound_reads_the_cluster_name_then_the_host() -> None:
    cluster = "outbound|9080||reviews.bookinfo.svc.cluster.local"
    report = http_report(_http(cluster, "evil.example", None), CTX)
    assert report.service == ServiceName(
        "reviews.bookinfo.svc.cluster.local", "reviews", "bookinfo"
    )
    passthrough = http_report(_http("PassthroughCluster", "api.example.com", None), CTX)
    assert passthrough.service.host == "api.example.com"
    assert passthrough.service.name == "PassthroughCluster"
