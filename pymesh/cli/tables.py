"""Column-aligned tables, the way istioctl and kubectl print them."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_table"]


def render_table(header: Sequence[str], rows: Sequence[Sequence[object]], gap: int = 3) -> str:
    """Left-aligned columns separated by ``gap`` spaces; trailing spaces trimmed."""
    cells = [[str(c) for c in header], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append((" " * gap).join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)
