"""EnvoyFilter, Telemetry and ConfigMap checks, after Istio's webhook and the API server.

An EnvoyFilter's patch values are Envoy resource fragments: here only the patch's shape is
checked (what Istio's webhook checks); whether Envoy's protos accept the value is checked where
pilot applies the patch.
"""

from __future__ import annotations

import re

from pymesh.config.cel import compile_cel
from pymesh.config.issues import Reporter
from pymesh.config.model.kube import ConfigMap
from pymesh.config.model.networking import ApplyTo, EnvoyFilter, PatchOperation
from pymesh.config.model.networking.envoy_filter import EnvoyConfigObjectPatch
from pymesh.config.model.telemetry import MetricsOverrides, TagOperation, Telemetry
from pymesh.config.validate._common import check_regex, check_selector_labels
from pymesh.errors import ValidationError

__all__ = ["validate_config_map", "validate_envoy_filter", "validate_telemetry"]

_LISTENER_CLASS = frozenset(
    {
        ApplyTo.LISTENER,
        ApplyTo.FILTER_CHAIN,
        ApplyTo.NETWORK_FILTER,
        ApplyTo.HTTP_FILTER,
        ApplyTo.LISTENER_FILTER,
    }
)
_ROUTE_CLASS = frozenset({ApplyTo.ROUTE_CONFIGURATION, ApplyTo.VIRTUAL_HOST, ApplyTo.HTTP_ROUTE})
# Istio's webhook: ordered inserts only make sense where the patched object is a list entry.
_INSERTABLE = frozenset(
    {ApplyTo.NETWORK_FILTER, ApplyTo.HTTP_FILTER, ApplyTo.HTTP_ROUTE, ApplyTo.LISTENER_FILTER}
)
_INSERTS = frozenset(
    {PatchOperation.INSERT_BEFORE, PatchOperation.INSERT_AFTER, PatchOperation.INSERT_FIRST}
)
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_TAG_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def validate_envoy_filter(ef: EnvoyFilter, path: str, rep: Reporter) -> None:
    if ef.workload_selector is not None:
        check_selector_labels(rep, f"{path}.workloadSelector.labels", ef.workload_selector.labels)
    for i, cp in enumerate(ef.config_patches):
        _config_patch(cp, f"{path}.configPatches[{i}]", rep)


def _config_patch(cp: EnvoyConfigObjectPatch, path: str, rep: Reporter) -> None:
    if cp.apply_to is ApplyTo.INVALID:
        rep.fail(f"{path}.applyTo", "applyTo is required")
    if cp.patch is None:
        rep.fail(f"{path}.patch", "patch is required")
    operation = cp.patch.operation
    if operation is PatchOperation.INVALID:
        rep.fail(f"{path}.patch.operation", "operation is required")
    if operation is PatchOperation.REMOVE:
        if cp.patch.value:
            rep.warn(f"{path}.patch.value", "value is ignored for REMOVE")
    elif not cp.patch.value:
        rep.fail(f"{path}.patch.value", f"{operation} needs a value")
    if operation in _INSERTS and cp.apply_to not in _INSERTABLE:
        rep.fail(
            f"{path}.patch.operation",
            f"{operation} applies only to NETWORK_FILTER, HTTP_FILTER, HTTP_ROUTE and "
            f"LISTENER_FILTER, not {cp.apply_to}",
        )
    match = cp.match
    if match is None:
        return
    if match.proxy is not None and match.proxy.proxy_version:
        check_regex(rep, f"{path}.match.proxy.proxyVersion", match.proxy.proxy_version)
    if cp.apply_to in _LISTENER_CLASS and (match.route_configuration or match.cluster):
        rep.fail(f"{path}.match", f"{cp.apply_to} patches can only match on a listener")
    if cp.apply_to in _ROUTE_CLASS and (match.listener or match.cluster):
        rep.fail(f"{path}.match", f"{cp.apply_to} patches can only match a routeConfiguration")
    if cp.apply_to is ApplyTo.CLUSTER and (match.listener or match.route_configuration):
        rep.fail(f"{path}.match", "CLUSTER patches can only match on a cluster")


def validate_telemetry(tm: Telemetry, path: str, rep: Reporter) -> None:
    if tm.selector is not None:
        check_selector_labels(rep, f"{path}.selector.matchLabels", tm.selector.match_labels)
    for i, tracing in enumerate(tm.tracing):
        tpath = f"{path}.tracing[{i}]"
        if len(tracing.providers) > 1:
            rep.fail(f"{tpath}.providers", "only one tracing provider may be given per rule")
        pct = tracing.random_sampling_percentage
        if pct is not None and not 0.0 <= pct <= 100.0:
            rep.fail(f"{tpath}.randomSamplingPercentage", f"{pct} is not within 0..100")
        for name in tracing.custom_tags:
            if not name:
                rep.fail(f"{tpath}.customTags", "a custom tag needs a name")
        for name, tag in tracing.custom_tags.items():
            if tag.literal is None and tag.environment is None and tag.header is None:
                rep.fail(f"{tpath}.customTags[{name}]", "one of literal, environment, header")
    for i, metrics in enumerate(tm.metrics):
        for j, override in enumerate(metrics.overrides):
            _metrics_override(override, f"{path}.metrics[{i}].overrides[{j}]", rep)
    for i, logging in enumerate(tm.access_logging):
        if logging.filter is not None and not logging.filter.expression.strip():
            rep.fail(f"{path}.accessLogging[{i}].filter.expression", "expression is empty")
        elif logging.filter is not None:
            _cel(logging.filter.expression, f"{path}.accessLogging[{i}].filter.expression", rep)


def _cel(expression: str, path: str, rep: Reporter) -> None:
    """Only what pymesh can evaluate is accepted: the CEL subset Istio's docs use."""
    try:
        compile_cel(expression)
    except ValidationError as exc:
        rep.fail(path, exc.message)


def _metrics_override(override: MetricsOverrides, path: str, rep: Reporter) -> None:
    if override.match is not None and override.match.custom_metric == "":
        rep.fail(f"{path}.match.customMetric", "customMetric must not be empty")
    for name, tag in override.tag_overrides.items():
        tpath = f"{path}.tagOverrides[{name}]"
        if not _TAG_NAME.match(name):
            rep.fail(tpath, f"invalid tag name {name!r}")
        if tag.operation is TagOperation.REMOVE and tag.value is not None:
            rep.fail(f"{tpath}.value", "value must not be set when operation is REMOVE")
        if tag.operation is TagOperation.UPSERT and not tag.value:
            rep.fail(f"{tpath}.value", "value must be set when operation is UPSERT")
        elif tag.operation is TagOperation.UPSERT and tag.value:
            _cel(tag.value, f"{tpath}.value", rep)


def validate_config_map(cm: ConfigMap, path: str, rep: Reporter) -> None:
    prefix = f"{path}." if path else ""
    for field, keys in (("data", cm.data), ("binaryData", cm.binary_data)):
        for key in keys:
            if len(key) > 253 or not _CONFIG_KEY.match(key):
                rep.fail(f"{prefix}{field}[{key}]", f"invalid key {key!r} (letters, digits, -._)")
    for key in cm.data.keys() & cm.binary_data.keys():
        rep.fail(f"{prefix}binaryData[{key}]", f"key {key!r} is also in data")
