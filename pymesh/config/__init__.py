"""pymesh configuration: Istio / Kubernetes YAML in, typed immutable resources out.

* :func:`load_path` / :func:`load_documents` parse, decode and validate (errors are
  :class:`pymesh.errors.ValidationError` with file, document index and field path);
* :mod:`pymesh.config.model` holds the frozen spec classes (``VirtualService``...);
* :func:`pymesh.config.analyze.analyze` runs the cross-resource checks (the function is not
  re-exported here, so ``pymesh.config.analyze`` stays the module);
* :class:`ConfigSnapshot` / :class:`SnapshotHolder` index and publish a resource set;
* :mod:`pymesh.config.hosts` and :mod:`pymesh.config.durations` are the naming and time helpers.
"""

from pymesh.config.analyze import Finding, Level
from pymesh.config.codec import encode
from pymesh.config.durations import format_duration, parse_duration, to_seconds_nanos
from pymesh.config.hosts import (
    host_matches,
    host_subset_of,
    most_specific_match,
    resolve_gateway_name,
    service_fqdn,
    to_fqdn,
)
from pymesh.config.issues import ConfigWarning
from pymesh.config.kinds import KINDS, KindInfo
from pymesh.config.loader import LoadResult, SkippedDocument, load_documents, load_path
from pymesh.config.model.common import FrozenMap, Resource
from pymesh.config.snapshot import ConfigSnapshot, SnapshotHolder

__all__ = [
    "KINDS",
    "ConfigSnapshot",
    "ConfigWarning",
    "Finding",
    "FrozenMap",
    "KindInfo",
    "Level",
    "LoadResult",
    "Resource",
    "SkippedDocument",
    "SnapshotHolder",
    "encode",
    "format_duration",
    "host_matches",
    "host_subset_of",
    "load_documents",
    "load_path",
    "most_specific_match",
    "parse_duration",
    "resolve_gateway_name",
    "service_fqdn",
    "to_fqdn",
    "to_seconds_nanos",
]
