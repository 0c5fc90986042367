"""The real Prometheus server (Debian ``prometheus``) on loopback with a generated config, its
HTTP query API, and ``promtool check metrics``.

Each test starts its own server with its own TSDB directory and a short scrape interval; the
server is stopped at teardown like every other child process.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.procs import ManagedProcess, async_wait_for_http, free_port

__all__ = ["PrometheusServer", "find_prometheus", "promtool_check_metrics"]


def find_prometheus() -> str | None:
    return shutil.which("prometheus")


def promtool_check_metrics(exposition: str) -> tuple[int, list[str]]:
    """(exit code, findings) of ``promtool check metrics``: 0 clean, 3 lint findings only,
    1 the exposition does not parse."""
    binary = shutil.which("promtool")
    if binary is None:
        raise FileNotFoundError("promtool not found (Debian package prometheus)")
    done = subprocess.run(
        [binary, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = [ln for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    return done.returncode, lines


class PrometheusServer:
    """``prometheus`` scraping ``jobs`` ({job: [host:port, ...]}) every ``interval``."""

    def __init__(
        self,
        host: str,
        workdir: Path,
        jobs: Mapping[str, Sequence[str]],
        *,
        interval: str = "1s",
        metrics_path: str = "/metrics",
    ) -> None:
        binary = find_prometheus()
        if binary is None:
            raise FileNotFoundError("prometheus not found (Debian package prometheus)")
        self.host = host
        self.port = free_port(host)
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": metrics_path,
                    "static_configs": [{"targets": list(targets)}],
                }
                for job, targets in jobs.items()
            ],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.proc = ManagedProcess(
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={host}:{self.port}",
                "--log.level=warn",
            ],
            log_path=workdir / "prometheus.log",
            name="prometheus",
            die_with_parent=False,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, timeout: float = 30.0) -> PrometheusServer:
        self.proc.start()
        await async_wait_for_http(self.host, self.port, "/-/ready", timeout, proc=self.proc)
        return self

    def stop(self) -> None:
        self.proc.stop()

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        target = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(target, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        if body.get("status") != "success":
            raise AssertionError(f"{params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """The instant vector (or scalar as one sample) of ``expr``."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = await asyncio.to_thread(self._get, "/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    async def targets_up(self) -> list[dict[str, Any]]:
        data = await asyncio.to_thread(self._get, "/api/v1/targets", {"state": "active"})
        return [t for t in data["activeTargets"] if t["health"] == "up"]
