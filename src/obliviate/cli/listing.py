"""``obliviate list strategies|unlearners|datasets|scenarios``."""

from __future__ import annotations

import typer

from obliviate.cli import _common as _c
from obliviate.errors import ObliviateError

KINDS = ("strategies", "unlearners", "datasets", "scenarios")


def summary(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, as plain text: lines joined (a
    wrapped sentence is never cut), reST roles and literals unwrapped (``:class:`X``` -> X,
    ````x```` -> x)."""
    import re

    para = " ".join((doc or "").strip().split("\n\n")[0].split())
    para = re.sub(r":[a-z]+:`~?([^`<]+?)(?:\s*<[^>]+>)?`", r"\1", para)
    para = re.sub(r"``([^`]+)``", r"\1", para)
    para = re.sub(r"`([^`]+)`_?", r"\1", para)
    match = re.search(r"^(.+?[.!?])(\s|$)", para)
    return match.group(1) if match else para


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_(
        kind: str = typer.Argument(..., help="strategies | unlearners | datasets | scenarios"),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """List what obliviate offers of one kind."""
        from rich.table import Table

        if kind not in KINDS:
            raise ObliviateError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
        table = Table(title=kind)
        if kind == "strategies":
            from obliviate.continual import STRATEGIES, strategy_class

            table.add_column("name")
            table.add_column("needs boundaries")
            table.add_column("needs task ids")
            table.add_column("model needs")
            table.add_column("summary")
            for name in sorted(STRATEGIES):
                cls = strategy_class(name)
                table.add_row(
                    name,
                    str(cls.needs_task_boundaries),
                    str(cls.needs_task_ids),
                    cls.model_requirement or "-",
                    summary(cls.__doc__),
                )
        elif kind == "unlearners":
            from obliviate.unlearning import UNLEARNERS, unlearner_class

            table.add_column("name")
            table.add_column("guarantee")
            table.add_column("needs")
            table.add_column("model needs")
            table.add_column("summary")
            for name in sorted(UNLEARNERS):
                cls = unlearner_class(name)
                needs = ", ".join(sorted(cls.needs)) or "-"
                table.add_row(
                    name, cls.guarantee, needs, cls.model_requirement or "-", summary(cls.__doc__)
                )
        elif kind == "datasets":
            from obliviate.data.datasets import DATASET_HELP

            table.add_column("name")
            table.add_column("description")
            for name, text in DATASET_HELP.items():
                table.add_row(name, text)
        else:
            from obliviate.data.scenarios import SCENARIOS

            table.add_column("name")
            table.add_column("description")
            for name, fn in SCENARIOS.items():
                table.add_row(name, summary(fn.__doc__))
        from obliviate.cli._common import console

        console().print(table)  # never cut when piped
