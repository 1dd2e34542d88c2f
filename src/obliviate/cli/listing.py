"""``obliviate list strategies|unlearners|datasets|scenarios``."""

from __future__ import annotations

import re

import typer

from obliviate.cli import _common as _c
from obliviate.errors import ObliviateError

KINDS = ("strategies", "unlearners", "datasets", "scenarios")


#: Words whose full stop does not end a sentence (compared in lower case, without the stop).
_ABBREVIATIONS = frozenset(
    "al e.g i.e cf vs eq eqs sec secs alg algs fig figs tab no nos approx resp etc ch app "
    "def thm prop lemma viz".split()
)


def _ends_sentence(para: str, stop: int) -> bool:
    """Whether the ``.``, ``!`` or ``?`` at ``para[stop]`` ends a sentence: not inside brackets,
    not after an abbreviation (``et al.``, ``Eq.``, ``e.g.``, ``i.e.``, ``cf.``, ``vs.``) or an
    initial (``A.``), and followed by the end or by a space and a word that does not begin in
    lower case or with a digit."""
    before = para[: stop + 1]
    if before.count("(") > before.count(")") or before.count("[") > before.count("]"):
        return False
    rest = para[stop + 1 :]
    if rest and not rest[0].isspace():
        return False
    nxt = rest.lstrip()[:1]
    if nxt and (nxt.islower() or nxt.isdigit()):
        return False
    if para[stop] != ".":
        return True
    word = before[:-1].rsplit(None, 1)[-1] if before[:-1].strip() else ""
    word = word.lstrip("(\"'")
    if word.lower() in _ABBREVIATIONS or re.fullmatch(r"[A-Za-z]", word):
        return False
    return True


def summary(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, as plain text: lines joined (a
    wrapped sentence is never cut), reST roles and literals unwrapped (``:class:`X``` -> X,
    ````x```` -> x), and abbreviations, initials and bracketed citations kept whole
    (``(Guo et al., 2020, Eq. 3)`` does not end the sentence)."""
    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    para = re.sub(r":[a-z]+:`~?([^`<]+?)(?:\s*<[^>]+>)?`", r"\1", para)
    para = re.sub(r"``([^`]+)``", r"\1", para)
    para = re.sub(r"`([^`]+)`_?", r"\1", para)
    for match in re.finditer(r"[.!?]", para):
        if _ends_sentence(para, match.start()):
            return para[: match.start() + 1]
    return para


def _surnames(authors: str) -> list[str]:
    """The surnames of a reference's author list (``"Guo, C., Goldstein, T. & Hannun, A."``
    -> ``["Guo", "Goldstein", "Hannun"]``); ``"Liu et al."`` -> ``["Liu", "et al."]``."""
    authors = authors.strip().rstrip(",").strip()
    if authors.endswith("et al.") or authors.endswith("et al"):
        head = authors.rsplit("et al", 1)[0].strip().rstrip(",").strip()
        return [head.split(",")[0].strip(), "et al."]
    out: list[str] = []
    for part in re.split(r"\s*&\s*|,\s*(?=[^,]*,)", authors):
        name = part.split(",")[0].strip()
        if name and not re.fullmatch(r"(?:[A-Z]\.[\s-]*)+", name):
            out.append(name)
    return out


def citation(doc: str | None) -> str:
    """The paper a method implements, as ``"First author [& Second | et al.] YEAR"``, from the
    first entry of its docstring's ``References`` section; ``"-"`` when there is none."""
    import inspect

    text = inspect.cleandoc(doc or "")
    found = re.search(r"^References\s*\n-+\s*\n(.*?)(?:\n\s*\n|\Z)", text, re.S | re.M)
    if not found:
        return "-"
    entry = " ".join(found.group(1).split())
    head = re.match(r"(.+?)\(((?:19|20)\d\d)[a-z]?\)", entry)
    if not head:
        return "-"
    names = _surnames(head.group(1))
    if not names:
        return "-"
    if len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} et al." if names[1] == "et al." else f"{names[0]} & {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who} {head.group(2)}"


def rows(kind: str) -> list[dict[str, str]]:
    """One dict per entry of ``kind`` (the columns of ``obliviate list KIND``, in order)."""
    if kind not in KINDS:
        raise ObliviateError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    out: list[dict[str, str]] = []
    if kind == "strategies":
        from obliviate.continual import STRATEGIES, strategy_class

        for name in sorted(STRATEGIES):
            cls = strategy_class(name)
            out.append(
                {
                    "name": name,
                    "paper": citation(cls.__doc__),
                    "needs boundaries": str(cls.needs_task_boundaries),
                    "needs task ids": str(cls.needs_task_ids),
                    "model needs": cls.model_requirement or "-",
                    "summary": summary(cls.__doc__),
                }
            )
    elif kind == "unlearners":
        from obliviate.unlearning import UNLEARNERS, unlearner_class

        for name in sorted(UNLEARNERS):
            cls = unlearner_class(name)
            out.append(
                {
                    "name": name,
                    "paper": citation(cls.__doc__),
                    "guarantee": cls.guarantee,
                    "needs": ", ".join(sorted(cls.needs)) or "-",
                    "model needs": cls.model_requirement or "-",
                    "summary": summary(cls.__doc__),
                }
            )
    elif kind == "datasets":
        from obliviate.data.datasets import DATASET_HELP

        out = [{"name": name, "description": text} for name, text in DATASET_HELP.items()]
    else:
        from obliviate.data.scenarios import SCENARIOS

        out = [{"name": name, "description": summary(fn.__doc__)} for name, fn in SCENARIOS.items()]
    return out


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_(
        kind: str = typer.Argument(..., help="strategies | unlearners | datasets | scenarios"),
        as_json: bool = _c.json_option("The list as one JSON array of objects on stdout."),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """List what obliviate offers of one kind (methods with the paper they implement)."""
        from rich.table import Table

        entries = rows(kind)
        if as_json:
            _c.emit_json(entries)
            return
        table = Table(title=kind)
        columns = list(entries[0]) if entries else ["name"]
        for column in columns:
            table.add_column(column, no_wrap=column in ("name", "paper"))
        for entry in entries:
            table.add_row(*(entry[c] for c in columns))
        from obliviate.cli._common import console

        console().print(table)  # never cut when piped
