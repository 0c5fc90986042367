"""Mesh-wide settings: the subset of Istio's ``MeshConfig`` that pilot's generators read.

Loadable from a ``mesh.yaml`` written the way Istio's ``istio`` ConfigMap holds it (the bare
MeshConfig document, or the ConfigMap itself with the document under ``data.mesh``). Fields
pymesh does not use are accepted and ignored, as Istio ignores fields it does not know.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from pilot.model.extension_providers import (
    ExtensionProvider,
    parse_default_providers,
    parse_extension_providers,
)
from pymesh.config.durations import parse_duration
from pymesh.config.model.common import EMPTY_MAP, FrozenMap
from pymesh.errors import ConfigError, ValidationError

__all__ = ["DEFAULT_RETRY_ON", "MeshConfig", "OutboundMode"]

OutboundMode = Literal["ALLOW_ANY", "REGISTRY_ONLY"]

#: Istio's default ``retryOn``; numbers are status codes (``retriable_status_codes``).
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,503"


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """Mesh-wide defaults; every field has Istio's default.

    ``default_retries`` is the ``attempts`` of the retry policy a route gets when its
    VirtualService says nothing about retries (``retryOn`` ``default_retry_on``, Istio's
    :data:`DEFAULT_RETRY_ON`; ``previous_hosts`` predicate, 5 host selection attempts); 0
    disables it. Both come from ``defaultHttpRetryPolicy`` in ``mesh.yaml``.
    ``mixer_address`` / ``zipkin_address`` are ``host:port``; when set, every HTTP connection
    manager streams access logs to mixer (Envoy ALS) and traces to Zipkin, sampling
    ``trace_sampling`` percent of requests (Istio's ``defaultConfig.tracing.sampling``).
    ``extension_providers`` are the external authorizers CUSTOM AuthorizationPolicies name.
    """

    trust_domain: str = "cluster.local"
    root_namespace: str = "istio-system"
    outbound_traffic_policy: OutboundMode = "ALLOW_ANY"
    default_retries: int = 2
    default_retry_on: str = DEFAULT_RETRY_ON
    inbound_port: int = 15006
    outbound_port: int = 15001
    mixer_address: str | None = None
    zipkin_address: str | None = None
    trace_sampling: float = 1.0
    connect_timeout: float = 10.0
    dns_refresh_rate: float = 60.0
    # Istio's protocolDetectionTimeout: how long a sniffing listener waits for a client's
    # first bytes before it treats the connection as TCP; 0 waits for ever (Istio's default
    # since server-first protocols broke under a timeout that guessed).
    protocol_detection_timeout: float = 0.0
    enable_auto_mtls: bool = True
    extension_providers: tuple[ExtensionProvider, ...] = ()
    default_providers: FrozenMap[str, tuple[str, ...]] = EMPTY_MAP

    def extension_provider(self, name: str) -> ExtensionProvider | None:
        return next((p for p in self.extension_providers if p.name == name), None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<mesh>") -> MeshConfig:
        """Read Istio MeshConfig JSON/YAML fields (camelCase), or an ``istio`` ConfigMap."""
        if data.get("kind") == "ConfigMap":
            inner = (data.get("data") or {}).get("mesh")
            if not isinstance(inner, str):
                raise ValidationError("ConfigMap has no data.mesh document", source=source)
            return cls.from_yaml(inner, source)
        kwargs: dict[str, Any] = {}
        _copy_str(data, "trustDomain", kwargs, "trust_domain", source)
        _copy_str(data, "rootNamespace", kwargs, "root_namespace", source)
        policy = _mapping(data, "outboundTrafficPolicy", source)
        if "mode" in policy:
            mode = policy["mode"]
            if mode not in ("ALLOW_ANY", "REGISTRY_ONLY"):
                raise ValidationError(
                    f"must be ALLOW_ANY or REGISTRY_ONLY, got {mode!r}",
                    source=source,
                    path="outboundTrafficPolicy.mode",
                )
            kwargs["outbound_traffic_policy"] = cast(OutboundMode, mode)
        retry = _mapping(data, "defaultHttpRetryPolicy", source)
        if "attempts" in retry:
            kwargs["default_retries"] = _int(
                retry["attempts"], "defaultHttpRetryPolicy.attempts", source
            )
        if "retryOn" in retry:
            value = retry["retryOn"]
            if not isinstance(value, str) or not value:
                raise ValidationError(
                    f"must be a non-empty string, got {value!r}",
                    source=source,
                    path="defaultHttpRetryPolicy.retryOn",
                )
            kwargs["default_retry_on"] = value
        for key, attr in (
            ("connectTimeout", "connect_timeout"),
            ("dnsRefreshRate", "dns_refresh_rate"),
            ("protocolDetectionTimeout", "protocol_detection_timeout"),
        ):
            if key in data:
                kwargs[attr] = _duration(data[key], key, source)
        if "enableAutoMtls" in data:
            value = data["enableAutoMtls"]
            if not isinstance(value, bool):
                raise ValidationError(
                    f"must be true or false, got {value!r}", source=source, path="enableAutoMtls"
                )
            kwargs["enable_auto_mtls"] = value
        proxy = _mapping(data, "defaultConfig", source)
        tracing = _mapping(proxy, "tracing", source)
        zipkin = _mapping(tracing, "zipkin", source)
        if zipkin.get("address"):
            kwargs["zipkin_address"] = str(zipkin["address"])
        if "sampling" in tracing:
            sampling = tracing["sampling"]
            if (
                isinstance(sampling, bool)
                or not isinstance(sampling, int | float)
                or not (0 <= sampling <= 100)
            ):
                raise ValidationError(
                    f"must be a percentage, got {sampling!r}",
                    source=source,
                    path="defaultConfig.tracing.sampling",
                )
            kwargs["trace_sampling"] = float(sampling)
        als = _mapping(proxy, "envoyAccessLogService", source)
        if als.get("address"):
            kwargs["mixer_address"] = str(als["address"])
        for key, attr in (
            ("pymeshInboundPort", "inbound_port"),
            ("pymeshOutboundPort", "outbound_port"),
        ):
            if key in data:
                kwargs[attr] = _int(data[key], key, source)
        if "proxyListenPort" in data:
            kwargs["outbound_port"] = _int(data["proxyListenPort"], "proxyListenPort", source)
        if "proxyInboundListenPort" in data:
            kwargs["inbound_port"] = _int(
                data["proxyInboundListenPort"], "proxyInboundListenPort", source
            )
        if "extensionProviders" in data:
            kwargs["extension_providers"] = parse_extension_providers(
                data["extensionProviders"], source
            )
        kwargs["default_providers"] = FrozenMap(
            parse_default_providers(
                data.get("defaultProviders"), kwargs.get("extension_providers", ()), source
            )
        )
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<mesh>") -> MeshConfig:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValidationError(f"invalid YAML: {e}", source=source) from None
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValidationError("a mesh config must be a mapping", source=source)
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MeshConfig:
        """Read a ``mesh.yaml`` file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{path}: {e.strerror}") from None
        return cls.from_yaml(text, str(path))


def _mapping(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(f"must be a mapping, got {value!r}", source=source, path=key)
    return value


def _copy_str(
    data: Mapping[str, Any], key: str, out: dict[str, Any], attr: str, source: str
) -> None:
    if key in data:
        value = data[key]
        if not isinstance(value, str) or not value:
            raise ValidationError(
                f"must be a non-empty string, got {value!r}", source=source, path=key
            )
        out[attr] = value


def _int(value: object, path: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError(
            f"must be a non-negative integer, got {value!r}", source=source, path=path
        )
    return value


def _duration(value: object, path: str, source: str) -> float:
    try:
        return parse_duration(value) if isinstance(value, str) else float(cast(Any, value))
    except (TypeError, ValueError) as e:
        raise ValidationError(str(e), source=source, path=path) from None
