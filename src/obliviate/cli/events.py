"""``obliviate events``: example forgetting events (Toneva et al. 2019) per sample id.

The work is the ``events`` run kind (:func:`obliviate.experiments.events.run`), the same one
the ``[[events]]`` block of a spec file runs; ``--out x.json`` writes its result dict as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from obliviate.cli import _common as _c
from obliviate.errors import ObliviateError


def register(app: typer.Typer) -> None:
    @app.command("events")
    def events(
        dataset: str = typer.Option("digits", help="dataset name (obliviate list datasets)"),
        epochs: int = typer.Option(
            20, min=1, help="n_epochs: training epochs (= presentations per example)"
        ),
        lr: float = typer.Option(0.05, help="SGD learning rate"),
        batch_size: int = typer.Option(32, min=1),
        hidden: str = typer.Option("100", help="MLP hidden widths, comma-separated"),
        seed: int = _c.seed_option(help="seed of the initial weights and the data order"),
        seeds: str | None = _c.seeds_option(),
        limit: int | None = typer.Option(None, help="use only the first N training rows"),
        out: str = typer.Option(
            "",
            "--out",
            "-o",
            help="write per-id counts here (.csv or .json; with --seeds one row per seed and id)",
        ),
        as_json: bool = _c.json_option(),
        quiet: bool = _c.quiet_option(),
        data_dir: str = typer.Option(
            None, help="folder with the dataset's files (mnist, fashion-mnist)"
        ),
        device: str = _c.device_option(),
        precision: str = _c.precision_option(),
    ) -> None:
        """Train once, record every example's correctness at each presentation, count forgetting events."""
        import numpy as np

        from obliviate.cli._common import parse_int_tuple, parse_seeds
        from obliviate.experiments.events import EventsSpec, run

        if out:  # checked before the (long) training, not after it
            target = Path(out)
            if target.suffix not in (".csv", ".json"):
                raise ObliviateError(f"--out {out!r}: give a .csv or a .json file name")
            from obliviate.cli._common import check_out_target

            check_out_target(target)  # the folder exists and can be written
        seed_list = parse_seeds(seed, seeds)
        widths = parse_int_tuple("--hidden", hidden)
        specs = [
            EventsSpec(
                dataset=dataset,
                hidden=widths,
                n_epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                seed=sd,
                data_dir=data_dir,
                limit=limit,
                device=device,
                precision=precision,
            )
            for sd in seed_list
        ]
        results = [run(spec) for spec in specs]
        console = _c.console(quiet=as_json)  # the summary lines (not with --json)
        for sd, result in zip(seed_list, results, strict=True):
            s = result["summary"]
            who = f"{dataset} (seed {sd})" if len(seed_list) > 1 else dataset
            console.print(
                f"{who}: {int(s['n_examples'])} examples, {epochs} presentations each; "
                f"unforgettable {int(s['unforgettable'])}, forgotten at least once "
                f"{int(s['forgotten_at_least_once'])}, never learned {int(s['never_learned'])}; "
                f"test accuracy {result['test_acc']:.4f}"
            )
            finite = np.array([c for c in result["forgetting_events"] if c is not None], dtype=int)
            hist = np.bincount(np.minimum(finite, 10), minlength=11)
            console.print(
                "forgetting events histogram (10 = 10+): "
                + ", ".join(f"{k}:{v}" for k, v in enumerate(hist))
            )
        payload = results[0] if len(results) == 1 else {"seeds": seed_list, "runs": results}
        if as_json:
            _c.emit_json(payload)
        if out:
            with _c.writing(out):
                _write(out, payload, seed_list, results)
            _c.console(quiet=quiet, stderr=as_json).print(f"wrote {out}")


def _write(out: str, payload: Any, seed_list: list[int], results: list[dict[str, Any]]) -> None:
    """The per-id counts as JSON or CSV (one row per id; with several seeds, per seed and id)."""
    from obliviate.io import atomic_write_text, write_json_atomic

    if out.endswith(".json"):
        write_json_atomic(out, payload)
        return
    several = len(results) > 1
    lines = [("seed," if several else "") + "id,forgetting_events,never_learned"]
    for sd, result in zip(seed_list, results, strict=True):
        lines += [
            (f"{sd}," if several else "") + f"{i},{'' if c is None else c},{int(c is None)}"
            for i, c in zip(result["ids"], result["forgetting_events"], strict=True)
        ]
    atomic_write_text(out, "\n".join(lines) + "\n")
