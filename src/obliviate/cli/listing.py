"""``obliviate list strategies|unlearners|datasets|scenarios``."""

from __future__ import annotations

import typer

from obliviate.errors import ObliviateError

KINDS = ("strategies", "unlearners", "datasets", "scenarios")


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_(
        kind: str = typer.Argument(..., help="strategies | unlearners | datasets | scenarios"),
    ) -> None:
        """List what obliviate offers of one kind."""
        from rich.console import Console
        from rich.table import Table

        if kind not in KINDS:
            raise ObliviateError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
        table = Table(title=kind)
        if kind == "strategies":
            from obliviate.continual import STRATEGIES, strategy_class

            (
                table.add_column("name"),
                table.add_column("needs boundaries"),
                table.add_column("needs task ids"),
                table.add_column("summary"),
            )
            for name in sorted(STRATEGIES):
                cls = strategy_class(name)
                doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
                table.add_row(name, str(cls.needs_task_boundaries), str(cls.needs_task_ids), doc)
        elif kind == "unlearners":
            from obliviate.unlearning import UNLEARNERS, unlearner_class

            (
                table.add_column("name"),
                table.add_column("guarantee"),
                table.add_column("needs"),
                table.add_column("model needs"),
                table.add_column("summary"),
            )
            for name in sorted(UNLEARNERS):
                cls = unlearner_class(name)
                doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
                needs = ", ".join(sorted(cls.needs)) or "-"
                table.add_row(name, cls.guarantee, needs, cls.model_requirement or "-", doc)
        elif kind == "datasets":
            from obliviate.data.datasets import DATASET_HELP

            table.add_column("name"), table.add_column("description")
            for name, text in DATASET_HELP.items():
                table.add_row(name, text)
        else:
            from obliviate.data.scenarios import SCENARIOS

            table.add_column("name"), table.add_column("description")
            for name, fn in SCENARIOS.items():
                table.add_row(name, (fn.__doc__ or "").strip().splitlines()[0])
        Console().print(table)
