"""Every relative link of the README and the guides under docs/ points at a file or folder that exists."""

import re
from pathlib import Path

KERAS_FREE = True
ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)")


def _broken(page: Path) -> list[str]:
    targets = [t for t in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", t)]
    return [t for t in targets if not (page.parent / t).exists()]


def test_readme_and_guides_have_no_broken_links():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = {p.relative_to(ROOT).as_posix(): b for p in pages if (b := _broken(p))}
    assert not broken, broken


def test_the_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("")
    page.write_text("[ok](there.md) [web](https://example.org) [gone](missing/report.md#top)")
    assert _broken(page) == ["missing/report.md"]
