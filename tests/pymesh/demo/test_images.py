import sys

import pytest

from pymesh.demo.images import Role, stand_in


@pytest.mark.parametrize(
    ("image", "module", "args"),
    [
        (
            "registry.istio.io/release/examples-bookinfo-reviews-v2:1.20.3",
            "pymesh.samples.bookinfo.reviews",
            ("--version", "v2"),
        ),
        (
            "pymesh/examples-bookinfo-details-v1:0.1",
            "pymesh.samples.bookinfo.details",
            ("--version", "v1"),
        ),
        (
            "docker.io/istio/examples-bookinfo-details-v2:1.20.3",
            "pymesh.samples.bookinfo.details",
            ("--version", "v2"),
        ),
        ("pymesh/examples-bookinfo-productpage-v1:0.1", "pymesh.samples.bookinfo.productpage", ()),
        ("docker.io/mccutchen/go-httpbin:v2.15.0", "pymesh.samples.httpbin", ("--version", "v3")),
        ("docker.io/kennethreitz/httpbin", "pymesh.samples.httpbin", ("--version", "v3")),
    ],
)
def test_apps(image, module, args):
    s = stand_in(image, {"version": "v3"})
    assert s.role is Role.APP
    assert (s.module, s.args) == (module, args)
    assert s.argv("127.0.4.10", 9080) == [
        sys.executable,
        "-m",
        module,
        "--host",
        "127.0.4.10",
        "--port",
        "9080",
        *args,
    ]


@pytest.mark.parametrize(
    "image", ["docker.io/curlimages/curl:8.16.0", "curlimages/curl", "pymesh/curl:0.1"]
)
def test_clients_run_no_app(image):
    s = stand_in(image, {})
    assert s.role is Role.CLIENT
    assert s.argv("127.0.4.10", 80) == []
    assert not s.warning


def test_gateway_by_image_or_label():
    assert stand_in("docker.io/istio/proxyv2:1.22.0", {}).role is Role.GATEWAY
    assert stand_in("whatever", {"istio": "ingressgateway"}).role is Role.GATEWAY


def test_unknown_image_runs_the_sidecar_only_and_says_so():
    s = stand_in("docker.io/library/nginx:1.25", {})
    assert s.role is Role.CLIENT
    assert "nginx" in s.warning
    # demo status: the APP column says there is none, and the note says why and what runs.
    from pymesh.demo.render import pod_table
    from pymesh.demo.state import DemoState, PodState

    pod = PodState("web", "default", "127.0.4.20", "client", "n", warning=s.warning)
    table = pod_table(DemoState("/r", 1, "running", "127.0.4.1", "x", "y", pods=(pod,)))
    assert table.splitlines()[1].split()[4] == "no"  # "no stand-in" in the APP column
    note = table.split("notes:\n", 1)[1]
    assert "no stand-in for image 'docker.io/library/nginx:1.25'" in note
    assert "Images the demo runs: examples-bookinfo-" in note and "fortio" in note


def test_tcp_echo_reads_the_containers_args_as_the_image_does():
    # tcp-echo-services.yaml's two versions differ only in their args: "9000,9001,9002" "two".
    s = stand_in("registry.istio.io/release/tcp-echo-server:1.3", {})
    assert (s.role, s.tcp) == (Role.APP, True)
    argv = s.argv("127.0.4.10", 9000, {}, ("9000,9001,9002", "two"))
    assert argv[-3:] == ["--", "9000,9001,9002", "two"]
