"""``pymesh apply`` of EnvoyFilters: a patch value Envoy's protos reject is refused with the
field named and nothing stored; a good one is stored, not reported as unenforced, and
``pymesh proxy-config`` shows the patched result (127.0.9.120)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pilot.generate import LISTENER_TYPE
from tests.integration.pilot_harness import SAMPLES, PilotProcess, register_pod
from tests.support import RATELIMIT_NET, address

BOOKINFO = SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo.yaml"
TASK = SAMPLES / "docs-extracted" / "policy" / "rate-limit"

pytestmark = pytest.mark.skipif(not BOOKINFO.is_file(), reason=f"no Istio samples in {SAMPLES}")

BAD = """\
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: bad, namespace: default}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND}
    patch:
      operation: INSERT_FIRST
      value:
        name: envoy.filters.http.ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
          domain: d
          failure_mode_denyy: true
"""


@pytest.mark.timeout(90)
async def test_apply_refuses_rejected_values_and_shows_applied_patches(tmp_path: Path) -> None:
    config_dir = tmp_path / "mesh"
    config_dir.mkdir()
    shutil.copy(BOOKINFO, config_dir / "bookinfo.yaml")
    pilot = PilotProcess(address(RATELIMIT_NET, 120), config_dir, tmp_path / "logs")
    await pilot.start()
    try:
        bad = tmp_path / "bad.yaml"
        bad.write_text(BAD)
        before = sorted(p.name for p in config_dir.rglob("*.yaml"))
        result = await pilot.cli("apply", "-f", str(bad))
        assert result.rc == 1, result
        assert "EnvoyFilter default/bad" in result.err
        assert "spec.configPatches[0].patch.value.typed_config.failure_mode_denyy" in result.err
        assert sorted(p.name for p in config_dir.rglob("*.yaml")) == before

        task = TASK / "6-envoyfilter-filter-local-ratelimit-svc.yaml"
        result = await pilot.cli("apply", "-f", str(task))
        assert result.rc == 0, result
        assert "not enforced" not in result.err
        client = await register_pod(
            pilot.xds, "productpage-v1-6b746f74dc-rl", address(RATELIMIT_NET, 121),
            {"app": "productpage", "version": "v1"},
        )  # fmt: skip
        try:
            await client.send(LISTENER_TYPE)  # proxy-config shows what the proxy was sent
            await client.recv(10.0)
            shown = await pilot.cli(
                "proxy-config", "listeners", "productpage-v1-6b746f74dc-rl", "-o", "json"
            )
        finally:
            await client.close()
        assert shown.rc == 0, shown
        inbound = next(d for d in json.loads(shown.out) if d["name"] == "virtualInbound")
        names = [
            f["name"]
            for chain in inbound["filter_chains"]
            for item in chain["filters"]
            if item["name"] == "envoy.filters.network.http_connection_manager"
            for f in item["typed_config"]["http_filters"]
        ]
        assert names[0] == "envoy.filters.http.local_ratelimit"
    finally:
        pilot.stop()
