"""What pymesh accepts but does not enforce yet, so that applying it is reported, never silent.

Every kind in :mod:`pymesh.config.kinds` is loaded and validated in full, so a manifest written
for Istio works unchanged. Where the mesh does not act on an object yet, loading it produces a
warning (``pymesh apply`` prints it, pilot logs it) that says what does not happen. When a
capability lands, its entry leaves this table and the tests that expect the warning change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymesh.config.codec import camel_name
from pymesh.config.issues import Reporter
from pymesh.config.model.common import Resource

__all__ = ["NOT_ENFORCED", "NotEnforced", "report_not_enforced"]


@dataclass(frozen=True, slots=True)
class NotEnforced:
    """``field`` is a spec attribute (snake_case) whose being set is reported; empty for the
    whole kind."""

    kind: str
    field: str
    consequence: str


NOT_ENFORCED: tuple[NotEnforced, ...] = (
    NotEnforced(
        "PeerAuthentication",
        "",
        "sidecars do not require or offer mutual TLS yet; traffic between them stays plaintext",
    ),
    NotEnforced("Telemetry", "", "metrics, access logs and traces are not changed by it yet"),
    NotEnforced("EnvoyFilter", "", "its patches are not applied to any proxy yet"),
)


def report_not_enforced(res: Resource[Any], path: str, rep: Reporter) -> None:
    """Warn, through ``rep``, about each part of ``res`` pymesh does not enforce."""
    for entry in NOT_ENFORCED:
        if entry.kind != res.kind:
            continue
        if not entry.field:
            rep.warn(path, f"{res.kind} is accepted but not enforced: {entry.consequence}")
        elif getattr(res.spec, entry.field, None) not in (None, (), ""):
            field = camel_name(entry.field)
            rep.warn(
                f"{path}.{field}" if path else field,
                f"{field} is accepted but not enforced: {entry.consequence}",
            )
