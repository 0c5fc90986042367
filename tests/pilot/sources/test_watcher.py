"""The polling watcher: changes are picked up, broken trees keep the last good config."""

from __future__ import annotations

from pathlib import Path

from pilot.sources.directory import ConfigDirectory, DirectoryLoad
from pilot.sources.watcher import DirectoryWatcher
from tests.support.waiting import wait_until

SVC = """\
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{name: http, port: 9080}}]
"""


class Recorder:
    def __init__(self) -> None:
        self.loads: list[DirectoryLoad] = []

    async def __call__(self, load: DirectoryLoad) -> None:
        self.loads.append(load)

    def names(self) -> list[str]:
        return sorted(r.name for r in self.loads[-1].resources)


async def test_changes_added_removed_and_broken(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(SVC.format(name="a"))
    rec = Recorder()
    watcher = DirectoryWatcher(ConfigDirectory(tmp_path), rec, interval=3600)
    await watcher.start()
    try:
        assert rec.names() == ["a"]
        assert not await watcher.poll(), "nothing changed"
        (tmp_path / "b.yaml").write_text(SVC.format(name="b"))
        assert await watcher.poll()
        assert rec.names() == ["a", "b"]
        (tmp_path / "a.yaml").unlink()
        assert await watcher.poll()
        assert rec.names() == ["b"]
        # Broken: no load, the error is kept, the last good config stays current.
        (tmp_path / "c.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: [\n")
        assert not await watcher.poll()
        assert watcher.last_error is not None and "c.yaml" in watcher.last_error
        assert watcher.current is rec.loads[-1]
        assert len(rec.loads) == 3
        assert not await watcher.poll(), "the same broken tree is not retried every poll"
        (tmp_path / "c.yaml").write_text(SVC.format(name="c"))
        assert await watcher.poll()
        assert rec.names() == ["b", "c"] and watcher.last_error is None
    finally:
        await watcher.stop()


async def test_starting_on_a_broken_tree_leaves_no_config(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_text("kind: [\n")
    rec = Recorder()
    watcher = DirectoryWatcher(ConfigDirectory(tmp_path), rec, interval=3600)
    await watcher.start()
    await watcher.stop()
    assert rec.loads == [] and watcher.current is None and watcher.last_error


async def test_the_poll_loop_sees_a_change_within_its_interval(tmp_path: Path) -> None:
    rec = Recorder()
    watcher = DirectoryWatcher(ConfigDirectory(tmp_path), rec, interval=0.02)
    await watcher.start()
    try:
        (tmp_path / "late.yaml").write_text(SVC.format(name="late"))
        await wait_until(lambda: rec.loads and rec.names() == ["late"], "the change was loaded")
    finally:
        await watcher.stop()
