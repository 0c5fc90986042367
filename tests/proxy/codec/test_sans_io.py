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


def test_codec_covers_both_protocols() -> None:
    package = Path(proxy.codec.__file__).parent
    names = {m.name for m in package.glob("*.py")}
    assert {"http1.py", "h2.py", "_h2_base.py", "h2_events.py"} <= names


def test_only_the_h2_codec_imports_the_http2_library() -> None:
    """The HTTP/2 library sits behind the codec's seam, so it can be swapped: nothing else in
    the project imports it."""
    root = Path(proxy.codec.__file__).parents[2]
    allowed = {root / "proxy" / "codec" / "h2.py", root / "proxy" / "codec" / "_h2_base.py"}
    offenders = []
    for top in ("proxy", "pilot", "pymesh", "mixer", "auth"):
        for path in (root / top).rglob("*.py"):
            if path not in allowed and _imports(path) & {"ngh2", "h2", "hpack", "hyperframe"}:
                offenders.append(str(path.relative_to(root)))
    assert offenders == []
