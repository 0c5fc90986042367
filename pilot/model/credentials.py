"""TLS credentials for Gateway ``credentialName``: Kubernetes Secrets read from the config dir.

The config loader skips Secrets (they are not mesh configuration), so they are read here:
``kubernetes.io/tls`` Secrets (``tls.crt``, ``tls.key``, optional ``ca.crt``) and Istio's
generic form (``cert``, ``key``, ``cacert``), from ``data`` (base64) or ``stringData``.
:func:`credentials_from_text` is pure; :func:`load_credentials` reads files.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pymesh.config.loader import SUFFIXES
from pymesh.errors import ConfigError, ValidationError

__all__ = ["TlsCredential", "credentials_from_text", "load_credentials"]

_CERT_KEYS = ("tls.crt", "cert")
_KEY_KEYS = ("tls.key", "key")
_CA_KEYS = ("ca.crt", "cacert")


@dataclass(frozen=True, slots=True)
class TlsCredential:
    """A certificate chain and key (PEM), and/or a CA bundle for client verification."""

    namespace: str
    name: str
    cert_chain: bytes = b""
    private_key: bytes = b""
    ca_cert: bytes = b""


def _field(
    data: Mapping[str, Any], strings: Mapping[str, Any], keys: tuple[str, ...], where: str
) -> bytes:
    for key in keys:
        if key in strings and strings[key] is not None:
            return str(strings[key]).encode()
        if key in data and data[key] is not None:
            try:
                return base64.b64decode(str(data[key]), validate=True)
            except (binascii.Error, ValueError):
                raise ValidationError(f"data[{key}] is not base64", source=where) from None
    return b""


def credentials_from_text(
    text: str, source: str = "<string>", default_namespace: str = "default"
) -> tuple[TlsCredential, ...]:
    """Every TLS credential in a (multi-document) YAML text; other documents are ignored."""
    found = []
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        raise ValidationError(f"invalid YAML: {e}", source=source) from None
    for doc in documents:
        items = doc.get("items") if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for item in items or ():
            if not isinstance(item, dict) or item.get("kind") != "Secret":
                continue
            meta = item.get("metadata") or {}
            name = meta.get("name")
            if not isinstance(name, str) or not name:
                continue
            namespace = meta.get("namespace") or default_namespace
            where = f"{source}: Secret {namespace}/{name}"
            data = item.get("data") or {}
            strings = item.get("stringData") or {}
            if not isinstance(data, dict) or not isinstance(strings, dict):
                raise ValidationError("data and stringData must be mappings", source=where)
            credential = TlsCredential(
                namespace=str(namespace),
                name=name,
                cert_chain=_field(data, strings, _CERT_KEYS, where),
                private_key=_field(data, strings, _KEY_KEYS, where),
                ca_cert=_field(data, strings, _CA_KEYS, where),
            )
            if credential.cert_chain or credential.ca_cert:
                found.append(credential)
    return tuple(found)


def _files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(SUFFIXES):
                yield Path(dirpath, name)


def load_credentials(
    path: str | os.PathLike[str], *, default_namespace: str = "default"
) -> tuple[TlsCredential, ...]:
    """TLS Secrets in a file or under a directory (the same files the config loader reads)."""
    root = Path(path)
    if not root.exists():
        raise ConfigError(f"{root}: no such file or directory")
    found: list[TlsCredential] = []
    for file in _files(root):
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{file}: {e}") from None
        if "Secret" in text:
            found.extend(credentials_from_text(text, str(file), default_namespace))
    return tuple(found)
