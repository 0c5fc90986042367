"""Pilot's configuration sources: a watched directory of YAML and the apply/delete store."""

from pilot.sources.directory import ConfigDirectory, DirectoryLoad, FileStamp, managed_path, scan
from pilot.sources.store import Action, Change, commit, plan_apply, plan_delete, write_atomic
from pilot.sources.watcher import DirectoryWatcher

__all__ = [
    "Action",
    "Change",
    "ConfigDirectory",
    "DirectoryLoad",
    "DirectoryWatcher",
    "FileStamp",
    "commit",
    "managed_path",
    "plan_apply",
    "plan_delete",
    "scan",
    "write_atomic",
]
