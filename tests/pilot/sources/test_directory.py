"""Reading a config directory: any layout, applied files last, overlays, the parse cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pilot.sources.directory import ConfigDirectory, managed_path, scan
from pymesh.errors import ConfigError, ValidationError

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: {subset}}}
"""
SVC = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, labels: {app: reviews}}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
"""


def _subset(load, key=("VirtualService", "default", "reviews")) -> str:
    res = next(r for r in load.resources if r.key == key)
    return res.spec.http[0].route[0].destination.subset


def test_any_layout_and_hidden_entries_skipped(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "svc.yml").write_text(SVC)
    (tmp_path / "vs.yaml").write_text(VS.format(subset="v1"))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.yaml").write_text("not: [valid")
    (tmp_path / ".pymesh-token").write_text("secret\n")
    (tmp_path / "notes.txt").write_text("ignored")
    load = ConfigDirectory(tmp_path).load()
    assert sorted(r.kind for r in load.resources) == ["Service", "VirtualService"]
    assert sorted(Path(s.path).name for s in load.stamps) == ["svc.yml", "vs.yaml"]
    assert load.snapshot.get("Service", "default", "reviews") is not None


def test_applied_files_win_over_other_definitions(tmp_path: Path) -> None:
    # "VirtualService" sorts before "zz" but applied files are read last anyway.
    (tmp_path / "zz.yaml").write_text(VS.format(subset="v1"))
    applied = managed_path(tmp_path, "VirtualService", "default", "reviews")
    applied.parent.mkdir(parents=True)
    applied.write_text(VS.format(subset="v2"))
    load = ConfigDirectory(tmp_path).load()
    assert _subset(load) == "v2"
    assert load.origins[("VirtualService", "default", "reviews")] == (
        str(tmp_path / "zz.yaml"),
        str(applied),
    )
    assert any("defined again" in w.message for w in load.warnings)


def test_overlay_checks_a_change_without_writing(tmp_path: Path) -> None:
    (tmp_path / "vs.yaml").write_text(VS.format(subset="v1"))
    directory = ConfigDirectory(tmp_path)
    new = tmp_path / "VirtualService" / "default" / "reviews.yaml"
    load = directory.load({new: VS.format(subset="v3")})
    assert _subset(load) == "v3"
    assert not new.exists()
    assert not directory.load({tmp_path / "vs.yaml": None}).resources
    assert (tmp_path / "vs.yaml").exists()
    with pytest.raises(ValidationError, match="weight"):
        directory.load({new: VS.format(subset="v3") + "      weight: -1\n"})


def test_unchanged_files_are_not_parsed_again(tmp_path: Path) -> None:
    (tmp_path / "svc.yaml").write_text(SVC)
    (tmp_path / "vs.yaml").write_text(VS.format(subset="v1"))
    directory = ConfigDirectory(tmp_path)
    first = directory.load()
    svc_first = next(r for r in first.resources if r.kind == "Service")
    path = tmp_path / "vs.yaml"
    path.write_text(VS.format(subset="v2"))
    os.utime(path, ns=(1, 1))  # a different stamp even within one mtime tick
    second = directory.load()
    assert next(r for r in second.resources if r.kind == "Service") is svc_first
    assert _subset(second) == "v2"


def test_invalid_file_is_reported_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(VS.format(subset="v1") + "      weight: -5\n")
    with pytest.raises(ValidationError) as info:
        ConfigDirectory(tmp_path).load()
    assert str(tmp_path / "bad.yaml") in str(info.value)
    assert "must not be negative" in str(info.value)


def test_missing_directory_and_unsafe_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        ConfigDirectory(tmp_path / "nope").load()
    with pytest.raises(ValidationError, match="file name"):
        managed_path(tmp_path, "VirtualService", "default", "../escape")
    assert managed_path(tmp_path, "Namespace", "", "prod") == tmp_path / "Namespace" / "prod.yaml"


def test_tls_secrets_are_read_for_gateways(tmp_path: Path) -> None:
    (tmp_path / "secret.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: cred, namespace: istio-system}\n"
        "type: kubernetes.io/tls\nstringData: {tls.crt: CERT, tls.key: KEY}\n"
    )
    load = ConfigDirectory(tmp_path).load()
    [cred] = load.credentials
    assert (cred.namespace, cred.name, cred.cert_chain) == ("istio-system", "cred", b"CERT")


def test_scan_sees_renames(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(SVC)
    before = scan(tmp_path)
    tmp = tmp_path / ".a.yaml.tmp"
    tmp.write_text(SVC)
    os.replace(tmp, tmp_path / "a.yaml")
    assert scan(tmp_path) != before
