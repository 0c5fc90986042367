"""What pymesh accepts but does not enforce yet, so that applying it is reported, never silent.

Every kind in :mod:`pymesh.config.kinds` is loaded and validated in full, so a manifest written
for Istio works unchanged. Where the mesh does not act on an object yet, loading it produces a
warning (``pymesh apply`` prints it, pilot logs it) that says what does not happen. When a
capability lands, its entry leaves this table and the tests that expect the warning change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pymesh.config.codec import camel_name
from pymesh.config.issues import Reporter
from pymesh.config.model.common import Resource
from pymesh.config.model.networking import Gateway, Server, ServerTLSMode
from pymesh.config.model.telemetry import IstioMetric, Telemetry
from pymesh.config.protocol import HTTP_PROTOCOLS, UNSUPPORTED

__all__ = ["NOT_ENFORCED", "NotEnforced", "gateway_server_served", "report_not_enforced"]

_HTTP = HTTP_PROTOCOLS - {UNSUPPORTED}  # a Gateway server names its protocol
_TCP = frozenset({"TCP", "MONGO", "REDIS", "MYSQL"})
_TERMINATED = frozenset({ServerTLSMode.SIMPLE, ServerTLSMode.MUTUAL, ServerTLSMode.OPTIONAL_MUTUAL})


@dataclass(frozen=True, slots=True)
class NotEnforced:
    """``field`` is a spec attribute (snake_case) whose being set is reported; empty for the
    whole kind."""

    kind: str
    field: str
    consequence: str


NOT_ENFORCED: tuple[NotEnforced, ...] = (
    NotEnforced(
        "VirtualService",
        "tls",
        "TLS routes by SNI are not applied; a connection goes to the service its SNI names",
    ),
    *(
        NotEnforced(
            kind,
            field,
            "it selects Gateway API gateways and waypoints, which pymesh does not run: the "
            "policy applies to no proxy",
        )
        for kind in ("AuthorizationPolicy", "RequestAuthentication")
        for field in ("target_ref", "target_refs")
    ),
    NotEnforced("Telemetry", "target_ref", "only selector picks workloads; it applies to none"),
    NotEnforced("Telemetry", "target_refs", "only selector picks workloads; it applies to none"),
)


def _telemetry_gaps(spec: Telemetry) -> Iterator[tuple[str, str]]:
    """(field path, consequence) of the Telemetry parts that change nothing yet. Metrics
    and access-log rules are enforced by mixer, tracing rules by pilot."""
    not_produced = {IstioMetric.GRPC_REQUEST_MESSAGES, IstioMetric.GRPC_RESPONSE_MESSAGES}
    for i, metrics in enumerate(spec.metrics):
        if metrics.reporting_interval is not None:
            yield f"metrics[{i}].reportingInterval", "mixer counts each report as it arrives"
        for j, o in enumerate(metrics.overrides):
            where = f"metrics[{i}].overrides[{j}].match"
            if o.match is not None and o.match.custom_metric is not None:
                yield f"{where}.customMetric", "custom metrics are not produced"
            elif o.match is not None and o.match.metric in not_produced:
                yield f"{where}.metric", "gRPC message counts are not produced"
            elif o.disabled is not None or o.tag_overrides:
                yield (
                    f"metrics[{i}].overrides[{j}]",
                    "mixer's metrics follow it; each sidecar's own :15020/stats/prometheus "
                    "keeps Istio's standard metrics and labels",
                )
    for i, tracing in enumerate(spec.tracing):
        if tracing.use_request_id_for_trace_sampling is not None:
            yield (
                f"tracing[{i}].useRequestIdForTraceSampling",
                "sampling follows randomSamplingPercentage only",
            )
    for i, logging in enumerate(spec.access_logging):
        if logging.providers:
            yield (
                f"accessLogging[{i}].providers",
                "sidecars write no access log of their own yet; mixer's recent log "
                "(pymesh logs) follows this rule",
            )


def gateway_server_served(server: Server) -> str | None:
    """How pymesh gateways serve a Gateway server: ``"http"``, ``"https"`` (TLS terminated
    with SIMPLE, MUTUAL or OPTIONAL_MUTUAL), ``"tcp"`` (plain), or None: not served."""
    protocol = server.port.protocol.upper()
    terminated = server.tls is not None and server.tls.mode in _TERMINATED
    if protocol in _HTTP and not terminated:
        return "http"
    if protocol in ("HTTPS", "TLS") and terminated:
        return "https"
    if protocol in _TCP and server.tls is None:
        return "tcp"
    return None


def _gateway_gaps(spec: Gateway) -> Iterator[tuple[str, str]]:
    for i, server in enumerate(spec.servers):
        if gateway_server_served(server) is None:
            mode = f" with TLS mode {server.tls.mode}" if server.tls is not None else ""
            yield (
                f"servers[{i}]",
                f"the gateway does not listen for a {server.port.protocol} server{mode} "
                "(pymesh gateways serve HTTP, TLS terminated with SIMPLE, MUTUAL or "
                "OPTIONAL_MUTUAL, and plain TCP)",
            )


def report_not_enforced(res: Resource[Any], path: str, rep: Reporter) -> None:
    """Warn, through ``rep``, about each part of ``res`` pymesh does not enforce."""
    gaps: Iterator[tuple[str, str]] = iter(())
    if isinstance(res.spec, Telemetry):
        gaps = _telemetry_gaps(res.spec)
    elif isinstance(res.spec, Gateway):
        gaps = _gateway_gaps(res.spec)
    for field, consequence in gaps:
        rep.warn(
            f"{path}.{field}" if path else field,
            f"{field.rpartition('.')[2]} is accepted but not enforced: {consequence}",
        )
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
