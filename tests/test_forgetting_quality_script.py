"""benchmarks/forgetting_quality.py (``obliviate.io.write_markdown_section``): ``--out`` rewrites
only its own marked section (``--marker``,
default ``forgetting-quality``), keeps the markers and every other byte of the file, and appends
the section when absent; an ``npz:`` dataset's section names the forget recipe."""

from __future__ import annotations

from pathlib import Path

from _benchmarks import load

from obliviate.io import markdown_markers, write_markdown_section

ROOT = Path(__file__).resolve().parents[1]
script = load("forgetting_quality")


def test_default_markers_are_the_digits_section_of_the_docs(tmp_path):
    """Rewriting the digits section of docs/unlearning.md with its own lines (what the script
    emitted) gives the file back byte for byte."""
    start, end = markdown_markers(script.MARKER)
    assert (start, end) == ("<!-- forgetting-quality:start -->", "<!-- forgetting-quality:end -->")
    doc = (ROOT / "docs" / "unlearning.md").read_text()
    assert doc.count(start) == 1 and doc.count(end) == 1
    lines = doc[doc.index(start) + len(start) + 1 : doc.index(end) - 1].split("\n")
    copy = tmp_path / "unlearning.md"
    copy.write_text(doc)
    write_markdown_section(copy, lines, script.MARKER)
    assert copy.read_text() == doc


def test_a_named_section_is_rewritten_alone(tmp_path):
    digits = "<!-- forgetting-quality:start -->\nDIGITS\n<!-- forgetting-quality:end -->"
    mnist = "<!-- forgetting-quality-mnist:start -->\nOLD\n<!-- forgetting-quality-mnist:end -->"
    before = f"# title\n\n{digits}\n\nbetween\n\n{mnist}\ntail\n"
    path = tmp_path / "doc.md"
    path.write_text(before)
    write_markdown_section(path, ["", "NEW 1", "NEW 2"], "forgetting-quality-mnist")
    new = "<!-- forgetting-quality-mnist:start -->\n\nNEW 1\nNEW 2\n<!-- forgetting-quality-mnist:end -->"
    assert path.read_text() == f"# title\n\n{digits}\n\nbetween\n\n{new}\ntail\n"
    # the default marker rewrites the digits section and leaves the MNIST one
    write_markdown_section(path, ["D2"], script.MARKER)
    digits2 = "<!-- forgetting-quality:start -->\nD2\n<!-- forgetting-quality:end -->"
    assert path.read_text() == f"# title\n\n{digits2}\n\nbetween\n\n{new}\ntail\n"


def test_an_absent_section_is_appended_with_its_markers(tmp_path):
    path = tmp_path / "doc.md"
    write_markdown_section(path, ["A"], "forgetting-quality-mnist")  # no file yet
    assert path.read_text() == (
        "<!-- forgetting-quality-mnist:start -->\nA\n<!-- forgetting-quality-mnist:end -->\n"
    )
    path.write_text(
        "text\n\n\n<!-- forgetting-quality:start -->\nD\n<!-- forgetting-quality:end -->\n"
    )
    write_markdown_section(path, ["M"], "forgetting-quality-mnist")
    assert path.read_text() == (
        "text\n\n\n<!-- forgetting-quality:start -->\nD\n<!-- forgetting-quality:end -->\n\n"
        "<!-- forgetting-quality-mnist:start -->\nM\n<!-- forgetting-quality-mnist:end -->\n"
    )
    # damaged markers: refused, the file unchanged (appending, then rewriting from the stray
    # marker on the next run, would delete the text after it)
    import pytest

    from obliviate.errors import ObliviateError

    for damaged in (
        "<!-- x:end -->\nkeep\n<!-- x:start -->\n",  # end before start
        "top\n<!-- x:start -->\nold\nbottom\n",  # a start without an end
        "<!-- x:start -->\na\n<!-- x:end -->\n<!-- x:start -->\nb\n<!-- x:end -->\n",  # twice
    ):
        odd = tmp_path / "odd.md"
        odd.write_text(damaged)
        with pytest.raises(ObliviateError, match="markers of section 'x' are damaged"):
            write_markdown_section(odd, ["X"], "x")
        assert odd.read_text() == damaged


def test_npz_recipe_line_names_the_forget_recipe():
    from obliviate.recipes import FORGET_RECIPES

    line = script.recipe_line("npz:runs/some.npz")
    assert "`npz:runs/some.npz`" in line and "forget recipe `npz`" in line
    for key, value in FORGET_RECIPES["npz"].items():
        assert f"{key}={value}" in line


def test_bad_arguments_are_refused_before_any_training(tmp_path):
    import argparse

    def args(**kw):
        base = {"n_models": 32, "marker": "forgetting-quality", "out": None}
        return argparse.Namespace(**{**base, **kw})

    assert script.check_args(args()) is None
    assert "--n-models 2" in script.check_args(args(n_models=2))
    assert "--marker" in script.check_args(args(marker="x -->"))
    assert "--marker" in script.check_args(args(marker=""))
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a file" in script.check_args(args(out=str(afile / "doc.md")))
    assert "does not exist" in script.check_args(args(out=str(tmp_path / "new" / "doc.md")))
    assert "is a folder" in script.check_args(args(out=str(tmp_path)))
    damaged = tmp_path / "damaged.md"
    damaged.write_text("<!-- forgetting-quality:start -->\nno end\n")
    assert "damaged" in script.check_args(args(out=str(damaged)))
    assert script.check_args(args(out=str(tmp_path / "doc.md"))) is None


def test_the_section_writer_keeps_crlf_permissions_and_links(tmp_path):
    import os

    import pytest

    from obliviate.errors import ObliviateError

    doc = tmp_path / "doc.md"
    doc.write_bytes(b"# t\r\n\r\n<!-- s:start -->\r\nold\r\n<!-- s:end -->\r\ntail\r\n")
    os.chmod(doc, 0o600)
    link = tmp_path / "link.md"
    link.symlink_to(doc)
    write_markdown_section(link, ["new"], "s")
    assert link.is_symlink()  # the link stays a link; the file it names is rewritten
    assert doc.read_bytes() == b"# t\r\n\r\n<!-- s:start -->\r\nnew\r\n<!-- s:end -->\r\ntail\r\n"
    assert os.stat(doc).st_mode & 0o777 == 0o600
    bad = tmp_path / "bad.md"
    bad.write_bytes(b"\xff\xfe not text")
    with pytest.raises(ObliviateError, match="not UTF-8 text"):
        write_markdown_section(bad, ["x"], "s")
    assert bad.read_bytes() == b"\xff\xfe not text"
