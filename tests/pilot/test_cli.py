"""The ``pymesh`` subcommands that talk to pilot, run against an in-process pilot on
127.0.3.170 (the commands block on urllib, so they run in a thread), plus ``pymesh pilot``'s
own argument handling and the offline ``analyze -f``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from pilot.server import Pilot, PilotSettings
from pilot.xds import DebounceConfig
from pymesh.cli.pilot_client import read_inputs
from pymesh.cli.tables import render_table
from tests.pilot.xds.ads_client import AdsClient, istio_node
from tests.support.waiting import wait_until

HOST = "127.0.3.170"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
"""
VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"""


def run_cli(command: str, argv: list[str]) -> int:
    """Parse ``argv`` for one subcommand module and run it (what ``pymesh`` does)."""
    from pymesh.cli.main import COMMANDS

    module = importlib.import_module(COMMANDS[command][0])
    parser = argparse.ArgumentParser(prog=f"pymesh {command}")
    module.add_arguments(parser)
    rc: int = module.run(parser.parse_args(argv))
    return rc


class Cli:
    def __init__(self, pilot: Pilot, config_dir: Path, capsys: pytest.CaptureFixture[str]):
        self.pilot = pilot
        self.config_dir = config_dir
        self.capsys = capsys
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
    (config_dir / "base.yaml").write_text(SERVICE)
    pilot = Pilot(
        PilotSettings(
            config_dir=config_dir,
            xds_address=f"{HOST}:0",
            api_address=f"{HOST}:0",
            debounce=DebounceConfig(quiet=0.01, max_delay=0.05),
            poll_interval=3600,
        )
    )
    # The in-process pilot's logs would land in the captured stdout of the commands.
    with structlog.testing.capture_logs():
        await pilot.start()
        yield Cli(pilot, config_dir, capsys)
        await pilot.stop()


async def test_apply_get_delete_round_trip(cli: Cli, tmp_path: Path) -> None:
    vs = tmp_path / "vs.yaml"
    vs.write_text(VS.format(subset="v1"))
    assert await cli("apply", "-f", str(vs)) == (
        0,
        "virtualservice.networking.istio.io/reviews created\n",
        "",
    )
    rc, out, _ = await cli("apply", "-f", str(vs))
    assert out == "virtualservice.networking.istio.io/reviews unchanged\n"
    rc, out, _ = await cli("get", "vs")
    assert rc == 0
    assert out.splitlines() == [
        "NAME      GATEWAYS   HOSTS",
        'reviews   ["mesh"]   ["reviews"]',
    ]
    rc, out, _ = await cli("get", "vs", "-A", "-o", "wide")
    assert out.splitlines()[0].split() == ["NAMESPACE", "NAME", "GATEWAYS", "HOSTS", "SOURCE"]
    rc, out, _ = await cli("get", "vs", "-o", "name")
    assert out == "virtualservice.networking.istio.io/reviews\n"
    rc, out, _ = await cli("get", "vs", "-o", "jsonpath={.items[0].spec.hosts[0]}")
    assert out == "reviews"
    rc, out, err = await cli("get", "vs", "-n", "other")
    assert (rc, out, err) == (0, "", "No resources found in other namespace.\n")
    rc, out, _ = await cli("get", "virtualservice", "reviews", "-o", "yaml")
    doc = yaml.safe_load(out)
    assert doc["kind"] == "VirtualService" and "_source" not in doc
    rc, out, _ = await cli("get", "dr", "-o", "json")
    assert json.loads(out)["items"][0]["spec"]["host"] == "reviews"
    # get, delete and apply name objects alike (kubectl's words).
    not_found = 'virtualservices.networking.istio.io "ghost" not found in namespace default'
    rc, out, err = await cli("get", "vs", "ghost")
    assert rc == 1 and err == f"error: {not_found}\n"
    rc, out, err = await cli("apply", "-f", str(vs), "--dry-run=server")
    assert out == "virtualservice.networking.istio.io/reviews unchanged (server dry run)\n"
    assert await cli("delete", "-f", str(vs)) == (
        0,
        'virtualservice.networking.istio.io "reviews" deleted\n',
        "",
    )
    rc, out, err = await cli("delete", "vs", "ghost")
    assert rc == 1 and err == f"error: {not_found}\n"
    rc, out, err = await cli("delete", "dr", "reviews")
    assert rc == 1 and "which pymesh apply did not write" in err
    rc, out, err = await cli("get", "vs")
    assert (out, err) == ("", "No resources found in default namespace.\n")
    # A dry run stores nothing: on pilot's side (server) or without pilot at all (client).
    rc, out, _ = await cli("apply", "-f", str(vs), "--dry-run=server")
    assert out == "virtualservice.networking.istio.io/reviews created (server dry run)\n"
    rc, out, _ = await cli("apply", "-f", str(vs), "--dry-run=client", "--pilot", "http://x:1")
    assert out == "virtualservice.networking.istio.io/reviews created (dry run)\n"
    rc, out, err = await cli("get", "vs")
    assert (out, err) == ("", "No resources found in default namespace.\n")


async def test_apply_a_directory_and_stdin(cli: Cli, tmp_path: Path, monkeypatch) -> None:
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "vs.yaml").write_text(VS.format(subset="v1"))
    (d / "gw.yml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\n"
        "spec:\n  selector: {istio: ingressgateway}\n  servers:\n"
        "  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n"
    )
    rc, out, err = await cli("apply", "-f", str(d))
    assert rc == 0, err
    assert sorted(out.splitlines()) == [
        "gateway.networking.istio.io/gw created",
        "virtualservice.networking.istio.io/reviews created",
    ]
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(VS.format(subset="v1")))
    rc, out, _ = await cli("apply", "-f", "-")
    assert out == "virtualservice.networking.istio.io/reviews unchanged\n"


async def test_errors_are_one_line_and_nonzero(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(VS.format(subset="v1") + "      weight: -1\n")
    rc, out, err = await cli("apply", "-f", str(bad))
    assert rc == 1 and out == ""
    assert err == (
        f"error: {bad}: document 0: spec.http[0].route[0].weight: weight -1 must not be "
        "negative (line 9)\n"
    )
    rc, _, err = await cli("apply", "-f", str(tmp_path / "missing.yaml"))
    assert rc == 1 and err.count("\n") == 1 and "no such file or directory" in err
    rc, _, err = await cli("get", "widgets")
    assert rc == 1 and err == 'error: the server doesn\'t have a resource type "widgets"\n'
    # No token anywhere; a wrong token; no pilot.
    rc = await asyncio.to_thread(run_cli, "get", ["vs", "--pilot", cli.conn[1]])
    err = cli.capsys.readouterr().err
    assert rc == 1 and err.startswith("error: no token for pilot")
    rc = await asyncio.to_thread(run_cli, "get", ["vs", "--pilot", cli.conn[1], "--token", "x"])
    assert rc == 1 and cli.capsys.readouterr().err == "error: missing or wrong bearer token\n"
    rc = await asyncio.to_thread(
        run_cli, "get", ["vs", "--pilot", f"http://{HOST}:1", "--token", "x"]
    )
    err = cli.capsys.readouterr().err
    assert rc == 1 and err.startswith(f"error: cannot reach pilot at http://{HOST}:1")


async def test_proxy_status_and_proxy_config(cli: Cli) -> None:
    rc, out, _ = await cli("proxy-status")
    assert (rc, out) == (0, "No proxies connected.\n")
    node = istio_node("productpage-v1-abc-2", ip="127.0.3.171", labels={"app": "productpage"})
    async with AdsClient(f"{HOST}:{cli.pilot.xds_port}", node) as client:
        await client.send(CLUSTER_TYPE)
        await client.ack(await client.recv())

        async def synced() -> str | None:
            _, out, _ = await cli("proxy-status")
            return out if "SYNCED" in out else None

        out = await wait_until(synced, "pilot recorded the ACK")
        header, row = out.splitlines()[:2]
        assert header.split() == ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "PILOT", "VERSION"]
        assert row.split()[:6] == [
            "productpage-v1-abc-2.default", "productpage-v1-abc-2.default",
            "SYNCED", "NOT", "SENT", "NOT",
        ]  # fmt: skip
        rc, out, _ = await cli("proxy-status", "productpage-v1-abc-2", "-o", "json")
        assert json.loads(out)["proxies"][0]["types"]["CDS"]["status"] == "SYNCED"
        rc, out, _ = await cli("proxy-config", "clusters", "productpage-v1-abc-2.default")
        assert rc == 0
        lines = out.splitlines()
        assert lines[0].split() == [
            "SERVICE",
            "FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "TYPE",
            "DESTINATION",
            "RULE",
        ]
        row = next(ln for ln in lines if "reviews.default.svc.cluster.local" in ln and " v1 " in ln)
        assert row.split() == [
            "reviews.default.svc.cluster.local",
            "9080",
            "v1",
            "outbound",
            "EDS",
            "reviews.default",
        ]
        rc, out, _ = await cli("proxy-config", "clusters", "127.0.3.171", "-o", "json")
        assert any(c["name"].startswith("outbound|9080|v1|") for c in json.loads(out))
        rc, _, err = await cli("proxy-config", "routes", "nobody")
        assert rc == 1 and "not connected" in err
        rc, _, err = await cli("proxy-status", "nobody")
        assert rc == 1 and "not connected" in err


async def test_analyze_via_pilot_and_offline(cli: Cli, tmp_path: Path) -> None:
    rc, out, _ = await cli("analyze")
    assert rc == 0 and out.startswith("\u2714 No validation issues found")
    vs = tmp_path / "vs.yaml"
    vs.write_text(VS.format(subset="v7"))
    await cli("apply", "-f", str(vs))
    rc, out, _ = await cli("analyze")
    assert rc == 79 and "IST0101" in out and "reviews+v7" in out
    # Offline: only the files given, no pilot needed.
    args = ["analyze", "-f", str(vs), "-f", str(cli.config_dir / "base.yaml")]
    cli.capsys.readouterr()
    rc = await asyncio.to_thread(run_cli, args[0], args[1:])
    out = cli.capsys.readouterr().out
    assert rc == 79 and "Error [IST0101] (VirtualService default/reviews" in out
    # What apply would warn about is reported too, without failing the analysis.
    tls_route = tmp_path / "tls.yaml"
    tls_route.write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: pass}\n"
        "spec:\n  hosts: [reviews]\n  tls:\n  - match: [{sniHosts: [reviews]}]\n"
        "    route: [{destination: {host: reviews}}]\n"
    )
    base = str(cli.config_dir / "base.yaml")
    rc = await asyncio.to_thread(run_cli, "analyze", ["-f", str(tls_route), "-f", base])
    out = cli.capsys.readouterr().out
    assert rc == 0 and out.startswith(f"Warning {tls_route}") and "tls" in out, out


def test_read_inputs_and_tables(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("x: 1\n")
    (tmp_path / ".hidden.yaml").write_text("x: 2\n")
    (tmp_path / "b.txt").write_text("x: 3\n")
    assert [s for s, _ in read_inputs([str(tmp_path)])] == [str(tmp_path / "a.yaml")]
    assert render_table(("A", "LONG"), [("xx", "1"), ("y", "")]) == "A    LONG\nxx   1\ny"


def test_pilot_command_refuses_a_missing_config_dir(tmp_path: Path, capsys: Any) -> None:
    rc = run_cli(
        "pilot",
        [
            "--config-dir",
            str(tmp_path / "nope"),
            "--xds-address",
            f"{HOST}:0",
            "--api-address",
            f"{HOST}:0",
        ],
    )
    assert rc == 1
    assert (
        capsys.readouterr().err == f"error: {tmp_path / 'nope'}: config directory does not exist\n"
    )
