"""``obliviate list``: first-sentence summaries that abbreviations do not cut, and the paper of
every registered method (issue 15)."""

from __future__ import annotations

import json

import pytest

from obliviate.cli.listing import citation, rows, summary
from obliviate.cli.main import main


@pytest.mark.parametrize(
    ("doc", "first"),
    [
        (
            "Certified removal by a Newton step (Guo et al., 2020, Eq. 3), on the head. More.",
            "Certified removal by a Newton step (Guo et al., 2020, Eq. 3), on the head.",
        ),
        ("Distillation (Bonato et al. 2024). Second.", "Distillation (Bonato et al. 2024)."),
        ("As in Guo et al. 2020 we step. Second.", "As in Guo et al. 2020 we step."),
        ("Noise, e.g. Gaussian, i.e. shaped. Second.", "Noise, e.g. Gaussian, i.e. shaped."),
        ("Anchor, cf. EWC, vs. SI. Second.", "Anchor, cf. EWC, vs. SI."),
        ("See Eq. 4 and Sec. 3. Second.", "See Eq. 4 and Sec. 3."),
        ("By J. S. Vitter. Second.", "By J. S. Vitter."),
        ("One line\nwrapped here. Second.", "One line wrapped here."),
        ("Uses ``x.y`` and :class:`A.B`. Second.", "Uses x.y and A.B."),
        ("Does it work? Yes.", "Does it work?"),
        ("No full stop at all", "No full stop at all"),
        (None, ""),
    ],
)
def test_summary_keeps_abbreviations_whole(doc, first):
    assert summary(doc) == first


def test_citation_from_the_references_section():
    doc = """Summary.

    References
    ----------
    Guo, C., Goldstein, T., Hannun, A. & van der Maaten, L. (2020). Certified data removal.
    ICML.
    """
    assert citation(doc) == "Guo et al. 2020"
    two = "S.\n\nReferences\n----------\nLi, Z. & Hoiem, D. (2017). Learning without Forgetting.\n"
    assert citation(two) == "Li & Hoiem 2017"
    one = "S.\n\nReferences\n----------\nRatcliff, R. (1990). Connectionist models.\n"
    assert citation(one) == "Ratcliff 1990"
    short = "S.\n\nReferences\n----------\nLiu et al. (2025). Influence approximation.\n"
    assert citation(short) == "Liu et al. 2025"
    assert citation("No references here.") == "-"


@pytest.mark.parametrize("kind", ["strategies", "unlearners"])
def test_every_registered_method_has_a_paper_and_a_whole_summary(kind):
    entries = rows(kind)
    assert len(entries) >= 28
    for entry in entries:
        assert entry["paper"] != "-", entry["name"]
        assert entry["paper"][-4:].isdigit(), entry
        text = entry["summary"]
        assert text.count("(") == text.count(")"), entry  # never cut inside a citation
        last = text.rsplit(None, 1)[-1]
        assert last not in ("al.", "Eq.", "e.g.", "i.e.", "cf.", "vs."), entry


def test_list_json_and_table(capsys, monkeypatch):
    assert main(["list", "unlearners", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    newton = next(e for e in out if e["name"] == "newton")
    assert newton["paper"] == "Guo et al. 2020"
    assert newton["summary"].endswith("on the output layer.")
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["list", "strategies"]) == 0
    table = capsys.readouterr().out
    assert "paper" in table and "Chaudhry et al. 2019" in table
