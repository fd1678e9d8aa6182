"""Markdown tables, the one way every report of the project writes them (GitHub-flavoured pipe tables)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table_lines(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    """The header row, the `|---|` rule and one line per row; each cell is `str(cell)` with `|` escaped."""

    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


def table(header: Sequence[str], rows: Iterable[Sequence], *, empty: str | None = None) -> str:
    """`table_lines` joined by newlines; `empty` (when given) instead of a table without rows."""
    lines = table_lines(header, rows)
    return empty if empty is not None and len(lines) == 2 else "\n".join(lines)
