"""kubectl's namespace habits on pymesh: ``apply -n`` / ``delete -n`` with Istio's files that
name no namespace, ``create namespace``, ``label namespace`` (against an in-process pilot on
the identity area's 127.0.6.150)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
import yaml

from pilot.server import Pilot, PilotSettings
from pilot.xds import DebounceConfig
from pymesh.cli.namespaces import label_changes
from tests.integration.demo_harness import istio_file
from tests.pilot.test_cli import run_cli
from tests.support import AUTH_NET, address

HOST = address(AUTH_NET, 150)
STRICT = "docs-extracted/security/mtls-migration/1-peerauthentication-foo-strict.yaml"


class Cli:
    def __init__(self, pilot: Pilot, config_dir: Path, capsys: pytest.CaptureFixture[str]):
        self.pilot, self.capsys = pilot, capsys
        self.conn = ["--pilot", f"http://{HOST}:{pilot.api_port}", "--config-dir", str(config_dir)]

    async def __call__(self, command: str, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        rc = await asyncio.to_thread(run_cli, command, [*args, *self.conn])
        out, err = self.capsys.readouterr()
        return rc, out, err


@pytest.fixture
async def cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cli]:
    for var in ("PYMESH_TOKEN", "PYMESH_PILOT", "PYMESH_CONFIG_DIR", "PYMESH_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    # No running demo is the current context here.
    monkeypatch.setenv("PYMESH_DEMO_DIR", str(tmp_path / "no-demo"))
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    pilot = Pilot(
        PilotSettings(
            config_dir=config_dir,
            xds_address=f"{HOST}:0",
            api_address=f"{HOST}:0",
            debounce=DebounceConfig(quiet=0.01, max_delay=0.05),
            poll_interval=3600,
        )
    )
    with structlog.testing.capture_logs():
        await pilot.start()
        yield Cli(pilot, config_dir, capsys)
        await pilot.stop()


async def test_apply_and_delete_with_namespace(cli: Cli) -> None:
    path = str(istio_file(STRICT))
    rc, out, err = await cli("apply", "-n", "foo", "-f", path)
    assert (rc, out) == (0, "peerauthentication.security.istio.io/default created\n"), err
    stored = cli.pilot.snapshot.get("PeerAuthentication", "foo", "default")
    assert stored is not None
    assert cli.pilot.snapshot.get("PeerAuthentication", "default", "default") is None
    # The same file into another namespace is another object.
    rc, out, _ = await cli("apply", "-n", "bar", "-f", path)
    assert out == "peerauthentication.security.istio.io/default created\n"
    rc, out, err = await cli("delete", "-n", "foo", "-f", path)
    assert (rc, out) == (0, 'peerauthentication.security.istio.io "default" deleted\n'), err
    assert cli.pilot.snapshot.get("PeerAuthentication", "foo", "default") is None
    assert cli.pilot.snapshot.get("PeerAuthentication", "bar", "default") is not None


async def test_namespace_mismatch_is_refused(cli: Cli) -> None:
    named = str(
        istio_file("docs-extracted/security/authn-policy/02-peerauthentication-foo-strict.yaml")
    )
    rc, out, err = await cli("apply", "-n", "bar", "-f", named)
    assert rc == 1 and out == ""
    assert 'the namespace from the provided object "foo" does not match the namespace "bar"' in err
    assert "--namespace=foo" in err
    assert cli.pilot.snapshot.get("PeerAuthentication", "foo", "default") is None


async def test_create_and_label_namespace(cli: Cli) -> None:
    assert await cli("create", "namespace", "foo") == (0, "namespace/foo created\n", "")
    rc, _, err = await cli("create", "namespace", "foo")
    assert rc == 1 and 'namespaces "foo" already exists' in err
    rc, out, err = await cli("label", "namespace", "foo", "istio-injection=enabled")
    assert (rc, out) == (0, "namespace/foo labeled\n"), err
    rc, out, _ = await cli("label", "namespace", "foo", "istio-injection=enabled")
    assert out == "namespace/foo not labeled\n"
    rc, _, err = await cli("label", "namespace", "foo", "istio-injection=disabled")
    assert rc == 1 and "already has a value (enabled), and --overwrite is false" in err
    rc, out, _ = await cli("label", "ns", "foo", "istio-injection=disabled", "--overwrite")
    assert out == "namespace/foo labeled\n"
    rc, out, _ = await cli("get", "namespace", "foo", "-o", "yaml")
    assert yaml.safe_load(out)["metadata"]["labels"] == {"istio-injection": "disabled"}
    rc, _, err = await cli("label", "namespace", "ghost", "a=b")
    assert rc == 1 and 'namespaces "ghost" not found' in err
    rc, _, err = await cli("label", "pod", "foo", "a=b")
    assert rc == 1 and "only namespaces" in err


def test_label_specs() -> None:
    assert label_changes({"a": "1"}, ["b=2", "a-"], overwrite=False) == {"b": "2"}
    assert label_changes({}, ["x="], overwrite=False) == {"x": ""}
    for bad in ("=v", "a b=c", "k=v v", "noequals"):
        with pytest.raises(ValueError, match="invalid label spec"):
            label_changes({}, [bad], overwrite=False)
