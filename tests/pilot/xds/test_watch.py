"""The state-of-the-world decisions, as a table: (watch state, request) -> verdict."""

from __future__ import annotations

import pytest

from pilot.xds.watch import SyncStatus, Verdict, Watch, classify, requested_names

RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


def _sent(names: frozenset[str] = frozenset({"80"})) -> Watch:
    w = Watch(RDS, names=names, wildcard=False)
    w.sent(version="v1", nonce="n1", digest=b"d", resources=(), at=0.0)
    return w


@pytest.mark.parametrize(
    ("watch", "nonce", "error", "names", "verdict"),
    [
        (None, "", False, {"80"}, Verdict.INITIAL),
        (None, "n0", False, {"80"}, Verdict.INITIAL),  # new stream after a reconnect
        (_sent(), "", False, {"80"}, Verdict.INITIAL),
        (_sent(), "n0", False, {"80", "81"}, Verdict.STALE),
        (_sent(), "n0", True, {"80"}, Verdict.STALE),
        (_sent(), "n1", True, {"80"}, Verdict.NACK),
        (_sent(), "n1", False, {"80"}, Verdict.ACK),
        (_sent(), "n1", False, {"80", "81"}, Verdict.RESUBSCRIBE),
    ],
)
def test_classify(watch, nonce, error, names, verdict) -> None:
    got = classify(watch, nonce=nonce, has_error=error, names=frozenset(names), wildcard=False)
    assert got is verdict


def test_status_follows_acks_and_nacks() -> None:
    w = Watch(RDS)
    assert w.status is SyncStatus.NOT_SENT
    w.sent(version="v1", nonce="n1", digest=b"", resources=(), at=0.0)
    assert w.status is SyncStatus.STALE
    w.nacked("bad route")
    assert (w.status, w.nack_error, w.nacks) == (SyncStatus.STALE, "bad route", 1)
    w.sent(version="v2", nonce="n2", digest=b"", resources=(), at=0.0)
    w.acked("v2", "n2")
    assert (w.status, w.nack_error, w.acked_version) == (SyncStatus.SYNCED, None, "v2")
    w.nacked("")
    assert w.nack_error == "rejected without a message"


def test_requested_names() -> None:
    cds = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert requested_names(cds, ["a"]) == (frozenset({"a"}), False)
    assert requested_names(RDS, ["*"]) == (frozenset(), True)
    w = Watch(RDS, names=frozenset({"a"}), wildcard=False)
    assert w.wants("a") and not w.wants("b")
