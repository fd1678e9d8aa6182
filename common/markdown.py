"""Markdown tables, the one way every report of the project writes them (GitHub-flavoured pipe tables)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def row(cells: Sequence) -> str:
    """One table line: each cell is `str(cell)` with `|` escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def table_lines(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    """The header row, the `|---|` rule and one line per row (`row`)."""
    return [row(header), "|" + "---|" * len(header)] + [row(cells) for cells in rows]


def table(header: Sequence[str], rows: Iterable[Sequence], *, empty: str | None = None) -> str:
    """`table_lines` joined by newlines; `empty` (when given) instead of a table without rows."""
    lines = table_lines(header, rows)
    return empty if empty is not None and len(lines) == 2 else "\n".join(lines)


def replace_section(path: str, text: str, begin: str, end: str, *, flag: str = "docs") -> None:
    """Rewrite, atomically, the part of the Markdown file `path` between the markers `begin` and `end`.

    How the benchmarks keep their table in the docs current without touching the prose around it. A file
    without both markers is refused, naming `--flag`, before anything is written.
    """
    from common import cli
    from common.files import atomic_write

    with open(path) as f:
        doc = f.read()
    if begin not in doc or end not in doc:
        raise cli.UsageError(flag, path, f"a Markdown file holding the markers {begin} and {end}")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    atomic_write(path, head + begin + "\n" + text + "\n" + end + tail)
