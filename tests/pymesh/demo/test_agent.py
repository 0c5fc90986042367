"""Where a pod's identity agent finds its token and mesh root and serves its socket: the
demo's user's files in process mode, a directory only the sidecar's uid may enter for a
captured pod; the demo's end removes them all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pymesh.demo.agent import agent_files, remove_pod_dir, remove_sds_root, sds_root
from pymesh.demo.layout import AddressRange, DemoLayout
from pymesh.demo.netns import NetnsPlan


def _layout(tmp_path: Path) -> DemoLayout:
    layout = DemoLayout(tmp_path / "run")
    layout.ca_dir.mkdir(parents=True)
    (layout.ca_dir / "root-cert.pem").write_text("ROOT\n", encoding="ascii")
    return layout


def test_the_ca_is_on_the_bridge_in_netns_mode(tmp_path: Path) -> None:
    plan = NetnsPlan.parse("pmt-", "10.250.0.0/24")
    netns = DemoLayout(
        tmp_path, control_address="127.0.64.1", pod_addresses=AddressRange(*plan.pod_addresses()),
        netns=plan,
    )  # fmt: skip
    assert netns.ca_address == "10.250.0.1:15012"
    assert DemoLayout(tmp_path, control_address="127.0.64.1").ca_address == "127.0.64.1:15012"


def test_a_process_mode_agent_keeps_its_token_in_the_run_directory(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    try:
        files = agent_files(layout, "httpbin.default", "default", "httpbin")
        assert files.token == layout.run_dir / "identity/httpbin.default/token"
        assert files.root_cert == layout.ca_dir / "root-cert.pem"
        assert files.socket.parent == sds_root(layout)
        assert stat.S_IMODE(sds_root(layout).stat().st_mode) == 0o700
        assert stat.S_IMODE(files.token.stat().st_mode) == 0o600
    finally:
        remove_sds_root(layout)
    assert not sds_root(layout).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="handing files to uid 1337 needs root")
def test_a_captured_pods_agent_gets_a_directory_only_its_uid_enters(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    try:
        files = agent_files(layout, "httpbin.default", "default", "httpbin", uid=1337)
        home = files.socket.parent
        assert home == sds_root(layout) / "httpbin.default"
        assert stat.S_IMODE(sds_root(layout).stat().st_mode) == 0o711  # enter, not list
        assert (home.stat().st_uid, stat.S_IMODE(home.stat().st_mode)) == (1337, 0o700)
        for path in (files.token, files.root_cert):
            assert path.parent == home
            assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (1337, 0o600)
        assert files.root_cert.read_text(encoding="ascii") == "ROOT\n"
        # A new agent for the pod starts from a clean directory.
        (home / "socket").write_text("stale", encoding="ascii")
        agent_files(layout, "httpbin.default", "default", "httpbin", uid=1337)
        assert not (home / "socket").exists()
        remove_pod_dir(layout, "httpbin.default")
        assert not home.exists() and sds_root(layout).exists()
    finally:
        remove_sds_root(layout)
    assert not sds_root(layout).exists()
