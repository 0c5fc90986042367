"""netns mode's plan (names, addresses) and per-pod hosts files: pure parts."""

from __future__ import annotations

import pytest

from pymesh.demo.netns import NetnsPlan, hosts_file, services_of
from pymesh.errors import ConfigError


def test_plan_names_and_addresses() -> None:
    plan = NetnsPlan.parse("pmpod3-", "10.211.3.0/24")
    assert plan.bridge == "pmpod3-br" and plan.gateway == "10.211.3.1"
    assert plan.pod_addresses() == ("10.211.3.2", "10.211.3.127")
    assert plan.virtual_ip(0) == "10.211.3.128"
    assert plan.namespace_for("10.211.3.17") == "pmpod3-p17"
    assert plan.veth_for("10.211.3.127") == "pmpod3-v127"
    assert len(plan.veth_for("10.211.3.127")) <= 15  # Linux interface names
    with pytest.raises(ConfigError, match="more Services"):
        plan.virtual_ip(127)


@pytest.mark.parametrize(
    ("prefix", "subnet", "message"),
    [
        ("pmpod-", "10.211.3.0/27", "at least a /26"),
        ("pmpod-", "10.211.3.5/24", "host bits"),
        ("a-very-long-prefix-", "10.211.3.0/24", "1-10 letters"),
        ("bad name", "10.211.3.0/24", "1-10 letters"),
    ],
)
def test_bad_plans(prefix: str, subnet: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        NetnsPlan.parse(prefix, subnet)


def test_hosts_file_short_names_only_in_the_pods_namespace() -> None:
    vips = {("reviews", "default"): "10.211.3.128", ("istiod", "istio-system"): "10.211.3.129"}
    text = hosts_file(vips, "default")
    lines = text.splitlines()
    assert "127.0.0.1 localhost" in lines
    assert (
        "10.211.3.128 reviews reviews.default reviews.default.svc reviews.default.svc.cluster.local"
    ) in lines
    assert (
        "10.211.3.129 istiod.istio-system istiod.istio-system.svc "
        "istiod.istio-system.svc.cluster.local"
    ) in lines


def test_services_of_pilot_listing() -> None:
    items = [
        {"kind": "Service", "metadata": {"name": "ratings", "namespace": "default"}},
        {"kind": "Service", "metadata": {"name": "httpbin"}},
        {"kind": "Deployment", "metadata": {"name": "ratings-v1"}},
        {"kind": "Service", "metadata": {}},
    ]
    assert services_of(items) == [("httpbin", "default"), ("ratings", "default")]
