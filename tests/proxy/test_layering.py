"""The request path's layers meet only at their seams (checked on the import graph)."""

from __future__ import annotations

import ast
from pathlib import Path

import proxy

ROOT = Path(proxy.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_upstream_imports_nothing_from_the_http_layer() -> None:
    offenders = {
        m.name: sorted(n for n in _imports(m) if n.startswith("proxy.http"))
        for m in (ROOT / "upstream").glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_filters_and_router_use_neither_connections_nor_transports() -> None:
    concrete = {"proxy.http.connection_manager", "proxy.upstream.connection", "asyncio"}
    modules = [*(ROOT / "filters").glob("*.py")] + [
        ROOT / "http" / name
        for name in ("router.py", "upstream_request.py", "stream.py", "filter_manager.py")
    ]
    offenders = {m.name: sorted(_imports(m) & concrete) for m in modules}
    assert {k: v for k, v in offenders.items() if v} == {}
    for module in modules:
        assert ".transport" not in module.read_text(), module.name
