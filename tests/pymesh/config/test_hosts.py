from __future__ import annotations

import pytest

from pymesh.config import hosts


@pytest.mark.parametrize(
    ("host", "namespace", "fqdn"),
    [
        ("reviews", "default", "reviews.default.svc.cluster.local"),
        ("reviews", "bookinfo", "reviews.bookinfo.svc.cluster.local"),
        ("reviews.default", "foo", "reviews.default"),  # Istio only expands dot-less names
        ("reviews.default.svc.cluster.local", "foo", "reviews.default.svc.cluster.local"),
        ("*", "default", "*"),
        ("*.example.com", "default", "*.example.com"),
        ("10.0.0.1", "default", "10.0.0.1"),
        ("::1", "default", "::1"),
    ],
)
def test_to_fqdn(host: str, namespace: str, fqdn: str) -> None:
    assert hosts.to_fqdn(host, namespace) == fqdn


def test_to_fqdn_other_domain() -> None:
    assert hosts.to_fqdn("a", "b", domain="mesh.local") == "a.b.svc.mesh.local"
    assert hosts.namespace_of_fqdn("reviews.default.svc.cluster.local") == ("default", "reviews")
    assert hosts.namespace_of_fqdn("www.google.com") is None


@pytest.mark.parametrize(
    ("a", "b", "matches", "a_subset_of_b"),
    [
        ("a.example.com", "a.example.com", True, True),
        ("a.example.com", "b.example.com", False, False),
        ("a.example.com", "*.example.com", True, True),
        ("*.example.com", "a.example.com", True, False),
        ("*.example.com", "*.com", True, True),
        ("*.com", "*.example.com", True, False),
        ("*.example.com", "*.example.org", False, False),
        ("example.com", "*.example.com", False, False),
        ("anything.at.all", "*", True, True),
        ("*", "*.example.com", True, False),
        ("*", "*", True, True),
    ],
)
def test_matching(a: str, b: str, matches: bool, a_subset_of_b: bool) -> None:
    assert hosts.host_matches(a, b) is matches
    assert hosts.host_matches(b, a) is matches
    assert hosts.host_subset_of(a, b) is a_subset_of_b


def test_most_specific_match() -> None:
    candidates = ["*", "*.com", "*.example.com", "a.example.com"]
    assert hosts.most_specific_match("a.example.com", candidates) == "a.example.com"
    assert hosts.most_specific_match("b.example.com", candidates) == "*.example.com"
    assert hosts.most_specific_match("b.other.com", candidates) == "*.com"
    assert hosts.most_specific_match("localhost", candidates) == "*"
    assert hosts.most_specific_match("localhost", ["*.com"]) is None


@pytest.mark.parametrize(
    ("gateway", "namespace", "resolved"),
    [
        ("bookinfo-gateway", "default", "default/bookinfo-gateway"),
        ("istio-system/ingress", "default", "istio-system/ingress"),
        ("./ingress", "foo", "foo/ingress"),
        ("ingress.istio-system", "default", "istio-system/ingress"),
        ("ingress.istio-system.svc.cluster.local", "default", "istio-system/ingress"),
        ("mesh", "default", "mesh"),
    ],
)
def test_resolve_gateway_name(gateway: str, namespace: str, resolved: str) -> None:
    assert hosts.resolve_gateway_name(gateway, namespace) == resolved


def test_split_namespaced_host() -> None:
    assert hosts.split_namespaced_host("foo/*.example.com") == ("foo", "*.example.com")
    assert hosts.split_namespaced_host("*.example.com") == ("*", "*.example.com")


@pytest.mark.parametrize("name", ["reviews", "a.example.com", "*.example.com", "*", "istio.io."])
def test_valid_wildcard_domains(name: str) -> None:
    hosts.check_wildcard_domain(name)


@pytest.mark.parametrize(
    "name", ["", "Bad_Host!", "a..b", "*foo.com", "a.*.com", "x" * 64 + ".com", "foo.123"]
)
def test_invalid_wildcard_domains(name: str) -> None:
    with pytest.raises(ValueError):
        hosts.check_wildcard_domain(name)
        hosts.check_partial_wildcard(name)


def test_namespaced_hosts() -> None:
    hosts.check_namespaced_host("*/*", gateway=False)
    hosts.check_namespaced_host("./reviews.default.svc.cluster.local", gateway=False)
    hosts.check_namespaced_host("~istio-system/*", gateway=False)
    hosts.check_namespaced_host("~/bar.example.com", gateway=False)
    hosts.check_namespaced_host("*", gateway=True)
    hosts.check_namespaced_host("10.1.2.3", gateway=True)
    with pytest.raises(ValueError, match="namespace/dnsName"):
        hosts.check_namespaced_host("*.example.com", gateway=False)
    with pytest.raises(ValueError, match="short names"):
        hosts.check_namespaced_host("foo/reviews", gateway=True)
