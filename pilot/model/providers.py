"""MeshConfig's ``extensionProviders`` and ``defaultProviders``: the named backends Telemetry
(and AuthorizationPolicy ``CUSTOM``) rules refer to.

Every provider keeps its kind (``zipkin``, ``envoyHttpAls``, ``opentelemetry``,
``envoyExtAuthzGrpc`` ...) and its settings as written; the telemetry generators read the
kinds they implement and say so when a rule names one they do not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymesh.config.model.common import EMPTY_MAP, FrozenMap
from pymesh.errors import ValidationError

__all__ = ["BUILTIN_PROVIDERS", "ExtensionProvider", "parse_default_providers", "parse_providers"]

#: providers every mesh has without declaring them (Istio's built-ins)
BUILTIN_PROVIDERS = frozenset({"prometheus", "envoy"})
_DEFAULT_KINDS = ("tracing", "metrics", "accessLogging")


@dataclass(frozen=True, slots=True)
class ExtensionProvider:
    name: str
    kind: str
    settings: FrozenMap[str, Any] = EMPTY_MAP

    @property
    def service(self) -> str:
        return str(self.settings.get("service", ""))

    @property
    def port(self) -> int:
        port = self.settings.get("port", 0)
        return port if isinstance(port, int) and not isinstance(port, bool) else 0

    @property
    def address(self) -> str:
        """``host:port`` of the provider's service."""
        return f"{self.service}:{self.port}"


def parse_providers(value: object, source: str) -> tuple[ExtensionProvider, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValidationError("must be a list", source=source, path="extensionProviders")
    found: list[ExtensionProvider] = []
    for i, item in enumerate(value):
        path = f"extensionProviders[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise ValidationError("needs a name", source=source, path=path)
        kinds = [k for k in item if k != "name"]
        if len(kinds) != 1 or not isinstance(item[kinds[0]], Mapping):
            raise ValidationError(
                f"exactly one provider settings mapping expected, got {kinds}",
                source=source,
                path=path,
            )
        settings = item[kinds[0]]
        if "service" in settings and not isinstance(settings["service"], str):
            raise ValidationError("must be a string", source=source, path=f"{path}.service")
        port = settings.get("port")
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
        ):
            raise ValidationError(f"invalid port {port!r}", source=source, path=f"{path}.port")
        if any(p.name == item["name"] for p in found):
            raise ValidationError(f"duplicate name {item['name']!r}", source=source, path=path)
        found.append(ExtensionProvider(item["name"], kinds[0], FrozenMap(settings)))
    return tuple(found)


def parse_default_providers(value: object, source: str) -> FrozenMap[str, tuple[str, ...]]:
    if value is None:
        return EMPTY_MAP
    if not isinstance(value, Mapping):
        raise ValidationError("must be a mapping", source=source, path="defaultProviders")
    out: dict[str, tuple[str, ...]] = {}
    for kind, names in value.items():
        path = f"defaultProviders.{kind}"
        if kind not in _DEFAULT_KINDS:
            raise ValidationError(
                f"unknown key, expected {_DEFAULT_KINDS}", source=source, path=path
            )
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValidationError("must be a list of provider names", source=source, path=path)
        out[kind] = tuple(names)
    return FrozenMap(out)
