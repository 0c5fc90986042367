from pathlib import Path

import pytest

from pymesh.demo.layout import AddressRange, DemoLayout
from pymesh.demo.state import DemoState, write_state
from pymesh.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("127.0.0.10", "127.0.0.10", "127.0.0.99"),
        ("127.0.4.10-49", "127.0.4.10", "127.0.4.49"),
        ("127.0.4.10-127.0.4.12", "127.0.4.10", "127.0.4.12"),
        ("127.0.4.120", "127.0.4.120", "127.0.4.254"),
    ],
)
def test_address_range_forms(text, first, last):
    r = AddressRange.parse(text)
    assert (r.first, r.last) == (first, last)
    assert AddressRange.parse(str(r)) == r


def test_address_range_iterates_and_contains():
    r = AddressRange.parse("127.0.4.10-12")
    assert list(r.addresses()) == ["127.0.4.10", "127.0.4.11", "127.0.4.12"]
    assert "127.0.4.11" in r
    assert "127.0.4.13" not in r
    assert "not an ip" not in r


@pytest.mark.parametrize("text", ["10.0.0.1", "127.0.0.20-10", "nonsense", "127.0.0.1-300"])
def test_address_range_rejects(text):
    with pytest.raises(ConfigError):
        AddressRange.parse(text)


def test_layout_refuses_control_address_inside_pod_range(tmp_path):
    with pytest.raises(ConfigError, match="inside the pod addresses"):
        DemoLayout(tmp_path, control_address="127.0.0.10")


def test_layout_paths_and_addresses(tmp_path):
    layout = DemoLayout(tmp_path, control_address="127.0.4.1")
    assert layout.pilot_url == "http://127.0.4.1:15080"
    assert layout.pilot_xds == "127.0.4.1:15010"
    assert layout.gateway_address == "127.0.4.1"
    assert layout.token_file == tmp_path / "config" / ".pymesh-token"
    assert layout.log_file("pilot") == tmp_path / "logs" / "pilot.log"


def test_layout_of_running_reads_the_state_file(tmp_path: Path):
    assert DemoLayout.of_running(tmp_path) == DemoLayout(tmp_path)
    state = DemoState(
        run_dir=str(tmp_path),
        supervisor_pid=1,
        phase="running",
        control_address="127.0.4.2",
        pilot_xds="127.0.4.2:16010",
        pilot_api="http://127.0.4.2:16080",
        pod_addresses="127.0.4.50-127.0.4.89",
    )
    write_state(tmp_path / "state.json", state)
    layout = DemoLayout.of_running(tmp_path)
    assert layout.control_address == "127.0.4.2"
    assert (layout.pilot_xds_port, layout.pilot_api_port) == (16010, 16080)
    assert layout.pod_addresses == AddressRange("127.0.4.50", "127.0.4.89")


def _demo_args(*argv: str):
    import argparse

    from pymesh.cli import demo

    parser = argparse.ArgumentParser()
    parser.add_argument("--log-level", default="info")
    demo.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "mtls"),
    [
        ((), True),  # Istio's default: sidecars talk mTLS with no flag
        (("--mtls",), True),
        (("up",), True),
        (("--no-mtls",), False),
        (("up", "--no-mtls"), False),
        (("--netns",), True),  # each captured pod's agent runs in its namespace
        (("up", "--netns", "--no-mtls"), False),
    ],
)
def test_mesh_mtls_is_the_demo_default(tmp_path, argv, mtls):
    from pymesh.cli import demo

    args = _demo_args("--run-dir", str(tmp_path), *argv)
    assert demo._layout(args).mtls is mtls
    if args.demo_command == "up":
        # `demo up` starts `demo run` in the background with the same choice.
        background = _demo_args(*demo._up_argv(args)[3:])
        assert demo._layout(background).mtls is mtls
