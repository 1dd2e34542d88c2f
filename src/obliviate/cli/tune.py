"""``obliviate tune``: search an unlearner's hyperparameters on a validation split (Optuna TPE)."""

from __future__ import annotations

import sys

import typer

from obliviate.cli import _common as _c


def register(app: typer.Typer) -> None:
    @app.command("tune")
    def tune(
        dataset: str = typer.Option("digits", help="dataset name (obliviate list datasets)"),
        forget_spec: str = typer.Option(
            "class:3",
            "--forget",
            help="the reported forget spec (random:K | random:P% | class:C | subclass:C:K); on a "
            "generated dataset (mnist1d) it is applied to independent draws of the dataset "
            "(protocol draw); otherwise its rows are excluded and a validation forget set of the "
            "same kind is drawn (protocol carve)",
        ),
        method: str = typer.Option("scrub", help="unlearning method (obliviate list unlearners)"),
        n_trials: int = typer.Option(
            None, "--n-trials", help="number of trials (>= 1; reproducible given --seed)"
        ),
        budget: float = typer.Option(
            None, help="time budget in seconds (> 0); the search stops after the running trial"
        ),
        seed: int = _c.seed_option(help="seed of the splits, the sampler and the method"),
        val_fraction: float = typer.Option(
            0.2, help="share of the tuning rows held out (protocol carve)"
        ),
        n_seeds: int = typer.Option(
            1,
            "--n-seeds",
            help="score every trial on this many tuning originals (seeds SEED..SEED+N-1); a "
            "divergence on any of them prunes the trial",
        ),
        report_seeds: str = typer.Option(
            "0-9",
            help="seeds whose reported forget sets are excluded from tuning (0,1,2 or 0-9; "
            "protocol carve)",
        ),
        protocol: str = typer.Option(
            "auto",
            help="auto | draw | carve: draw tunes on independent draws of a generated dataset "
            "(same sizes, recipe and forget spec as the reported run); carve on a validation "
            "split of the training set; auto: draw where the dataset has a generator",
        ),
        epochs: int = typer.Option(None, min=1, help="override the recipe's training epochs"),
        save: str = typer.Option(
            None,
            help="write the best values as a named configuration (.toml) for "
            "obliviate forget --config FILE (ship it as src/obliviate/configs/METHOD@DATASET.toml)",
        ),
        cache: str = typer.Option(None, help="cache folder for the tuning original/oracle"),
        data_dir: str = typer.Option(None, help="folder with the dataset's files"),
        out: str = _c.out_option("write the result (best values, trial table) to this JSON file"),
        as_json: bool = _c.json_option(),
        quiet: bool = _c.quiet_option(),
        device: str = _c.device_option(),
        precision: str = _c.precision_option(),
    ) -> None:
        """Tune a method's hyperparameters for closeness to the retrained oracle on a validation
        forget set and validation split carved from the training data (never the reported ones)."""
        import os
        import shlex

        import torch
        from rich.table import Table

        from obliviate.experiments.forget import CACHE_ENV
        from obliviate.experiments.tune import TuneSpec, config_text, run
        from obliviate.io import atomic_write_text, write_json_atomic

        torch.set_num_threads(1)
        seeds = tuple(_c.parse_seeds(0, report_seeds))  # "0,1,2" or "0-9"
        cache_dir = (
            cache
            or os.environ.get(CACHE_ENV)
            or os.path.join(os.path.expanduser("~"), ".cache", "obliviate")
        )
        spec = TuneSpec(
            dataset=dataset,
            forget=forget_spec,
            method=method,
            seed=seed,
            n_trials=n_trials,
            budget=budget,
            val_fraction=val_fraction,
            n_seeds=n_seeds,
            report_seeds=seeds,
            n_epochs=epochs,
            cache_dir=cache_dir,
            data_dir=data_dir,
            device=device,
            precision=precision,
            protocol=protocol,
        )
        for target, option in ((out, "--out"), (save, "--save")):
            if target:
                _c.check_out_target(target, option)
        result = run(spec)
        console = _c.console(quiet=as_json)
        table = Table(
            title=f"tune {method} on {dataset} (validation forget {result['splits']['val_forget_spec']}"
            f", {result['splits']['n_validation']} validation rows; objective: sum of |gaps| to "
            "the oracle)"
        )
        names = list(result["space"])
        for col in ("#", "state", "objective", *names, "forget gap", "retain gap", "val gap",
                    "MIA gap", "s"):  # fmt: skip
            table.add_column(col)

        def num(v: object, fmt: str = "{:.3g}") -> str:
            return "-" if v is None else fmt.format(v)

        for t in result["trials"]:
            g = t["gaps"] or {}
            table.add_row(
                str(t["number"]),
                t["state"] if not t["note"] else t["note"].split(":")[0],
                num(t["value"], "{:.4f}"),
                *(num(t["params"].get(n)) for n in names),
                *(num(g.get(k), "{:+.3f}") for k in ("forget_acc", "retain_acc", "val_acc", "mia_auc")),
                num(t["seconds"], "{:.2f}"),
            )  # fmt: skip
        console.print(table)
        b = result["best"]
        console.print(
            f"best: trial {b['number']}, objective {b['value']:.4f}, "
            + ", ".join(f"{k}={v:.4g}" for k, v in b["params"].items())
            + f"  ({result['n_pruned']} pruned, {result['seconds']:.1f} s)"
        )
        if as_json:
            _c.emit_json(result)
        note = _c.console(quiet=quiet, stderr=as_json)
        if out:
            with _c.writing(out):
                write_json_atomic(out, result, allow_nan=True)
            note.print(f"wrote {out}")
        if save:
            command = "obliviate " + " ".join(shlex.quote(a) for a in sys.argv[1:])
            with _c.writing(save):
                atomic_write_text(save, config_text(result, command=command))
            note.print(f"wrote {save}")
