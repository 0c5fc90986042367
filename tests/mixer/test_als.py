"""The access-log stream at its gRPC seam: malformed, oversized and anonymous messages are
counted and dropped while the stream and mixer keep going; a peer that names itself after
its caller's report still gets that report labelled; one that never does shows as unknown."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mixer.server import Mixer
from tests.mixer.als_client import batch, http_entry, identifier, stream
from tests.mixer.harness import get_json, get_text, running_mixer, sample_value, url, wait_until
from tests.support import TELEMETRY_NET, address

HOST = address(TELEMETRY_NET, 111)


@pytest.fixture
async def mixer() -> AsyncIterator[Mixer]:
    async with running_mixer(HOST, max_message_bytes=64 * 1024, peer_wait=0.5) as m:
        yield m


async def metrics(mixer: Mixer) -> str:
    status, text = await get_text(url(mixer, "metrics", "/metrics"))
    assert status == 200
    return text


async def test_bad_messages_are_counted_and_dropped_and_the_stream_goes_on(mixer: Mixer) -> None:
    huge = batch(*(http_entry("127.0.7.50:9080", path="/" + "x" * 1000) for _ in range(100)))
    await stream(
        HOST,
        mixer,
        [
            batch(http_entry("127.0.7.50:9080")).SerializeToString(),  # before any identifier
            identifier("productpage-v1-1", "127.0.7.40", "productpage", "v1").SerializeToString(),
            b"\xff\xff\xff not protobuf",
            huge.SerializeToString(),
            batch(http_entry("127.0.7.50:9080"), http_entry("127.0.7.50:9080", 503))
            .SerializeToString(),
        ],
    )  # fmt: skip
    text = await wait_until(
        lambda: _when(metrics(mixer), "mixer_als_unknown_peers_total", 2), "unknown peers"
    )
    assert sample_value(text, "mixer_als_dropped_total", reason="no_identifier") == 1
    assert sample_value(text, "mixer_als_dropped_total", reason="malformed") == 1
    assert sample_value(text, "mixer_als_dropped_total", reason="too_large") == 1
    assert sample_value(text, "mixer_als_entries_total", type="http") == 2
    # the two good entries are in, with the peer nobody has named: unknown, as Istio shows it
    assert (
        sample_value(
            text,
            "istio_requests_total",
            reporter="source",
            source_workload="productpage-v1",
            destination_workload="unknown",
            destination_service="reviews.default.svc.cluster.local",
        )
        == 2
    )
    # mixer keeps serving: a new stream from the same proxy is taken as usual
    await stream(
        HOST,
        mixer,
        [
            identifier("productpage-v1-1", "127.0.7.40", "productpage", "v1").SerializeToString(),
            batch(http_entry("127.0.7.50:9080")).SerializeToString(),
        ],
    )
    await wait_until(
        lambda: _when(metrics(mixer), "mixer_als_unknown_peers_total", 3), "third report"
    )


async def test_a_peer_that_names_itself_later_still_labels_the_report(mixer: Mixer) -> None:
    await stream(
        HOST,
        mixer,
        [
            identifier("productpage-v1-1", "127.0.7.40", "productpage", "v1").SerializeToString(),
            batch(http_entry("127.0.7.41:15006")).SerializeToString(),
        ],
    )
    # the callee's sidecar opens its stream after the caller's report arrived
    await stream(
        HOST, mixer, [identifier("reviews-v2-1", "127.0.7.41", "reviews", "v2").SerializeToString()]
    )
    text = await wait_until(
        lambda: _when(metrics(mixer), "istio_requests_total", 1), "the held report"
    )
    assert sample_value(
        text, "istio_requests_total", source_workload="productpage-v1",
        destination_workload="reviews-v2", destination_version="v2",
    ) == 1  # fmt: skip
    assert sample_value(text, "mixer_als_unknown_peers_total") == 0
    logs = await get_json(url(mixer, "dashboard", "/api/logs?workload=productpage-v1.default"))
    assert [e["destination_workload"] for e in logs] == ["reviews-v2"]


async def _when(text_coro: object, name: str, at_least: float) -> str | None:
    text = await text_coro  # type: ignore[misc]
    assert isinstance(text, str)
    return text if sample_value(text, name) >= at_least else None
