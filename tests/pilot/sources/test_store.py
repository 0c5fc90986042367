"""Planning and writing apply/delete: what is created, configured, unchanged or refused."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from pilot.sources.directory import ConfigDirectory
from pilot.sources.store import Action, commit, overlay, plan_apply, plan_delete, write_atomic
from pymesh.config import ConfigSnapshot
from pymesh.errors import ValidationError

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


def _snapshot(directory: ConfigDirectory) -> ConfigSnapshot:
    return directory.load().snapshot


def test_apply_plans_one_file_per_object_with_the_namespace_filled_in(tmp_path: Path) -> None:
    directory = ConfigDirectory(tmp_path)
    body = (
        VS.format(subset="v1")
        + "---\n"
        + (
            "apiVersion: v1\nkind: List\nitems:\n"
            "- apiVersion: v1\n  kind: Service\n  metadata: {name: reviews, namespace: shop}\n"
            "  spec: {ports: [{port: 9080, name: http}]}\n"
            "- apiVersion: v1\n  kind: Secret\n  metadata: {name: settings}\n  data: {a: Yg==}\n"
        )
    )
    changes = plan_apply(directory, body, ConfigSnapshot())
    assert [(c.kind, c.namespace, c.name, c.action) for c in changes] == [
        ("VirtualService", "default", "reviews", Action.CREATED),
        ("Service", "shop", "reviews", Action.CREATED),
        ("Secret", "", "settings", Action.SKIPPED),
    ]
    vs = changes[0]
    assert vs.path == str(tmp_path / "VirtualService" / "default" / "reviews.yaml")
    stored = yaml.safe_load(vs.text or "")
    assert stored["metadata"] == {"name": "reviews", "namespace": "default"}
    assert changes[2].message == "not mesh configuration"


def test_reapplying_equal_content_is_unchanged_and_a_change_configured(tmp_path: Path) -> None:
    directory = ConfigDirectory(tmp_path)
    commit(directory, plan_apply(directory, VS.format(subset="v1"), ConfigSnapshot()))
    current = _snapshot(directory)
    # Same content, other formatting: still unchanged.
    same = VS.format(subset="v1").replace("[reviews]", "\n  - reviews")
    [c] = plan_apply(directory, same, current)
    assert c.action is Action.UNCHANGED and c.text is None and not overlay([c])
    [c] = plan_apply(directory, VS.format(subset="v2"), current)
    assert c.action is Action.CONFIGURED


def test_invalid_body_plans_nothing(tmp_path: Path) -> None:
    directory = ConfigDirectory(tmp_path)
    with pytest.raises(ValidationError, match=r"<apply>: document 0: spec\.http"):
        plan_apply(directory, VS.format(subset="v1") + "      weight: -1\n", ConfigSnapshot())
    with pytest.raises(ValidationError, match="no objects"):
        plan_apply(directory, "# nothing\n", ConfigSnapshot())


def test_delete_removes_applied_files_only(tmp_path: Path) -> None:
    directory = ConfigDirectory(tmp_path)
    (tmp_path / "mine.yaml").write_text(VS.format(subset="v1").replace("reviews\n", "ratings\n", 1))
    commit(directory, plan_apply(directory, VS.format(subset="v2"), ConfigSnapshot()))
    load = directory.load()
    changes = plan_delete(
        directory,
        load,
        keys=[
            ("VirtualService", "default", "reviews"),
            ("VirtualService", "default", "ratings"),
            ("VirtualService", "default", "nope"),
        ],
    )
    assert [c.action for c in changes] == [Action.DELETED, Action.REFUSED, Action.NOT_FOUND]
    assert "mine.yaml" in changes[1].message
    commit(directory, [changes[0]])
    assert not (tmp_path / "VirtualService").exists(), "empty directories are removed"
    assert (tmp_path / "mine.yaml").exists()


def test_delete_by_body_and_shadowed_definitions(tmp_path: Path) -> None:
    directory = ConfigDirectory(tmp_path)
    (tmp_path / "base.yaml").write_text(VS.format(subset="v1"))
    commit(directory, plan_apply(directory, VS.format(subset="v2"), directory.load().snapshot))
    [c] = plan_delete(directory, directory.load(), body=VS.format(subset="anything"))
    assert c.action is Action.DELETED
    assert c.message == f"still defined in {tmp_path / 'base.yaml'}"
    with pytest.raises(ValidationError, match=r"kind and metadata\.name"):
        plan_delete(directory, directory.load(), body="apiVersion: v1\nkind: Service\n")


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.yaml"
    write_atomic(target, "one\n")
    write_atomic(target, "two\n")
    assert target.read_text() == "two\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["b.yaml"]


def test_commit_refuses_to_remove_user_files(tmp_path: Path) -> None:
    directory = ConfigDirectory(tmp_path)
    (tmp_path / "user.yaml").write_text("x: 1\n")
    from pilot.sources.store import Change

    bogus = Change(
        "VirtualService", "default", "x", Action.DELETED, path=str(tmp_path / "user.yaml")
    )
    with pytest.raises(ValidationError, match="did not write"):
        commit(directory, [bogus])
    assert (tmp_path / "user.yaml").exists()
