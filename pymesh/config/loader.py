"""Read Istio / Kubernetes YAML (or JSON) into typed, validated resources.

Each YAML document is one object (``kind: List`` objects are unpacked). Known kinds are decoded
into their frozen spec classes and validated; kinds that are not mesh configuration are skipped
quietly, unknown ones, unsupported Istio kinds and documents that are not Kubernetes objects at
all (a dashboard's JSON beside the manifests) with a warning. The first invalid object
raises :class:`pymesh.errors.ValidationError` naming file, document index (0-based, counting
every ``---`` section) and field path, plus the line where the YAML parser saw it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog
import yaml

from pymesh.config.codec import decode
from pymesh.config.issues import ConfigWarning, Reporter
from pymesh.config.kinds import Skip, kind_info, skip_reason, split_api_version
from pymesh.config.model.common import EMPTY_MAP, FrozenMap, Resource, spec_field
from pymesh.config.validate import validate_resource
from pymesh.errors import ConfigError, ValidationError

__all__ = ["LoadResult", "SkippedDocument", "load_documents", "load_path"]

log = structlog.get_logger(__name__)

S = TypeVar("S")

SUFFIXES = (".yaml", ".yml", ".json")
_MAX_DEPTH = 64
_MAX_NODES = 1_000_000
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class SkippedDocument:
    """A document that was read but not turned into a resource, and why."""

    source: str
    document: int
    api_version: str
    kind: str
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load produced: resources (later duplicates replace earlier ones), warnings, and
    the documents that were skipped."""

    resources: tuple[Resource[Any], ...] = ()
    warnings: tuple[ConfigWarning, ...] = ()
    skipped: tuple[SkippedDocument, ...] = ()

    def of_kind(self, spec_type: type[S]) -> tuple[Resource[S], ...]:
        """Resources whose spec is exactly ``spec_type`` (``VirtualService``, ``Service``...)."""
        return tuple(r for r in self.resources if type(r.spec) is spec_type)

    def get(self, kind: str, name: str, namespace: str = "default") -> Resource[Any] | None:
        return next((r for r in self.resources if r.key == (kind, namespace, name)), None)


@dataclass(frozen=True, slots=True)
class _ObjectMeta:
    """``metadata``. Server-populated fields (``kubectl get -o yaml``) are accepted, unused."""

    name: str = spec_field(required=True)
    namespace: str = ""
    labels: FrozenMap[str, str] = EMPTY_MAP
    annotations: FrozenMap[str, str] = EMPTY_MAP
    generate_name: str = ""
    uid: object = None
    resource_version: object = None
    generation: object = None
    creation_timestamp: object = None
    deletion_timestamp: object = None
    deletion_grace_period_seconds: object = None
    owner_references: object = None
    finalizers: object = None
    managed_fields: object = None
    self_link: object = None


_ISTIO_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
_ENVELOPE = frozenset({"apiVersion", "kind", "metadata"})
_SPEC_REQUIRED = frozenset({"ServiceEntry", "WorkloadEntry"})
_NOT_AN_OBJECT = Skip("not a Kubernetes object (it has no apiVersion and no kind); skipped", True)


class _Builder:
    """Turns a composed YAML node into plain data while recording each field path's line."""

    def __init__(self, source: str, document: int) -> None:
        self.source = source
        self.document = document
        self.lines: dict[str, int] = {}
        self.nodes = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def _fail(self, path: str, message: str) -> ValidationError:
        return ValidationError(message, source=self.source, document=self.document, path=path)

    def build(self, node: yaml.Node, path: str = "", depth: int = 0) -> Any:
        self.nodes += 1
        if depth > _MAX_DEPTH or self.nodes > _MAX_NODES:
            raise self._fail(path, "document is nested too deeply or too large")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            self.constructor.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self.build(key_node, path, depth + 1)
                line = key_node.start_mark.line + 1
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise self._fail(path, f"unsupported mapping key (line {line})")
                if key in out:
                    raise self._fail(
                        f"{path}.{key}" if path else str(key),
                        f"duplicate key {key!r} (line {line})",
                    )
                # Struct fields are written a.b, map entries a[b]; the builder cannot tell which.
                child = f"{path}.{key}" if path else str(key)
                self.lines[child] = line
                self.lines[f"{path}[{key}]"] = line
                out[key] = self.build(value_node, child, depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [
                self.build(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node.value)
            ]
        return self.constructor.construct_object(node, deep=True)


def _documents(text: str, source: str) -> Iterator[tuple[int, Any, dict[str, int]]]:
    # Counted by hand: a syntax error surfaces while fetching the next document, and its index
    # is the one after the last document that parsed.
    index = 0
    try:
        for node in yaml.compose_all(text, Loader=_LOADER):
            builder = _Builder(source, index)
            data = None if node is None else builder.build(node)
            # Empty documents (a trailing ``---``, only comments) are not objects.
            if data is not None:
                yield index, data, builder.lines
            index += 1
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = e.problem or e.context or "syntax error"
        raise ValidationError(
            f"invalid YAML{where}: {problem}", source=source, document=index
        ) from None
    except yaml.YAMLError as e:
        raise ValidationError(f"invalid YAML: {e}", source=source, document=index) from None


def _required_string(data: dict[Any, Any], key: str, rep: Reporter) -> str:
    value = data.get(key)
    if value is None:
        rep.fail(key, "required field is missing")
    if not isinstance(value, str) or not value:
        rep.fail(key, f"must be a non-empty string, got {value!r}")
    return value


class _Accumulator:
    def __init__(self, default_namespace: str) -> None:
        self.default_namespace = default_namespace
        self.resources: dict[tuple[str, str, str], Resource[Any]] = {}
        self.warnings: list[ConfigWarning] = []
        self.skipped: list[SkippedDocument] = []

    def result(self) -> LoadResult:
        return LoadResult(tuple(self.resources.values()), tuple(self.warnings), tuple(self.skipped))

    def warn(self, warning: ConfigWarning) -> None:
        # Returned, not logged: pilot logs what it loads, the CLI prints what it applies.
        self.warnings.append(warning)

    def flush(self, rep: Reporter) -> None:
        for warning in rep.warnings:
            self.warn(warning)
        rep.warnings.clear()

    def add_text(self, text: str, source: str) -> None:
        for index, data, lines in _documents(text, source):
            if not isinstance(data, dict):
                rep = Reporter(source, index, lines)
                rep.fail("", f"a document must be a mapping (an object), got {type(data).__name__}")
            kind = data.get("kind")
            if isinstance(kind, str) and kind.endswith("List") and "items" in data:
                items = data["items"] or []
                if not isinstance(items, list):
                    Reporter(source, index, lines).fail("items", "items must be a list")
                for i, item in enumerate(items):
                    self.add_object(item, Reporter(source, index, lines, prefix=f"items[{i}]."))
            else:
                self.add_object(data, Reporter(source, index, lines))

    def add_object(self, data: object, rep: Reporter) -> None:
        if not isinstance(data, dict):
            rep.fail("", "an object must be a mapping")
        if "apiVersion" not in data and "kind" not in data:
            # A JSON or YAML file that is not a Kubernetes object at all (a Grafana dashboard
            # beside the manifests): say so and go on; one with a kind and no apiVersion is a
            # broken object and fails below.
            self._skip(rep, "", "", None, _NOT_AN_OBJECT)
            return
        api_version = _required_string(data, "apiVersion", rep)
        kind = _required_string(data, "kind", rep)
        meta = data.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        info = kind_info(api_version, kind)
        if info is None:
            self._skip(rep, api_version, kind, name)
            return
        group, version = split_api_version(api_version)
        if version not in info.versions:
            supported = ", ".join(sorted(f"{group}/{v}" if group else v for v in info.versions))
            rep.fail(
                "apiVersion",
                f"unsupported apiVersion {api_version!r} for {kind} (supported: {supported})",
            )
        if group.endswith(".istio.io"):
            for key in data:
                if key not in _ISTIO_TOP_LEVEL:
                    rep.fail(
                        str(key),
                        f"unknown field {key!r} (expected apiVersion, kind, metadata, spec)",
                    )
        if meta is None:
            rep.fail("metadata", "required field is missing")
        metadata = decode(_ObjectMeta, meta, "metadata", rep)
        if info.top_level:
            fields = {k: v for k, v in data.items() if k not in _ENVELOPE}
            spec = decode(info.spec_type, fields, "", rep)
        else:
            raw_spec = data.get("spec")
            if raw_spec is None and kind in _SPEC_REQUIRED:
                rep.fail("spec", "required field is missing")
            spec = decode(info.spec_type, {} if raw_spec is None else raw_spec, "spec", rep)
        namespace = (metadata.namespace or self.default_namespace) if info.namespaced else ""
        res: Resource[Any] = Resource(
            kind=kind,
            api_version=api_version,
            name=metadata.name,
            namespace=namespace,
            spec=spec,
            labels=metadata.labels,
            annotations=metadata.annotations,
            source=rep.source,
            document=rep.document,
        )
        validate_resource(res, rep)
        self.flush(rep)
        previous = self.resources.get(res.key)
        if previous is not None:
            self.warn(
                ConfigWarning(
                    f"{res.ref} is defined again; this definition replaces the one in "
                    f"{previous.source} document {previous.document}",
                    rep.source,
                    rep.document,
                )
            )
        self.resources[res.key] = res

    def _skip(
        self, rep: Reporter, api_version: str, kind: str, name: object, skip: Skip | None = None
    ) -> None:
        skip = skip or skip_reason(api_version, kind)
        reason = skip.reason if skip is not None else "unknown kind; skipped"
        label = name if isinstance(name, str) else ""
        self.skipped.append(
            SkippedDocument(rep.source or "", rep.document or 0, api_version, kind, label, reason)
        )
        if skip is _NOT_AN_OBJECT:
            rep.warn("", reason)
            self.flush(rep)
        elif skip is None or skip.warn:
            what = f"{kind} {label!r}" if label else kind
            rep.warn("kind", f"{what} ({api_version}): {reason}")
            self.flush(rep)
        else:
            log.debug(
                "config_skipped",
                source=rep.source,
                document=rep.document,
                kind=kind,
                name=label,
                reason=reason,
            )


def load_documents(
    text: str, source: str = "<string>", *, default_namespace: str = "default"
) -> LoadResult:
    """Load every object in a (multi-document) YAML or JSON text."""
    acc = _Accumulator(default_namespace)
    acc.add_text(text, source)
    return acc.result()


def _files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        # Hidden entries include the ``..data`` symlink farms of mounted ConfigMaps, which
        # would otherwise load every file twice.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(SUFFIXES):
                yield Path(dirpath, name)


def load_path(path: str | os.PathLike[str], *, default_namespace: str = "default") -> LoadResult:
    """Load a file, or every ``*.yaml``/``*.yml``/``*.json`` under a directory (recursively,
    in sorted order)."""
    root = Path(path)
    if root.is_dir():
        files = list(_files(root))
    elif root.is_file():
        files = [root]
    else:
        raise ConfigError(f"{root}: no such file or directory")
    acc = _Accumulator(default_namespace)
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValidationError(f"not UTF-8 text: {e.reason}", source=str(file)) from None
        except OSError as e:
            raise ConfigError(f"{file}: {e.strerror}") from None
        acc.add_text(text, str(file))
    return acc.result()
