"""common.markdown: the project's one Markdown table writer."""

import pytest

from common import markdown

KERAS_FREE = True


def test_a_table_is_header_rule_and_rows_with_pipes_escaped():
    assert markdown.table(["model", "ms"], [["B0", 14.0], ["a|b", "—"]]) == (
        "| model | ms |\n|---|---|\n| B0 | 14.0 |\n| a\\|b | — |"
    )


def test_an_empty_table_can_be_replaced():
    assert markdown.table(["a"], [], empty="") == ""
    assert markdown.table(["a"], []) == "| a |\n|---|"


def test_a_section_between_markers_is_replaced_and_the_prose_around_it_kept(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- b -->\nold table\n<!-- e -->\nafter\n")
    markdown.replace_section(str(doc), "| new |", "<!-- b -->", "<!-- e -->")
    assert doc.read_text() == "intro\n<!-- b -->\n| new |\n<!-- e -->\nafter\n"


def test_a_file_without_the_markers_is_refused_and_left_as_it_was(tmp_path):
    from common import cli

    doc = tmp_path / "doc.md"
    doc.write_text("no markers here\n")
    with pytest.raises(cli.UsageError, match="--docs.*markers <!-- b --> and <!-- e -->"):
        markdown.replace_section(str(doc), "x", "<!-- b -->", "<!-- e -->")
    assert doc.read_text() == "no markers here\n"
