"""The Telemetry API in effect for one workload and direction, Istio's way.

Three levels apply, least specific first: the mesh (a Telemetry in the root namespace with no
selector), the workload's namespace (no selector), the workload (a selector matching its
labels). Where a level has several candidates the oldest wins in Istio; pymesh has no
creation times and takes the first by name. Then, per direction (``CLIENT``: the workload's
outbound calls, reporter ``source``; ``SERVER``: inbound, reporter ``destination``):

* metrics — providers from the most specific level that names any (else MeshConfig's
  ``defaultProviders.metrics``, else ``prometheus``); overrides of every level apply in order,
  so a workload's override of a metric or tag replaces the namespace's;
* access logging — per provider, the most specific rule's ``disabled`` and ``filter``;
* tracing — providers, ``randomSamplingPercentage``, ``disableSpanReporting`` each from the
  most specific level that sets it; custom tags merged by name.

Pure: a snapshot and a workload in, frozen values out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymesh.config.cel import CelExpression, compile_cel
from pymesh.config.model.common import EMPTY_MAP, FrozenMap, Resource
from pymesh.config.model.telemetry import (
    CustomTag,
    IstioMetric,
    ModeSelector,
    TagOperation,
    Telemetry,
    WorkloadMode,
)

__all__ = [
    "DEFAULT_METRICS_PROVIDER",
    "METRIC_NAMES",
    "LogPolicy",
    "MetricsPolicy",
    "TagRule",
    "TelemetryPolicy",
    "TracePolicy",
    "resolve",
]

DEFAULT_METRICS_PROVIDER = "prometheus"
#: Istio's metric enum -> the Prometheus names it governs
METRIC_NAMES: Mapping[IstioMetric, tuple[str, ...]] = {
    IstioMetric.REQUEST_COUNT: ("istio_requests_total",),
    IstioMetric.REQUEST_DURATION: ("istio_request_duration_milliseconds",),
    IstioMetric.REQUEST_SIZE: ("istio_request_bytes",),
    IstioMetric.RESPONSE_SIZE: ("istio_response_bytes",),
    IstioMetric.TCP_OPENED_CONNECTIONS: ("istio_tcp_connections_opened_total",),
    IstioMetric.TCP_CLOSED_CONNECTIONS: ("istio_tcp_connections_closed_total",),
    IstioMetric.TCP_SENT_BYTES: ("istio_tcp_sent_bytes_total",),
    IstioMetric.TCP_RECEIVED_BYTES: ("istio_tcp_received_bytes_total",),
    IstioMetric.GRPC_REQUEST_MESSAGES: ("istio_request_messages_total",),
    IstioMetric.GRPC_RESPONSE_MESSAGES: ("istio_response_messages_total",),
}
_ALL = tuple(n for names in METRIC_NAMES.values() for n in names)


@dataclass(frozen=True, slots=True)
class TagRule:
    """Remove the tag (``value`` None) or set it to a CEL expression's value."""

    name: str
    value: CelExpression | None


@dataclass(frozen=True, slots=True)
class MetricsPolicy:
    enabled: bool = True  # a metrics provider pymesh serves is selected
    disabled: frozenset[str] = frozenset()  # Prometheus metric names
    #: Prometheus metric name -> tag rules, in the order they apply
    tags: FrozenMap[str, tuple[TagRule, ...]] = EMPTY_MAP

    @property
    def plain(self) -> bool:
        """Nothing to change: the standard labels on every metric."""
        return self.enabled and not self.disabled and not self.tags


@dataclass(frozen=True, slots=True)
class LogPolicy:
    """``providers``: provider name -> (disabled, filter)."""

    providers: FrozenMap[str, tuple[bool, CelExpression | None]] = EMPTY_MAP
    configured: bool = False  # some Telemetry said something about access logging

    def keeps(self, attributes: Mapping[str, Any]) -> bool:
        """Whether an entry is logged by at least one provider (all of them when no
        Telemetry configures access logging)."""
        if not self.configured:
            return True
        for disabled, filt in self.providers.values():
            if not disabled and (filt is None or filt.matches(attributes)):
                return True
        return False


@dataclass(frozen=True, slots=True)
class TracePolicy:
    providers: tuple[str, ...] = ()
    sampling: float | None = None
    disable_span_reporting: bool = False
    custom_tags: FrozenMap[str, CustomTag] = EMPTY_MAP


@dataclass(frozen=True, slots=True)
class TelemetryPolicy:
    metrics: MetricsPolicy = field(default_factory=MetricsPolicy)
    logging: LogPolicy = field(default_factory=LogPolicy)
    tracing: TracePolicy = field(default_factory=TracePolicy)


def _applies(match: ModeSelector | None, mode: WorkloadMode) -> bool:
    want = match.mode if match is not None else WorkloadMode.CLIENT_AND_SERVER
    return want in (WorkloadMode.CLIENT_AND_SERVER, mode)


def _levels(
    telemetries: Sequence[Resource[Telemetry]],
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str,
) -> Iterator[Telemetry]:
    """The applicable specs, mesh first, workload last (one per level)."""
    ordered = sorted(telemetries, key=lambda r: (r.namespace, r.name))
    mesh = [r for r in ordered if r.namespace == root_namespace and r.spec.selector is None]
    ns = [r for r in ordered if r.namespace == namespace and r.spec.selector is None]
    workload = [
        r
        for r in ordered
        if r.namespace in (namespace, root_namespace)
        and r.spec.selector is not None
        and r.spec.selector.matches(labels)
    ]
    seen: set[tuple[str, str]] = set()
    for level in (mesh, ns, workload):
        if level and (level[0].namespace, level[0].name) not in seen:
            seen.add((level[0].namespace, level[0].name))
            yield level[0].spec


def resolve(
    telemetries: Sequence[Resource[Telemetry]],
    namespace: str,
    labels: Mapping[str, str],
    mode: WorkloadMode,
    *,
    root_namespace: str = "istio-system",
    default_metrics_providers: Sequence[str] = (DEFAULT_METRICS_PROVIDER,),
) -> TelemetryPolicy:
    """The policy for the workload (``namespace``, ``labels``) in direction ``mode``
    (``CLIENT`` or ``SERVER``). Raises ValidationError for a CEL expression the subset cannot
    run (validation refuses those earlier)."""
    specs = list(_levels(telemetries, namespace, labels, root_namespace))
    return TelemetryPolicy(
        metrics=_metrics(specs, mode, default_metrics_providers),
        logging=_logging(specs, mode),
        tracing=_tracing(specs, mode),
    )


def _metrics(
    specs: Sequence[Telemetry], mode: WorkloadMode, defaults: Sequence[str]
) -> MetricsPolicy:
    providers: tuple[str, ...] = tuple(defaults)
    disabled: dict[str, bool] = {}
    tags: dict[str, dict[str, TagRule]] = {}
    for spec in specs:
        for rule in spec.metrics:
            if rule.providers:
                providers = tuple(p.name for p in rule.providers)
            for override in rule.overrides:
                match = override.match
                if match is not None and match.custom_metric is not None:
                    continue  # custom metrics are not produced, so there is nothing to change
                if match is not None and match.mode not in (WorkloadMode.CLIENT_AND_SERVER, mode):
                    continue
                metric = match.metric if match is not None and match.metric else None
                names = _ALL if metric in (None, IstioMetric.ALL_METRICS) else METRIC_NAMES[metric]
                for name in names:
                    if override.disabled is not None:
                        disabled[name] = override.disabled
                    for tag, op in override.tag_overrides.items():
                        value = None
                        if op.operation is TagOperation.UPSERT and op.value is not None:
                            value = compile_cel(op.value)
                        tags.setdefault(name, {})[tag] = TagRule(tag, value)
    return MetricsPolicy(
        enabled=DEFAULT_METRICS_PROVIDER in providers,
        disabled=frozenset(n for n, off in disabled.items() if off),
        tags=FrozenMap((n, tuple(rules.values())) for n, rules in tags.items()),
    )


def _logging(specs: Sequence[Telemetry], mode: WorkloadMode) -> LogPolicy:
    providers: dict[str, tuple[bool, CelExpression | None]] = {}
    configured = False
    for spec in specs:
        for rule in spec.access_logging:
            if not _applies(rule.match, mode):
                continue
            configured = True
            names = [p.name for p in rule.providers] or list(providers) or ["default"]
            for name in names:
                was_disabled, was_filter = providers.get(name, (False, None))
                disabled = rule.disabled if rule.disabled is not None else was_disabled
                filt = compile_cel(rule.filter.expression) if rule.filter else was_filter
                providers[name] = (disabled, filt)
    return LogPolicy(FrozenMap(providers), configured)


def _tracing(specs: Sequence[Telemetry], mode: WorkloadMode) -> TracePolicy:
    policy = TracePolicy()
    providers: tuple[str, ...] = ()
    sampling: float | None = None
    disable = False
    tags: dict[str, CustomTag] = {}
    for spec in specs:
        for rule in spec.tracing:
            if not _applies(rule.match, mode):
                continue
            if rule.providers:
                providers = tuple(p.name for p in rule.providers)
            if rule.random_sampling_percentage is not None:
                sampling = rule.random_sampling_percentage
            if rule.disable_span_reporting is not None:
                disable = rule.disable_span_reporting
            tags.update(rule.custom_tags)
    if providers or sampling is not None or disable or tags:
        policy = TracePolicy(providers, sampling, disable, FrozenMap(tags))
    return policy
