"""Envoy v3 protos → the proxy model. The same functions serve the bootstrap and xDS pushes;
errors are ``ValidationError`` / ``UnsupportedError`` with paths relative to the resource
(the caller prefixes the resource name or the bootstrap position)."""

from __future__ import annotations

from proxy.config.translate.clusters import translate_cluster, translate_cluster_load_assignment
from proxy.config.translate.filters import (
    FilterEntry,
    FilterRegistry,
    FilterTranslator,
    default_registry,
)
from proxy.config.translate.listeners import translate_listener
from proxy.config.translate.routes import translate_route_configuration
from proxy.config.translate.support import IGNORED, SUPPORTED, check_supported
from proxy.config.translate.tls import translate_secret

__all__ = [
    "IGNORED",
    "SUPPORTED",
    "FilterEntry",
    "FilterRegistry",
    "FilterTranslator",
    "check_supported",
    "default_registry",
    "translate_cluster",
    "translate_cluster_load_assignment",
    "translate_listener",
    "translate_route_configuration",
    "translate_secret",
]
