"""kubectl's and istioctl's habits that need no running mesh: help, versions, usage errors,
selectors, jsonpath, ages, pod names, and what ``exec`` runs for a container's programs."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from pymesh import __version__
from pymesh.cli import main as cli
from pymesh.cli.context import find_pod
from pymesh.cli.exec import pod_environment, stand_in_command
from pymesh.cli.get import select
from pymesh.cli.jsonpath import render
from pymesh.cli.objects import age
from pymesh.demo.state import DemoState, PodState
from pymesh.errors import ControlPlaneError, ValidationError


@pytest.fixture(autouse=True)
def no_demo(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # main() sets up logging for the process; here that would bind structlog to this
    # test's captured stderr, which is closed once the test ends.
    monkeypatch.setattr("pymesh.log.configure", lambda *args, **kwargs: None)
    for var in ("PYMESH_PILOT", "PYMESH_TOKEN", "PYMESH_CONFIG_DIR", "PYMESH_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PYMESH_DEMO_DIR", str(tmp_path / "no-demo"))


@pytest.mark.parametrize("argv", [[], ["help"], ["--help"]])
def test_bare_pymesh_and_help_list_the_commands(argv, capsys) -> None:
    with pytest.raises(SystemExit) if argv == ["--help"] else _nothing():
        assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for command in ("demo", "apply", "get", "describe", "exec", "proxy-config", "version"):
        assert f"    {command}" in out


def test_help_for_one_command(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["help", "get"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: pymesh get ")


def test_usage_errors_print_the_commands_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["get"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: pymesh get ")
    assert "error: the following arguments are required: kind" in err
    assert "See 'pymesh get --help' for more." in err
    with pytest.raises(SystemExit):
        cli.main(["proxy-config"])
    assert capsys.readouterr().err.startswith("usage: pymesh proxy-config ")
    # An option the command does not know: still the command's usage, not pymesh's.
    with pytest.raises(SystemExit) as exc:
        cli.main(["get", "pods", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: pymesh get ")
    assert "error: unrecognized arguments: --bogus" in err


def test_version_without_a_pilot(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYMESH_PILOT", "http://127.0.12.250:1")
    monkeypatch.setenv("PYMESH_TOKEN", "x")
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"client version: {__version__}"
    assert out[1].startswith("control plane version: unknown (cannot reach pilot")
    assert cli.main(["version", "--client"]) == 0
    assert capsys.readouterr().out == f"client version: {__version__}\n"


def test_exec_needs_the_command_after_dashes(capsys) -> None:
    assert cli.main(["exec", "sleep", "-n", "default"]) == 2
    assert "after --" in capsys.readouterr().err
    # No demo running: said, with what to do.
    assert cli.main(["exec", "sleep", "-c", "sleep", "--", "curl", "-n", "x"]) == 1
    assert "pymesh demo up" in capsys.readouterr().err


def test_selectors() -> None:
    labels = {"app": "reviews", "version": "v2"}
    assert select(labels, "app=reviews") and select(labels, "app==reviews,version!=v1")
    assert select(labels, "version") and select(labels, "!missing")
    assert not select(labels, "app=ratings") and not select(labels, "!version")


def test_jsonpath() -> None:
    doc = {
        "items": [{"metadata": {"name": "a", "labels": {"app": "x"}}}, {"metadata": {"name": "b"}}]
    }
    assert render("{.items[0].metadata.name}", doc) == "a"
    assert render("{.items[*].metadata.name}", doc) == "a b"
    assert render('{.items[-1].metadata.name}{"\\n"}', doc) == "b\n"
    assert render("name={.items[0].metadata.labels}", doc) == 'name={"app": "x"}'
    with pytest.raises(ValidationError):
        render("{.items[5].metadata}", doc)
    with pytest.raises(ValidationError):
        render("{items}", doc)


def test_ages_as_kubectl_prints_them() -> None:
    now = 1_000_000.0
    cases = {45: "45s", 200: "3m20s", 1500: "25m", 4 * 3600 + 600: "4h10m", 20 * 3600: "20h",
             3 * 86400 + 4 * 3600: "3d4h", 9 * 86400: "9d"}  # fmt: skip
    assert {s: age(now - s, now) for s in cases} == cases
    assert age(0.0, now) == "<unknown>"


def test_pod_names() -> None:
    pods = (
        PodState("reviews-v1", "default", "127.0.0.14", "app", "n", owner="Deployment/reviews-v1"),
        PodState("sleep", "default", "127.0.0.17", "client", "n"),
        PodState("sleep", "other", "127.0.0.18", "client", "n"),
    )
    state = DemoState("/r", 1, "running", "127.0.0.1", "x", "y", pods=pods)
    assert find_pod(state, "sleep", None).namespace == "default"
    assert find_pod(state, "sleep", "other").ip == "127.0.0.18"
    assert find_pod(state, "sleep.other", None).ip == "127.0.0.18"
    assert find_pod(state, "deploy/reviews-v1", None).name == "reviews-v1"
    assert find_pod(state, "pod/sleep", None).name == "sleep"
    with pytest.raises(ControlPlaneError, match='pods "ghost" not found in namespace default'):
        find_pod(state, "ghost", None)


def test_a_containers_programs_stand_in() -> None:
    assert stand_in_command(["/usr/bin/fortio", "load", "x"])[1:] == [
        "-m", "pymesh.samples.fortio", "load", "x",
    ]  # fmt: skip
    assert stand_in_command(["pilot-agent", "request"])[:3] == [
        sys.executable, "-m", "pymesh.samples.pilot_agent",
    ]  # fmt: skip
    assert stand_in_command(["python3", "-c", "1"]) == [sys.executable, "-c", "1"]
    assert stand_in_command(["ls", "-l"]) == ["ls", "-l"]


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_exec_gives_a_pod_without_a_sidecar_the_states_service_proxy() -> None:
    """``pymesh exec`` into a netns pod: without a sidecar (Istio's ``legacy``) its calls go
    to the service proxy the demo's state names (on the bridge); a captured pod with a
    sidecar gets no proxy, iptables takes its traffic."""
    written = DemoState(
        run_dir="/run", supervisor_pid=1, phase="running", control_address="127.0.64.1",
        pilot_xds="", pilot_api="", netns_prefix="pm-", netns_subnet="10.250.0.0/24",
        service_proxy="10.250.0.1:15081",
    )  # fmt: skip
    state = DemoState.from_json(written.to_json())
    legacy = PodState(name="sleep", namespace="legacy", ip="10.250.0.9", role="app",
                      node_id="", netns="pm-p9", sidecar=False)  # fmt: skip
    env = pod_environment(legacy, "sleep", state.service_proxy)
    assert env["HTTP_PROXY"] == "http://10.250.0.1:15081"
    captured = dataclasses.replace(legacy, namespace="foo", sidecar=True)
    assert "HTTP_PROXY" not in pod_environment(captured, "sleep", state.service_proxy)
