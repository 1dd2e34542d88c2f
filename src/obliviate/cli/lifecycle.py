"""``obliviate lifecycle``: learn a stream while deletion requests arrive; every event measured
against the lifecycle oracle.

The work is :func:`obliviate.experiments.lifecycle.run`; this module parses options, prints one
line per event (retention and forgetting against the oracle) and a table per strategy, and
writes the JSON result. ``--strategy`` and ``--path`` take comma-separated lists (one run per
strategy x path x seed). With one run the JSON document is its result; with several it is
``{"runs": [...], "events": {label: per-event mean ± std}}``.
"""

from __future__ import annotations

from typing import Any

import typer

from obliviate.cli import _common as _c
from obliviate.errors import ObliviateError


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _pm(mean: float | None, std: float | None, n: int, digits: int = 3) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if n < 2 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def event_line(run_label: str, rec: dict[str, Any]) -> str:
    """One line per event: what happened, retention vs the oracle, forgetting vs the oracle."""
    what = (
        f"learn {rec['experience']}"
        if rec["event"] == "learn"
        else f"forget {rec['request']} ({rec['n_ids']} ids)"
    )
    line = (
        f"{run_label}  #{rec['index']:<2} {what:<32} retention {_f(rec['retention'])} "
        f"(oracle {_f(rec['oracle_retention'])})"
    )
    if rec.get("forget_acc") is not None:
        line += (
            f"  forget acc {_f(rec['forget_acc'])} (oracle {_f(rec['oracle_forget_acc'])})"
            f"  MIA {_f(rec['mia_auc'])} (oracle {_f(rec['oracle_mia_auc'])})"
        )
    if rec["event"] == "forget":
        line += f"  {_f(rec['forget_seconds'], 2)} s vs re-run {_f(rec['rerun_seconds'], 2)} s"
    return line


def events_table(title: str, events: list[dict[str, Any]], n: int) -> Any:
    """A rich table of :func:`~obliviate.experiments.lifecycle.aggregate_events` output."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("event")
    cols = (
        ("retention", "retention"),
        ("oracle_retention", "oracle"),
        ("forget_acc", "forget acc"),
        ("oracle_forget_acc", "oracle"),
        ("mia_auc", "MIA AUC"),
        ("oracle_mia_auc", "oracle"),
        ("forget_seconds", "forget s"),
        ("rerun_seconds", "re-run s"),
    )
    for _, name in cols:
        table.add_column(name, justify="right")
    for ev in events:
        m, s = ev["mean"], ev["std"]
        table.add_row(
            ev["label"],
            *(_pm(m[k], s[k], n, 2 if k.endswith("seconds") else 3) for k, _ in cols),
        )
    return table


def register(app: typer.Typer) -> None:
    @app.command("lifecycle")
    def lifecycle(
        dataset: str = typer.Option(
            "digits", "--dataset", help="digits | mnist1d | mnist | fashion-mnist | npz:PATH"
        ),
        scenario: str = typer.Option(
            "class-incremental", "--scenario", help="see `obliviate list scenarios`"
        ),
        experiences: int = typer.Option(5, "--experiences", help="number of experiences"),
        strategy: str = typer.Option(
            "replay", "--strategy", help="strategy, or several: replay,derpp,ewc"
        ),
        schedule: str | None = typer.Option(
            None,
            "--schedule",
            help="deletions: 'AFTER:REQUEST; ...', e.g. '2:random:5%; 3:experience-class:0' "
            "(AFTER = experiences learned; REQUEST: random:K|P%, class:C, subclass:C:K, "
            "source:FILE, ids:1,2, experience:E:P%, experience-class:E)",
        ),
        deletion_rate: float | None = typer.Option(
            None, "--deletion-rate", help="generate the schedule: delete this fraction each time"
        ),
        deletion_kinds: str = typer.Option(
            "random", "--deletion-kinds", help="generated kinds: random,experience,class"
        ),
        deletion_every: int = typer.Option(
            1, "--deletion-every", help="generated: one deletion after every k experiences"
        ),
        path: str = typer.Option(
            "approximate", "--path", help="approximate | exact (or both: approximate,exact)"
        ),
        method: str = typer.Option(
            "neggrad_plus", "--method", help="unlearner of the approximate path"
        ),
        sets: list[str] | None = typer.Option(
            None, "--set", help="strategy hyperparameter key=value (repeatable)"
        ),
        method_sets: list[str] | None = typer.Option(
            None, "--method-set", help="unlearner hyperparameter key=value (repeatable)"
        ),
        seed: int = _c.seed_option(help="seeds everything (model, data, schedule)"),
        seeds: str | None = _c.seeds_option(),
        epochs: int | None = typer.Option(
            None, "--epochs", help="epochs per experience (default: the dataset's recipe)"
        ),
        lr: float | None = typer.Option(None, "--lr", help="learning rate (default: recipe)"),
        data_dir: str | None = typer.Option(
            None, "--data-dir", help="folder of IDX files (default: $OBLIVIATE_DATA)"
        ),
        limit: int | None = typer.Option(
            None, "--limit", help="keep only the first N training rows"
        ),
        out: str | None = _c.out_option("write the JSON result to this file (atomically)"),
        as_json: bool = _c.json_option(),
        threads: int = typer.Option(1, "--threads", help="torch CPU threads"),
        quiet: bool = _c.quiet_option(),
        device: str = _c.device_option(),
        precision: str = _c.precision_option(),
    ) -> None:
        """Learn a stream while deletion requests arrive; print retention and forgetting
        against the lifecycle oracle after every event."""
        from dataclasses import replace

        import torch

        from obliviate.continual import strategy_class
        from obliviate.experiments.lifecycle import (
            LifecycleSpec,
            aggregate_events,
            check_exact,
            label,
            run,
        )
        from obliviate.unlearning import unlearner_class

        seed_list = _c.check_run_options(seed, seeds, out, threads)
        strategies = [s.strip() for s in strategy.split(",") if s.strip()]
        paths = [p.strip() for p in path.split(",") if p.strip()]
        if not strategies or not paths:
            raise ObliviateError("--strategy and --path need at least one name each")
        from obliviate.data.scenarios import SCENARIOS

        if scenario not in SCENARIOS:
            raise ObliviateError(f"unknown scenario {scenario!r}; valid: {', '.join(SCENARIOS)}")
        specs = []
        for name in strategies:
            from obliviate.experiments._spec import strategy as check_strategy

            check_strategy("--strategy", name)
            params = _c.parse_sets(strategy_class(name), sets) if len(strategies) == 1 else {}
            if sets and len(strategies) > 1:
                raise ObliviateError("--set applies to one strategy; give one --strategy with it")
            for p in paths:
                method_params = (
                    _c.parse_sets(unlearner_class(method), method_sets, option="--method-set")
                    if p == "approximate"
                    else {}
                )
                specs.append(
                    LifecycleSpec(
                        dataset=dataset,
                        scenario=scenario,
                        n_experiences=experiences,
                        strategy=name,
                        params=params,
                        schedule=schedule,
                        deletion_rate=deletion_rate,
                        deletion_kinds=deletion_kinds,
                        deletion_every=deletion_every,
                        path=p,
                        method=method,
                        method_params=method_params,
                        n_epochs=epochs,
                        lr=lr,
                        seed=seed_list[0],
                        data_dir=data_dir,
                        limit=limit,
                        device=device,
                        precision=precision,
                    )
                )
                specs[-1].resolved()  # everything validated before the first run
                if p == "exact":
                    check_exact(specs[-1])  # a stream the exact path cannot run, up front
        torch.set_num_threads(threads)
        console = _c.console(quiet=as_json)
        notes = _c.console(quiet=quiet, stderr=as_json)

        def job(spec: LifecycleSpec, s: int) -> Any:
            def go() -> dict[str, Any]:
                one = replace(spec, seed=s).resolved()  # a seed hyperparameter follows s
                tag = f"{one.strategy}/{one.path} seed {s}"
                return run(one, echo=lambda rec: notes.print(event_line(tag, rec)))

            return go

        def show(name: str, _: Any, events: list[dict[str, Any]]) -> None:
            console.print(
                events_table(
                    f"{name}: after every event, mean{' ± std' if len(seed_list) > 1 else ''} "
                    f"over seeds {_c.seeds_text(seed_list)}",
                    events,
                    len(seed_list),
                )
            )

        jobs = [(label(spec.to_dict()), job(spec, s)) for spec in specs for s in seed_list]
        runs, summary = _c.run_groups(jobs, aggregate=aggregate_events, show=show)
        # one run: the run itself; several: every run and the per-event mean ± std by label
        # ("summary", not "events": a run's "events" is its own per-event list)
        payload: Any = runs[0] if len(runs) == 1 else {"runs": runs, "summary": summary}
        _c.emit_result(payload, as_json=as_json, out=out, notes=notes)
