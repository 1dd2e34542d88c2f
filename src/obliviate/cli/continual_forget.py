"""``obliviate continual-forget``: a sequence of class-forget requests on one model.

The work is :func:`obliviate.experiments.continual_forget.run`; this module parses options,
prints one line per request and one table per method (accuracy on the classes forgotten so far
and on the remaining ones, against the oracle retrained without them), and writes the JSON
result. ``--method`` takes a comma-separated list (one run per method x seed). With one run the
JSON document is its result; with several ``{"runs": [...], "requests": {method: per-request
mean ± std}}``.
"""

from __future__ import annotations

from typing import Any

import typer

from obliviate.cli import _common as _c
from obliviate.errors import ObliviateError


def _pm(mean: float | None, std: float | None, n: int, digits: int = 3) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if n < 2 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def request_line(tag: str, rec: dict[str, Any]) -> str:
    """One line per request: forgotten and remaining accuracy against the oracle."""

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    what = "original" if rec["request"] == 0 else f"forget class {rec['forgotten'][-1]}"
    return (
        f"{tag}  #{rec['request']} {what:<16} forgotten acc {f(rec['forgotten_acc'])} "
        f"(oracle {f(rec['oracle_forgotten_acc'])})  remaining acc {f(rec['remaining_acc'])} "
        f"(oracle {f(rec['oracle_remaining_acc'])})  {rec['seconds']:.2f} s"
    )


COLUMNS = (
    ("forgotten_acc", "forgotten acc"),
    ("oracle_forgotten_acc", "oracle"),
    ("remaining_acc", "remaining acc"),
    ("oracle_remaining_acc", "oracle"),
    ("forget_train_acc", "forgotten train acc"),
    ("remaining_train_acc", "remaining train acc"),
    ("seconds", "s"),
)


def requests_table(title: str, rows: list[dict[str, Any]], n: int) -> Any:
    """A rich table of :func:`~obliviate.experiments.continual_forget.aggregate` output."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("request")
    for _, name in COLUMNS:
        table.add_column(name, justify="right")
    for r in rows:
        what = "original" if r["request"] == 0 else f"{r['request']}: -class {r['forgotten'][-1]}"
        m, s = r["mean"], r["std"]
        table.add_row(what, *(_pm(m[k], s[k], n, 2 if k == "seconds" else 3) for k, _ in COLUMNS))
    return table


def register(app: typer.Typer) -> None:
    @app.command("continual-forget")
    def continual_forget(
        sequence: str = typer.Option(
            "class:1,class:3,class:5,class:7",
            "--sequence",
            help="the requests in order: class:C,class:C,...",
        ),
        method: str = typer.Option(
            "gs_lora", "--method", help="unlearner(s) applied at every request: gs_lora,scrub"
        ),
        dataset: str = typer.Option(
            "digits", "--dataset", help="digits | mnist1d | mnist | fashion-mnist | npz:PATH"
        ),
        sets: list[str] | None = typer.Option(
            None, "--set", help="unlearner hyperparameter key=value (one --method; repeatable)"
        ),
        seed: int = _c.seed_option(help="seeds the original, the oracles, the method"),
        seeds: str | None = _c.seeds_option(),
        data_dir: str | None = typer.Option(
            None, "--data-dir", help="folder of IDX files (default: $OBLIVIATE_DATA)"
        ),
        limit: int | None = typer.Option(
            None, "--limit", help="keep only the first N training rows"
        ),
        cache: str | None = typer.Option(
            None, "--cache", help="folder caching the trained original and oracles"
        ),
        out: str | None = _c.out_option("write the JSON result to this file (atomically)"),
        as_json: bool = _c.json_option(),
        threads: int = typer.Option(1, "--threads", help="torch CPU threads"),
        quiet: bool = _c.quiet_option(),
        device: str = _c.device_option(),
        precision: str = _c.precision_option(),
    ) -> None:
        """Forget classes one request after another on one model; print accuracy on the classes
        forgotten so far and on the remaining ones against the oracle after every request."""
        import torch

        from obliviate.experiments._spec import unlearner as check_unlearner
        from obliviate.experiments.continual_forget import (
            ContinualForgetSpec,
            aggregate,
            run,
        )
        from obliviate.unlearning import unlearner_class

        seed_list = _c.check_run_options(seed, seeds, out, threads)
        methods = [m.strip() for m in method.split(",") if m.strip()]
        if not methods:
            raise ObliviateError("--method needs at least one unlearner name")
        if sets and len(methods) > 1:
            raise ObliviateError("--set applies to one method; give one --method with it")
        specs = []
        for name in methods:
            check_unlearner("--method", name)
            params = _c.parse_sets(unlearner_class(name), sets) if sets else {}
            for s in seed_list:  # everything validated before the first run
                specs.append(
                    ContinualForgetSpec(
                        dataset=dataset,
                        sequence=sequence,
                        method=name,
                        params=params,
                        seed=s,
                        cache_dir=cache,
                        data_dir=data_dir,
                        limit=limit,
                        device=device,
                        precision=precision,
                    )
                )
        torch.set_num_threads(threads)
        console = _c.console(quiet=as_json)
        notes = _c.console(quiet=quiet, stderr=as_json)
        n = len(seed_list)

        def job(spec: ContinualForgetSpec) -> Any:
            tag = f"{spec.method} seed {spec.seed}"
            return lambda: run(spec, echo=lambda rec: notes.print(request_line(tag, rec)))

        def show(name: str, _: Any, rows: list[dict[str, Any]]) -> None:
            console.print(
                requests_table(
                    f"{name} on {dataset} ({sequence}): after every request, "
                    f"mean{' ± std' if n > 1 else ''} over seeds {_c.seeds_text(seed_list)}",
                    rows,
                    n,
                )
            )

        runs, summary = _c.run_groups(
            [(spec.method, job(spec)) for spec in specs], aggregate=aggregate, show=show
        )
        payload: Any = runs[0] if len(runs) == 1 else {"runs": runs, "requests": summary}
        _c.emit_result(payload, as_json=as_json, out=out, notes=notes)
