"""``obliviate learn``: one continual-learning run (or one per seed), a table and a JSON file.

The work is :func:`obliviate.experiments.run_learn`; this module only parses options, prints a
rich table and writes the JSON result atomically. With one seed the JSON file is that run's
result; with ``--seeds`` it is ``{"spec", "seeds", "runs", "mean", "std", "n"}`` where ``runs``
holds the per-seed results and ``mean``/``std`` (sample std, ddof=1) summarise ACC, BWT, FWT,
forgetting, learning accuracy and seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from obliviate.cli import _common as _c
from obliviate.errors import ObliviateError


def check_json_target(path: str | Path) -> Path:
    """The output path, checked before any work is done: its folder must exist."""
    from obliviate.cli._common import check_out_target

    return check_out_target(path, "--out")


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """:func:`obliviate.io.write_json_atomic` after :func:`check_json_target` (NaN refused:
    results carry ``null``)."""
    from obliviate.io import write_json_atomic as write

    return write(check_json_target(path), data)


def make_console(*, quiet: bool = False, stderr: bool = False) -> Any:
    """A rich console that does not cut tables when stdout is not a terminal (logs, pipes):
    :func:`obliviate.cli._common.console`."""
    from obliviate.cli._common import console

    return console(quiet=quiet, stderr=stderr)


def fmt(mean: float | None, std: float | None = None, digits: int = 3) -> str:
    """``0.812 ± 0.012`` (or ``0.812`` without a std, ``-`` when undefined)."""
    if mean is None:
        return "-"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def summary_table(title: str, rows: list[tuple[str, dict[str, Any]]], *, with_std: bool) -> Any:
    """A rich table: one row per ``(label, aggregate(...))``."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("strategy")
    for name in ("ACC", "BWT", "FWT", "forgetting", "LA", "time (s)"):
        table.add_column(name, justify="right")
    for label, agg in rows:
        m, s = agg["mean"], agg["std"] if with_std else {}
        cells = [
            fmt(m[k], s.get(k)) for k in ("acc", "bwt", "fwt", "forgetting", "learning_accuracy")
        ]
        cells.append(fmt(m["seconds"], s.get("seconds"), digits=1))
        table.add_row(label, *cells)
    return table


def _matrix_table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    r = result["accuracy_matrix"]
    table = Table(title="accuracy matrix R[i, j]: accuracy on experience j after learning i")
    table.add_column("after")
    for j in range(len(r)):
        table.add_column(str(j), justify="right")
    for i, row in enumerate(r):
        table.add_row(str(i), *(fmt(v, digits=2) for v in row))
    return table


def _seedless(spec: dict[str, Any], user_params: dict[str, Any]) -> dict[str, Any]:
    """The spec shared by all seeds: ``seed`` (and a strategy seed that follows it) is null."""
    out = {**spec, "seed": None, "params": dict(spec["params"])}
    if "seed" in out["params"] and "seed" not in user_params:
        out["params"]["seed"] = None
    return out


def register(app: typer.Typer) -> None:
    @app.command("learn")
    def learn(
        dataset: str = typer.Option(
            "digits",
            "--dataset",
            help="digits | mnist1d | mnist | fashion-mnist | synthetic | npz:PATH",
        ),
        scenario: str = typer.Option(
            "class-incremental", "--scenario", help="see `obliviate list scenarios`"
        ),
        experiences: int = typer.Option(5, "--experiences", help="number of experiences"),
        strategy: str = typer.Option("naive", "--strategy", help="see `obliviate list strategies`"),
        seed: int = _c.seed_option(help="seeds model init, data order and class order"),
        seeds: str | None = _c.seeds_option(),
        epochs: int | None = typer.Option(
            None, "--epochs", help="epochs per experience (default: the dataset's recipe)"
        ),
        lr: float | None = typer.Option(
            None, "--lr", help="learning rate (default: the dataset's recipe)"
        ),
        batch_size: int | None = typer.Option(
            None, "--batch-size", help="minibatch size (default: the dataset's recipe)"
        ),
        optimizer: str | None = typer.Option(
            None, "--optimizer", help="sgd | adam (default: the dataset's recipe)"
        ),
        momentum: float | None = typer.Option(
            None, "--momentum", help="SGD momentum (default: the dataset's recipe)"
        ),
        model: str | None = typer.Option(
            None, "--model", help="mlp | cnn (default: the dataset's recipe)"
        ),
        hidden: str | None = typer.Option(
            None, "--hidden", help="hidden widths, e.g. 100,100 ('' = linear)"
        ),
        sets: list[str] | None = typer.Option(
            None, "--set", help="strategy hyperparameter key=value (repeatable)"
        ),
        scenario_sets: list[str] | None = typer.Option(
            None,
            "--scenario-set",
            help="scenario parameter key=value, e.g. blurry=0.1 for online (repeatable)",
        ),
        out: str | None = _c.out_option("write the JSON result to this file (atomically)"),
        as_json: bool = _c.json_option(),
        data_dir: str | None = typer.Option(
            None, "--data-dir", help="folder of IDX files (default: $OBLIVIATE_DATA)"
        ),
        eval_every: int | None = typer.Option(
            None, "--eval-every", help="continual evaluation every k steps"
        ),
        limit: int | None = typer.Option(
            None, "--limit", help="keep only the first N training rows"
        ),
        threads: int = typer.Option(
            1, "--threads", help="torch CPU threads (small models run fastest on 1)"
        ),
        quiet: bool = typer.Option(
            False, "--quiet", "-q", help="no progress bar, no accuracy matrix, no notes"
        ),
        device: str = _c.device_option(),
        precision: str = _c.precision_option(),
    ) -> None:
        """Learn a stream with a continual-learning strategy; print ACC, BWT, FWT, forgetting."""
        from dataclasses import replace

        import torch

        from obliviate.cli._common import parse_int_tuple, parse_sets
        from obliviate.continual import strategy_class
        from obliviate.experiments import LearnSpec, aggregate, run_learn

        seed_list = _c.check_run_options(seed, seeds, out, threads)
        params = parse_sets(strategy_class(strategy), sets)
        from obliviate.data.scenarios import SCENARIOS

        if scenario not in SCENARIOS:
            raise ObliviateError(f"unknown scenario {scenario!r}; valid: {', '.join(SCENARIOS)}")
        scenario_params = parse_sets(
            SCENARIOS[scenario],
            scenario_sets,
            exclude=("n_experiences", "seed"),
            option="--scenario-set",
        )
        widths = None if hidden is None else parse_int_tuple("--hidden", hidden)
        user = LearnSpec(
            dataset=dataset,
            scenario=scenario,
            n_experiences=experiences,
            strategy=strategy,
            params=params,
            scenario_params=scenario_params,
            model=model,
            hidden=widths,
            n_epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            momentum=momentum,
            seed=seed_list[0],
            data_dir=data_dir,
            eval_every=eval_every,
            limit=limit,
            device=device,
            precision=precision,
        )
        first = user.resolved()  # validate everything before the first run starts

        torch.set_num_threads(threads)
        console = make_console(quiet=as_json, stderr=False)  # the table (not with --json)
        notes = make_console(quiet=quiet, stderr=as_json)

        def job(s: int) -> Any:
            # each run's spec is resolved once (its seed may seed the strategy)
            def go() -> dict[str, Any]:
                spec = first if s == seed_list[0] else replace(user, seed=s).resolved()
                return run_learn(spec, progress=not quiet and not as_json)

            return go

        title = (
            f"{strategy} on {dataset} / {scenario} ({experiences} experiences, "
            f"seeds {_c.seeds_text(seed_list)})"
        )

        def show(name: str, results: list[dict[str, Any]], agg: dict[str, Any]) -> None:
            if len(results) == 1 and not quiet:
                console.print(_matrix_table(results[0]))
            console.print(summary_table(title, [(name, agg)], with_std=len(results) > 1))

        results, summary = _c.run_groups(
            [(strategy, job(s)) for s in seed_list], aggregate=aggregate, show=show
        )
        if len(results) == 1:
            payload: Any = results[0]
        else:
            payload = {
                "spec": _seedless(results[0]["spec"], params),
                "seeds": seed_list,
                "runs": results,
                **summary[strategy],
            }
        _c.emit_result(payload, as_json=as_json, out=out, notes=notes)
