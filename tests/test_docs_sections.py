"""docs/unlearning.md holds the generated sections of several benchmark scripts; each script
rewrites only its own (obliviate.io.write_markdown_section), so each section must be present
exactly once, start before end, under the name the script writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from _benchmarks import load

from obliviate.io import markdown_markers, write_markdown_section

ROOT = Path(__file__).resolve().parents[1]


def _marker(script: str) -> str:
    return str(load(script).MARKER)


@pytest.mark.parametrize(
    "name",
    [_marker("unlearning_table"), _marker("forgetting_quality"), "forgetting-quality-mnist"],
)
def test_each_generated_section_is_in_the_docs_once(name):
    doc = (ROOT / "docs" / "unlearning.md").read_text()
    start, end = markdown_markers(name)
    assert doc.count(start) == 1 and doc.count(end) == 1
    assert doc.index(start) < doc.index(end)


def test_rewriting_one_section_keeps_the_others(tmp_path):
    doc = (ROOT / "docs" / "unlearning.md").read_text()
    copy = tmp_path / "unlearning.md"
    copy.write_text(doc)
    write_markdown_section(copy, ["# new digits table"], _marker("unlearning_table"))
    text = copy.read_text()
    start, end = markdown_markers("unlearning-table")
    assert text[text.index(start) : text.index(end)].count("\n") == 2  # start, the line, end
    after = doc[doc.index(end) :]
    assert text.endswith(after)  # every later section (forgetting quality, tune, ...) kept


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "x"], "--seeds 'x'"),
        (["--methods", "nosuch"], "unknown nosuch"),
        (["--methods", "ssd,ssd"], "repeats a method"),
        (["--forget", "bogus:1"], "unknown forget-set kind 'bogus'"),
        (["--out", "."], "is a folder"),
    ],
)
def test_unlearning_table_refuses_bad_arguments_before_any_training(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        load("unlearning_table").main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
