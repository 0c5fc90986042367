"""Sidecar injection as a pure function: a pod (or a workload's pod template) in, the pod
Istio's injector would make out.

What is added, with Istio's names: the init container ``istio-init`` (``pymesh iptables``
with the capture flags, NET_ADMIN/NET_RAW), the sidecar ``istio-proxy`` (uid 1337, the pod's
identity from the downward API, drain time, readiness, the CA's address), its volumes (the
service-account token for the CA, audience ``istio-ca``; the mesh root from the
``istio-ca-root-cert`` ConfigMap; the workload's SDS socket directory), the
``sidecar.istio.io/status`` annotation, the ``prometheus.io/*`` annotations pointed at the
agent's merged metrics (:mod:`pymesh.inject.prometheus`) and the ``security.istio.io/tlsMode``
and canonical service labels.

What is honoured: ``sidecar.istio.io/inject`` (annotation or label), ``proxy.istio.io/config``
(``terminationDrainDuration``, ``holdApplicationUntilProxyStarts``, ``proxyMetadata``,
``concurrency``; other
ProxyConfig fields are reported, not applied), and ``traffic.sidecar.istio.io/*``
(include/exclude outbound IP ranges, inbound and outbound ports). Host-network pods and pods
already injected are left alone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from pymesh.capture.rules import parse_cidrs, parse_ports
from pymesh.config.durations import parse_duration
from pymesh.errors import ConfigError
from pymesh.inject.control_plane import CA_ADDRESS
from pymesh.inject.prometheus import prometheus_merge

__all__ = [
    "INJECT",
    "STATUS",
    "InjectConfig",
    "Injected",
    "inject_pod",
    "should_inject",
]

INJECT = "sidecar.istio.io/inject"
STATUS = "sidecar.istio.io/status"
PROXY_CONFIG = "proxy.istio.io/config"
_TRAFFIC = "traffic.sidecar.istio.io/"
_PROXY_CONFIG_FIELDS = frozenset(
    {"terminationDrainDuration", "holdApplicationUntilProxyStarts", "proxyMetadata", "concurrency"}
)
_VOLUMES = (
    "workload-socket",
    "istio-envoy",
    "istio-data",
    "istio-podinfo",
    "istio-token",
    "istiod-ca-cert",
)
_PYTHON = "/opt/pymesh/bin/python"


@dataclass(frozen=True, slots=True)
class InjectConfig:
    """The injector's settings (Istio's ``values.global`` and mesh defaults)."""

    image: str = "pymesh:latest"
    pilot_address: str = "istiod.istio-system.svc:15010"
    ca_address: str = CA_ADDRESS
    proxy_uid: int = 1337
    termination_drain_duration: float = 5.0
    hold_application_until_proxy_starts: bool = False
    exclude_inbound_ports: tuple[int, ...] = (15090, 15021, 15020)
    revision: str = "default"
    log_level: str = "info"
    # Istio's sidecars default to 2 workers. pymesh's workers are processes that each keep
    # their own circuit breakers, outlier detection and local rate limits (Envoy shares them
    # across its threads), so 2 would double every limit a DestinationRule sets; one worker
    # keeps Istio's semantics, and a pod that needs more asks with ``concurrency``.
    concurrency: int = 1


@dataclass(frozen=True, slots=True)
class Injected:
    """``pod`` is the injected pod (a copy), or the input unchanged with ``skipped`` saying
    why; ``warnings`` name what was asked for and is not applied."""

    pod: dict[str, Any]
    skipped: str = ""
    warnings: tuple[str, ...] = field(default=())


def _truthy(value: object) -> bool | None:
    text = str(value).strip().lower()
    if text in ("true", "yes", "y", "1", "enabled"):
        return True
    if text in ("false", "no", "n", "0", "disabled"):
        return False
    return None


def should_inject(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    """Why the pod is not injected, or ``""`` when it is (the namespace is the caller's)."""
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    if STATUS in annotations:
        return "already injected"
    if spec.get("hostNetwork"):
        return "the pod uses the host's network"
    for where in (labels, annotations):
        if INJECT in where and _truthy(where[INJECT]) is False:
            return f"{INJECT}: {where[INJECT]}"
    return ""


def _proxy_config(
    annotations: Mapping[str, Any], cfg: InjectConfig
) -> tuple[dict[str, Any], list[str]]:
    raw = annotations.get(PROXY_CONFIG)
    if not raw:
        return {}, []
    try:
        parsed = yaml.safe_load(str(raw))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{PROXY_CONFIG}: not YAML: {exc}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{PROXY_CONFIG}: expected a mapping, got {type(parsed).__name__}")
    warnings = [
        f"{PROXY_CONFIG}: {name} is not applied by pymesh"
        for name in sorted(set(parsed) - _PROXY_CONFIG_FIELDS)
    ]
    return parsed, warnings


def _capture_args(annotations: Mapping[str, Any], cfg: InjectConfig) -> list[str]:
    def get(name: str, default: str) -> str:
        return str(annotations.get(_TRAFFIC + name, default))

    exclude_in = ",".join(str(p) for p in cfg.exclude_inbound_ports)
    extra_in = get("excludeInboundPorts", "")
    if extra_in:
        exclude_in = f"{exclude_in},{extra_in}"
    args = ["iptables", "-p", "15001", "-z", "15006", "-u", str(cfg.proxy_uid), "-m", "REDIRECT"]
    args += ["-i", get("includeOutboundIPRanges", "*")]
    args += ["-x", get("excludeOutboundIPRanges", "")]
    args += ["-b", get("includeInboundPorts", "*")]
    args += ["-d", exclude_in]
    if get("excludeOutboundPorts", ""):
        args += ["-o", get("excludeOutboundPorts", "")]
    if get("includeOutboundPorts", ""):
        args += ["-q", get("includeOutboundPorts", "")]
    # Validated now, with the parsers the init container uses: a bad annotation is the
    # user's error at admission, not a crash-looping pod.
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    for flag in ("-i", "-x"):
        if flags[flag].strip() != "*":
            parse_cidrs(flags[flag], flag)
    for flag in ("-b", "-d", "-o", "-q"):
        if flags.get(flag, "").strip() != "*":
            parse_ports(flags.get(flag, ""), flag)
    return args


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _sidecar(
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    workload: str,
    drain: float,
    hold: bool,
    metadata_env: Mapping[str, str],
    cfg: InjectConfig,
) -> dict[str, Any]:
    labels = meta.get("labels") or {}
    ports = [
        p.get("containerPort")
        for c in spec.get("containers") or ()
        for p in c.get("ports") or ()
        if isinstance(p, Mapping)
    ]
    env = [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_NAMESPACE", "metadata.namespace"),
        _field_env("INSTANCE_IP", "status.podIP"),
        _field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        {"name": "PILOT_ADDRESS", "value": cfg.pilot_address},
        {"name": "CA_ADDR", "value": cfg.ca_address},
        {"name": "ISTIO_METAJSON_LABELS", "value": json.dumps(dict(labels), sort_keys=True)},
        {"name": "WORKLOAD_NAME", "value": workload},
        {"name": "TERMINATION_DRAIN_DURATION_SECONDS", "value": f"{drain:g}"},
        # The bootstrap is written here: the root file system is read-only.
        {"name": "TMPDIR", "value": "/etc/istio/proxy"},
        {"name": "LOG_LEVEL", "value": cfg.log_level},
    ]
    if ports and ports[0] is not None:
        env.append({"name": "APP_PORT", "value": str(ports[0])})
    env += [{"name": k, "value": str(v)} for k, v in sorted(metadata_env.items())]
    wait = [_PYTHON, "-m", "pymesh.container", "wait"]
    container: dict[str, Any] = {
        "name": "istio-proxy",
        "image": cfg.image,
        "args": ["proxy", "sidecar"],
        "env": env,
        "ports": [{"containerPort": 15090, "name": "http-envoy-prom", "protocol": "TCP"}],
        # Istio's probe: 200 once the proxy has its configuration (and certificates).
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": 15021, "scheme": "HTTP"},
            "initialDelaySeconds": 1,
            "periodSeconds": 2,
            "timeoutSeconds": 3,
            "failureThreshold": 30,
        },
        "resources": {
            "requests": {"cpu": "100m", "memory": "64Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsGroup": cfg.proxy_uid,
            "runAsNonRoot": True,
            "runAsUser": cfg.proxy_uid,
        },
        # Istio's paths: the CA client reads the token and the root where pilot-agent does.
        "volumeMounts": [
            {"name": "workload-socket", "mountPath": "/var/run/secrets/workload-spiffe-uds"},
            {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
            {"name": "istio-data", "mountPath": "/var/lib/istio/data"},
            {"name": "istio-podinfo", "mountPath": "/etc/istio/pod"},
            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens"},
            {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"},
        ],
    }
    if hold:
        # The kubelet starts the next container only once this hook returns.
        container["lifecycle"] = {"postStart": {"exec": {"command": [*wait, "120"]}}}
    return container


def _init(args: list[str], cfg: InjectConfig) -> dict[str, Any]:
    return {
        "name": "istio-init",
        "image": cfg.image,
        "args": args,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": False,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "runAsUser": 0,
        },
    }


def _volumes() -> list[dict[str, Any]]:
    token = {"audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}
    return [
        {"name": "workload-socket", "emptyDir": {}},
        {"name": "istio-envoy", "emptyDir": {"medium": "Memory"}},
        {"name": "istio-data", "emptyDir": {}},
        {
            "name": "istio-podinfo",
            "downwardAPI": {
                "items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
                ]
            },
        },
        {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": token}]}},
        {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
    ]


def inject_pod(pod: Mapping[str, Any], cfg: InjectConfig, *, workload: str = "") -> Injected:
    """Inject ``pod`` (``{"metadata": ..., "spec": ...}``: a Pod or a pod template).
    ConfigError for annotations that cannot be honoured (bad ports, bad YAML)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    skipped = should_inject(meta, spec)
    if skipped:
        return Injected(copy.deepcopy(dict(pod)), skipped=skipped)
    annotations = dict(meta.get("annotations") or {})
    labels = dict(meta.get("labels") or {})
    proxy_config, warnings = _proxy_config(annotations, cfg)
    drain = cfg.termination_drain_duration
    if "terminationDrainDuration" in proxy_config:
        try:
            drain = parse_duration(str(proxy_config["terminationDrainDuration"]))
        except ValueError as exc:
            raise ConfigError(f"{PROXY_CONFIG}: terminationDrainDuration: {exc}") from None
    hold = proxy_config.get(
        "holdApplicationUntilProxyStarts", cfg.hold_application_until_proxy_starts
    )
    concurrency = proxy_config.get("concurrency", cfg.concurrency)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 0:
        raise ConfigError(f"{PROXY_CONFIG}: concurrency must be a whole number >= 0")
    metadata_env = proxy_config.get("proxyMetadata") or {}
    if not isinstance(metadata_env, Mapping):
        raise ConfigError(f"{PROXY_CONFIG}: proxyMetadata must be a mapping of strings")
    name = workload or str(meta.get("name") or meta.get("generateName") or "").rstrip("-")
    if concurrency != 1:
        metadata_env = {**metadata_env, "CONCURRENCY": str(concurrency)}
    sidecar = _sidecar(meta, spec, name, drain, bool(hold), metadata_env, cfg)
    init = _init(_capture_args(annotations, cfg), cfg)

    out = copy.deepcopy(dict(pod))
    out_meta = out.setdefault("metadata", {})
    out_spec = out.setdefault("spec", {})
    app_containers = list(out_spec.get("containers") or [])
    containers = [sidecar, *app_containers] if hold else [*app_containers, sidecar]
    out_spec["containers"] = containers
    out_spec["initContainers"] = [*(out_spec.get("initContainers") or []), init]
    out_spec["volumes"] = [*(out_spec.get("volumes") or []), *_volumes()]
    status = {
        "initContainers": ["istio-init"],
        "containers": ["istio-proxy"],
        "volumes": list(_VOLUMES),
        "imagePullSecrets": None,
        "revision": cfg.revision,
    }
    annotations, scrape = prometheus_merge(annotations)
    if scrape is not None:
        sidecar.setdefault("env", []).append(
            {"name": "ISTIO_PROMETHEUS_ANNOTATIONS", "value": scrape}
        )
    annotations[STATUS] = json.dumps(status)
    if app_containers:
        first = str(app_containers[0].get("name", ""))
        annotations.setdefault("kubectl.kubernetes.io/default-container", first)
        annotations.setdefault("kubectl.kubernetes.io/default-logs-container", first)
    labels["security.istio.io/tlsMode"] = "istio"
    labels.setdefault("service.istio.io/canonical-name", labels.get("app") or name)
    labels.setdefault("service.istio.io/canonical-revision", labels.get("version") or "latest")
    out_meta["annotations"] = annotations
    out_meta["labels"] = labels
    return Injected(out, warnings=tuple(warnings))
