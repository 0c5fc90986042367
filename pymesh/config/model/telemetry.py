"""``telemetry.istio.io`` (v1, v1alpha1) Telemetry: which metrics, access logs and traces the
selected workloads produce. Mesh-wide in the root namespace without a selector, then per
namespace, then per workload; lower levels override higher ones field by field."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from pymesh.config.model.common import (
    EMPTY_MAP,
    FrozenMap,
    LabelSelector,
    Oneofs,
    PolicyTargetReference,
    spec_field,
)

__all__ = [
    "AccessLogFilter",
    "AccessLogging",
    "CustomTag",
    "EnvironmentTag",
    "HeaderTag",
    "IstioMetric",
    "LiteralTag",
    "MetricSelector",
    "Metrics",
    "MetricsOverrides",
    "ModeSelector",
    "ProviderRef",
    "TagOperation",
    "TagOverride",
    "Telemetry",
    "Tracing",
    "WorkloadMode",
]


class WorkloadMode(StrEnum):
    CLIENT_AND_SERVER = "CLIENT_AND_SERVER"
    CLIENT = "CLIENT"  # outbound: the workload is the source
    SERVER = "SERVER"  # inbound: the workload is the destination


class IstioMetric(StrEnum):
    ALL_METRICS = "ALL_METRICS"
    REQUEST_COUNT = "REQUEST_COUNT"
    REQUEST_DURATION = "REQUEST_DURATION"
    REQUEST_SIZE = "REQUEST_SIZE"
    RESPONSE_SIZE = "RESPONSE_SIZE"
    TCP_OPENED_CONNECTIONS = "TCP_OPENED_CONNECTIONS"
    TCP_CLOSED_CONNECTIONS = "TCP_CLOSED_CONNECTIONS"
    TCP_SENT_BYTES = "TCP_SENT_BYTES"
    TCP_RECEIVED_BYTES = "TCP_RECEIVED_BYTES"
    GRPC_REQUEST_MESSAGES = "GRPC_REQUEST_MESSAGES"
    GRPC_RESPONSE_MESSAGES = "GRPC_RESPONSE_MESSAGES"


class TagOperation(StrEnum):
    UPSERT = "UPSERT"
    REMOVE = "REMOVE"


@dataclass(frozen=True, slots=True)
class ProviderRef:
    """A provider by name: built-in (``prometheus``, ``envoy``) or a mesh extension provider."""

    name: str = spec_field(required=True)


@dataclass(frozen=True, slots=True)
class ModeSelector:
    """``TracingSelector`` / ``LogSelector``: the traffic direction a rule applies to."""

    mode: WorkloadMode = WorkloadMode.CLIENT_AND_SERVER


@dataclass(frozen=True, slots=True)
class LiteralTag:
    value: str = spec_field(required=True)


@dataclass(frozen=True, slots=True)
class EnvironmentTag:
    name: str = spec_field(required=True)
    default_value: str = ""


@dataclass(frozen=True, slots=True)
class HeaderTag:
    name: str = spec_field(required=True)
    default_value: str = ""


@dataclass(frozen=True, slots=True)
class CustomTag:
    ONEOFS: ClassVar[Oneofs] = (("literal", "environment", "header"),)

    literal: LiteralTag | None = None
    environment: EnvironmentTag | None = None
    header: HeaderTag | None = None


@dataclass(frozen=True, slots=True)
class Tracing:
    """``random_sampling_percentage`` and the booleans are wrapper types: None = inherit."""

    match: ModeSelector | None = None
    providers: tuple[ProviderRef, ...] = ()
    random_sampling_percentage: float | None = None
    disable_span_reporting: bool | None = None
    custom_tags: FrozenMap[str, CustomTag] = EMPTY_MAP
    use_request_id_for_trace_sampling: bool | None = None


@dataclass(frozen=True, slots=True)
class MetricSelector:
    ONEOFS: ClassVar[Oneofs] = (("metric", "custom_metric"),)

    metric: IstioMetric | None = None
    custom_metric: str | None = None
    mode: WorkloadMode = WorkloadMode.CLIENT_AND_SERVER


@dataclass(frozen=True, slots=True)
class TagOverride:
    """``value`` is a CEL expression (Istio's documented subset), only for UPSERT."""

    operation: TagOperation = TagOperation.UPSERT
    value: str | None = None


@dataclass(frozen=True, slots=True)
class MetricsOverrides:
    match: MetricSelector | None = None
    disabled: bool | None = None
    tag_overrides: FrozenMap[str, TagOverride] = EMPTY_MAP


@dataclass(frozen=True, slots=True)
class Metrics:
    providers: tuple[ProviderRef, ...] = ()
    overrides: tuple[MetricsOverrides, ...] = ()
    reporting_interval: float | None = spec_field(None, duration=True)


@dataclass(frozen=True, slots=True)
class AccessLogFilter:
    """``expression``: a CEL expression over request/response attributes."""

    expression: str = ""


@dataclass(frozen=True, slots=True)
class AccessLogging:
    match: ModeSelector | None = None
    providers: tuple[ProviderRef, ...] = ()
    disabled: bool | None = None
    filter: AccessLogFilter | None = None


@dataclass(frozen=True, slots=True)
class Telemetry:
    KIND: ClassVar[str] = "Telemetry"
    ONEOFS: ClassVar[Oneofs] = (("selector", "target_ref", "target_refs"),)

    selector: LabelSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: tuple[PolicyTargetReference, ...] | None = None
    tracing: tuple[Tracing, ...] = ()
    metrics: tuple[Metrics, ...] = ()
    access_logging: tuple[AccessLogging, ...] = ()
