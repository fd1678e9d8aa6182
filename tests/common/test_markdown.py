"""common.markdown: the project's one Markdown table writer."""

from common import markdown

KERAS_FREE = True


def test_a_table_is_header_rule_and_rows_with_pipes_escaped():
    assert markdown.table(["model", "ms"], [["B0", 14.0], ["a|b", "—"]]) == (
        "| model | ms |\n|---|---|\n| B0 | 14.0 |\n| a\\|b | — |"
    )


def test_an_empty_table_can_be_replaced():
    assert markdown.table(["a"], [], empty="") == ""
    assert markdown.table(["a"], []) == "| a |\n|---|"
