"""The Telemetry API where mixer enforces it: Istio's documentation examples, written into the
directory mixer watches, change the metrics and the recent log of the workloads they select
(and of those workloads only)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mixer.server import Mixer
from tests.mixer.als_client import batch, http_entry, identifier, stream
from tests.mixer.harness import get_json, get_text, running_mixer, samples, url, wait_until
from tests.support import TELEMETRY_NET, address

HOST = address(TELEMETRY_NET, 112)
OBS = (
    Path(__file__).resolve().parents[2].parent / "shared/istio-samples/docs-extracted/observability"
)
SLEEP, HTTPBIN = "127.0.7.60", "127.0.7.61"


@pytest.fixture
async def mixer(tmp_path: Path) -> AsyncIterator[Mixer]:
    if not OBS.is_dir():
        pytest.skip(f"{OBS} not found")
    async with running_mixer(HOST, config_dir=str(tmp_path), peer_wait=0.2) as m:
        yield m


async def apply(mixer: Mixer, *names: str) -> None:
    assert mixer.telemetry is not None and mixer.telemetry.watch is not None
    for name in names:
        shutil.copy(OBS / name, mixer.telemetry.watch.root / Path(name).name)
    assert await mixer.telemetry.watch.check(), "the change was not picked up"


async def traffic(mixer: Mixer, n: int = 2, code: int = 200) -> None:
    """sleep calls httpbin ``n`` times; both sidecars report."""
    await stream(
        HOST,
        mixer,
        [
            identifier("httpbin-1", HTTPBIN, "httpbin", "v1").SerializeToString(),
        ],
    )
    out = batch(*(http_entry(f"{HTTPBIN}:8000", code) for _ in range(n)))
    for e in out.http_logs.log_entry:
        e.common_properties.upstream_cluster = "outbound|8000||httpbin.default.svc.cluster.local"
        e.request.authority = "httpbin:8000"
    inbound = batch(*(http_entry(f"{HTTPBIN}:8000", code) for _ in range(n)))
    for e in inbound.http_logs.log_entry:
        e.common_properties.upstream_cluster = "inbound|8000||"
        addr = e.common_properties.downstream_direct_remote_address.socket_address
        addr.address, addr.port_value = SLEEP, 40000
        local = e.common_properties.downstream_local_address.socket_address
        local.address, local.port_value = HTTPBIN, 15006
        e.request.authority = "httpbin:8000"
    await stream(
        HOST,
        mixer,
        [identifier("sleep-1", SLEEP, "sleep", "v1").SerializeToString(), out.SerializeToString()],
    )
    await stream(
        HOST,
        mixer,
        [
            identifier("httpbin-1", HTTPBIN, "httpbin", "v1").SerializeToString(),
            inbound.SerializeToString(),
        ],
    )


async def exposition(mixer: Mixer, at_least: int) -> str:
    async def counted() -> str | None:
        _, text = await get_text(url(mixer, "metrics", "/metrics"))
        n = sum(v for _, v in samples(text, "mixer_als_entries_total"))
        return text if n >= at_least else None

    text: str = await wait_until(counted, f"{at_least} entries")
    return text


def requests(text: str, **want: str) -> list[dict[str, str]]:
    return [
        lab
        for lab, _ in samples(text, "istio_requests_total")
        if all(lab.get(k) == v for k, v in want.items())
    ]


async def test_remove_a_tag(mixer: Mixer) -> None:
    await apply(mixer, "metrics-telemetry-api/1-telemetry-remove-tags.yaml")
    await traffic(mixer)
    text = await exposition(mixer, 4)
    for reporter in ("source", "destination"):
        [labels] = requests(text, reporter=reporter)
        assert "grpc_response_status" not in labels and labels["response_code"] == "200"
    # only REQUEST_COUNT was overridden: the other metrics keep Istio's labels
    durations = samples(text, "istio_request_duration_milliseconds_count")
    assert all("grpc_response_status" in lab for lab, _ in durations)


async def test_add_tags_with_cel_per_direction(mixer: Mixer) -> None:
    await apply(mixer, "metrics-telemetry-api/2-telemetry-custom-tags.yaml")
    await traffic(mixer)
    text = await exposition(mixer, 4)
    [client] = requests(text, reporter="source")
    assert client["destination_x"] == "httpbin"  # upstream_peer.labels['app'].value
    assert "source_x" not in client
    [server] = requests(text, reporter="destination")
    assert server["source_x"] == "sleep"  # downstream_peer.labels['app'].value
    durations = samples(text, "istio_request_duration_milliseconds_count")
    assert all("destination_x" not in lab for lab, _ in durations)


async def test_disable_request_count_for_clients_only(mixer: Mixer) -> None:
    await apply(mixer, "metrics-telemetry-api/5-telemetry-remove-client.yaml")
    await traffic(mixer)
    text = await exposition(mixer, 4)
    assert requests(text, reporter="source") == []
    assert len(requests(text, reporter="destination")) == 1
    durations = samples(text, "istio_request_duration_milliseconds_count")
    assert {lab["reporter"] for lab, _ in durations} == {"source", "destination"}


async def test_namespace_tag_overrides_from_the_docs(mixer: Mixer) -> None:
    await apply(mixer, "customize-metrics/1-telemetry-namespace-metrics-tag-overrides.yaml")
    await traffic(mixer)
    text = await exposition(mixer, 4)
    for reporter, port in (("source", "8000"), ("destination", "8000")):
        [lab] = requests(text, reporter=reporter)
        assert lab["request_host"] == "httpbin:8000"
        assert lab["destination_port"] == port


async def test_access_logging_disabled_and_filtered(mixer: Mixer) -> None:
    await apply(mixer, "logs-telemetry-api/2-telemetry-disable-sleep-logging.yaml")
    await traffic(mixer)
    await exposition(mixer, 4)
    logs = await get_json(url(mixer, "dashboard", "/api/logs"))
    # sleep's own reports are not kept; httpbin's are, and metrics still count both
    assert [e["reporter"] for e in logs] == ["destination", "destination"]
    await apply(mixer, "logs-telemetry-api/4-telemetry-filter-sleep-logging.yaml")
    (mixer.telemetry.watch.root / "2-telemetry-disable-sleep-logging.yaml").unlink()
    assert await mixer.telemetry.watch.check()
    await traffic(mixer, code=503)
    await traffic(mixer, code=200)
    await exposition(mixer, 12)
    sleep_logs = await get_json(url(mixer, "dashboard", "/api/logs?workload=sleep-v1"))
    assert [e["response_code"] for e in sleep_logs] == [503, 503]  # response.code >= 500


async def test_a_broken_directory_keeps_the_last_good_policy(mixer: Mixer) -> None:
    await apply(mixer, "metrics-telemetry-api/5-telemetry-remove-client.yaml")
    bad = mixer.telemetry.watch.root / "bad.yaml"
    bad.write_text(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: b}\n"
        "spec: {accessLogging: [{filter: {expression: 'response.code >>'}}]}\n"
    )
    assert not await mixer.telemetry.watch.check()
    assert "CEL" in (mixer.telemetry.watch.error or "")
    await traffic(mixer)
    text = await exposition(mixer, 4)
    assert requests(text, reporter="source") == []
