"""What one ADS stream asked for one resource type, what pilot sent, and what came back.

This is the state-of-the-world protocol as pure decisions, with no I/O: :func:`classify` reads
a ``DiscoveryRequest`` against the :class:`Watch` for its type and says what it is (a first
request, an ACK, a NACK, a stale message to ignore), and the ``Watch`` methods record the
outcome. The stream code in :mod:`pilot.xds.server` only acts on the verdicts.

Envoy's rules, as implemented by Istio's ``shouldRespond``:

* a request without ``response_nonce`` opens (or re-opens, after a reconnect) a subscription
  and is always answered;
* a request whose nonce is not the last one sent for its type answers an older response that
  has since been superseded: it is ignored, a newer response is already on its way;
* a request with the last nonce and ``error_detail`` is a NACK: the proxy stays on its last
  accepted version and the error is kept for ``proxy-status``;
* otherwise it is an ACK; if it also changes the subscribed names (new EDS clusters, new RDS
  route names) it is answered with the resources for the new names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["SyncStatus", "Verdict", "Watch", "classify", "requested_names"]

# Listeners and clusters are "wildcard" types: an empty name list means "everything".
WILDCARD_TYPES = frozenset(
    {
        "type.googleapis.com/envoy.config.listener.v3.Listener",
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    }
)


class Verdict(Enum):
    INITIAL = "initial"  # new subscription (or a reconnect): answer it
    ACK = "ack"  # accepted the last response; nothing to send
    RESUBSCRIBE = "resubscribe"  # ACK that changes the names: answer for the new names
    NACK = "nack"  # rejected the last response: keep the old version, record the error
    STALE = "stale"  # answers a superseded response: ignore


class SyncStatus(Enum):
    """``istioctl proxy-status`` vocabulary."""

    SYNCED = "SYNCED"
    STALE = "STALE"
    NOT_SENT = "NOT SENT"


@dataclass(slots=True)
class Watch:
    """One stream's subscription to one type URL. Mutable: it is the stream's bookkeeping."""

    type_url: str
    names: frozenset[str] = frozenset()
    wildcard: bool = True
    sent_version: str = ""
    sent_nonce: str = ""
    sent_hash: bytes | None = None
    sent_at: float | None = None
    sent_resources: tuple[Any, ...] = ()
    acked_version: str = ""
    acked_nonce: str = ""
    nack_error: str | None = None
    nacks: int = 0
    #: the push this type's last response belonged to (for the convergence metric)
    push_started: float | None = field(default=None, repr=False)
    #: the PushContext version this type was last generated from (sent or found unchanged)
    generated_version: str | None = None
    #: that PushContext itself, which incremental pushes compare the next one with
    generated_ctx: Any = field(default=None, repr=False)

    def subscribe(self, names: frozenset[str], wildcard: bool) -> None:
        self.names = names
        self.wildcard = wildcard
        self.generated_version = None
        self.generated_ctx = None

    def sent(
        self,
        *,
        version: str,
        nonce: str,
        digest: bytes,
        resources: tuple[Any, ...],
        at: float,
        push_started: float | None = None,
    ) -> None:
        self.sent_version = version
        self.sent_nonce = nonce
        self.sent_hash = digest
        self.sent_resources = resources
        self.sent_at = at
        self.push_started = push_started

    def acked(self, version: str, nonce: str) -> None:
        self.acked_version = version
        self.acked_nonce = nonce
        # An ACK of the newest response clears an older rejection: the proxy caught up.
        self.nack_error = None

    def nacked(self, message: str) -> None:
        self.nack_error = message or "rejected without a message"
        self.nacks += 1

    @property
    def status(self) -> SyncStatus:
        if not self.sent_nonce:
            return SyncStatus.NOT_SENT
        if self.acked_nonce == self.sent_nonce:
            return SyncStatus.SYNCED
        return SyncStatus.STALE

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


def requested_names(
    type_url: str, names: list[str] | tuple[str, ...]
) -> tuple[frozenset[str], bool]:
    """``(names, wildcard)`` of a request: ``*`` or, for listeners and clusters, no names at all
    subscribe to everything."""
    given = frozenset(names)
    if "*" in given:
        return given - {"*"}, True
    return given, not given and type_url in WILDCARD_TYPES


def classify(
    watch: Watch | None, *, nonce: str, has_error: bool, names: frozenset[str], wildcard: bool
) -> Verdict:
    """What a request means for ``watch`` (None: the type was never requested on this stream)."""
    if watch is None or not nonce:
        return Verdict.INITIAL
    if nonce != watch.sent_nonce:
        return Verdict.STALE
    if has_error:
        return Verdict.NACK
    if names != watch.names or wildcard != watch.wildcard:
        return Verdict.RESUBSCRIBE
    return Verdict.ACK
