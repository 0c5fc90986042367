"""The codec is sans-I/O: none of its modules may import an I/O or event-loop module."""

from __future__ import annotations

import ast
from pathlib import Path

import proxy.codec

FORBIDDEN = {"asyncio", "socket", "selectors", "ssl", "uvloop", "threading", "subprocess"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_codec_modules_import_no_io() -> None:
    package = Path(proxy.codec.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) >= 5
    offenders = {m.name: sorted(_imports(m) & FORBIDDEN) for m in modules}
    assert {name: bad for name, bad in offenders.items() if bad} == {}
