"""Address handout and restart errors of the demo's kubelet (no process is started)."""

import pytest

from pymesh.demo.control import ControlError
from pymesh.demo.images import Role, StandIn
from pymesh.demo.kubelet import Kubelet
from pymesh.demo.layout import AddressRange, DemoLayout
from pymesh.demo.pods import PodSpec
from pymesh.demo.runtime import PodRuntime


def spec(name, role=Role.APP, labels=None):
    return PodSpec(
        name, "default", labels or {"app": name}, stand_in=StandIn(role, "m"), container_port=9080
    )


@pytest.fixture
def kubelet(tmp_path):
    layout = DemoLayout(
        tmp_path, control_address="127.0.4.1", pod_addresses=AddressRange.parse("127.0.4.10-12")
    )
    return Kubelet(layout, marker="m", env={}, python="python", log_level="info", say=print)


def place(kubelet, s):
    ip = kubelet.address_for(s)
    assert ip is not None
    kubelet.pods[s.key] = PodRuntime(s, ip, kubelet.layout, "m")
    kubelet._assigned[s.key] = ip
    return ip


def test_addresses_in_order_and_the_gateway_on_the_control_address(kubelet):
    gateway = spec("istio-ingressgateway", Role.GATEWAY, {"istio": "ingressgateway"})
    assert place(kubelet, gateway) == "127.0.4.1"
    assert place(kubelet, spec("a")) == "127.0.4.10"
    assert place(kubelet, spec("b")) == "127.0.4.11"


def test_a_pod_comes_back_to_its_address_and_new_pods_avoid_it(kubelet):
    place(kubelet, spec("a"))
    place(kubelet, spec("b"))
    del kubelet.pods["a.default"]
    assert place(kubelet, spec("c")) == "127.0.4.12"  # a's address stays reserved for a
    assert place(kubelet, spec("a")) == "127.0.4.10"
    assert kubelet.address_for(spec("d")) is None  # the range is full


def test_a_full_range_reuses_addresses_of_deleted_pods(kubelet):
    for name in ("a", "b", "c"):
        place(kubelet, spec(name))
    del kubelet.pods["b.default"]
    assert kubelet.address_for(spec("d")) == "127.0.4.11"


async def test_restart_names_the_pods_it_knows(kubelet):
    place(kubelet, spec("reviews-v1"))
    place(kubelet, PodSpec("sleep", "default", {"app": "sleep"}))
    with pytest.raises(ControlError, match="does not exist; pods: reviews-v1, sleep") as info:
        await kubelet.restart("nope", "all")
    assert info.value.status == 404
    with pytest.raises(ControlError, match="has no app"):
        await kubelet.restart("sleep", "app")


def test_sync_of_a_replaced_proxy_is_not_taken_for_the_new_one(kubelet):
    from pymesh.demo.pilot_api import SyncState

    class FakeChild:
        started_at = 1000.0

    place(kubelet, spec("a"))
    pod = kubelet.pods["a.default"]
    pod.proxy = FakeChild()
    old_stream = {pod.node_id: SyncState("SYNCED", connected_seconds=60.0)}
    kubelet.update_sync(old_stream, now=1002.0)
    assert pod.sync.status == "NOT CONNECTED"
    new_stream = {pod.node_id: SyncState("SYNCED", connected_seconds=1.5)}
    kubelet.update_sync(new_stream, now=1002.0)
    assert pod.sync.status == "SYNCED"
    kubelet.update_sync({}, now=1003.0)
    assert pod.sync.status == "NOT CONNECTED"
