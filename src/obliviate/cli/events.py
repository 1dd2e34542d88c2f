"""``obliviate events``: example forgetting events (Toneva et al. 2019) per sample id."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("events")
    def events(
        dataset: str = typer.Option("digits", help="dataset name (obliviate list datasets)"),
        epochs: int = typer.Option(20, min=1, help="training epochs (= presentations per example)"),
        lr: float = typer.Option(0.05, help="SGD learning rate"),
        batch_size: int = typer.Option(32, min=1),
        hidden: str = typer.Option("100", help="MLP hidden widths, comma-separated"),
        seed: int = typer.Option(0),
        out: str = typer.Option("", help="write per-id counts here (.csv or .json)"),
        data_dir: str = typer.Option(
            None, help="folder with the dataset's files (mnist, fashion-mnist)"
        ),
    ) -> None:
        """Train once, record every example's correctness at each presentation, count forgetting events."""
        import json

        import numpy as np
        from rich.console import Console

        from obliviate.cli._common import parse_int_tuple
        from obliviate.continual.events import record_presentations
        from obliviate.data import load_dataset
        from obliviate.io import atomic_write_text
        from obliviate.metrics.forgetting_events import forgetting_counts, summary
        from obliviate.models import ModelSpec, build_model
        from obliviate.training import TrainConfig, accuracy

        train, test = load_dataset(dataset, data_dir=data_dir)
        spec = ModelSpec(hidden=parse_int_tuple("--hidden", hidden), seed=seed)
        model = build_model(spec, train.sample_shape, train.n_classes)
        log = record_presentations(
            model, train, TrainConfig(n_epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        )
        counts = forgetting_counts(log.correct)
        s = summary(log.correct)
        console = Console()
        console.print(
            f"{dataset}: {int(s['n_examples'])} examples, {epochs} presentations each; "
            f"unforgettable {int(s['unforgettable'])}, forgotten at least once "
            f"{int(s['forgotten_at_least_once'])}, never learned {int(s['never_learned'])}; "
            f"test accuracy {accuracy(model, test):.4f}"
        )
        hist = np.bincount(np.minimum(counts[np.isfinite(counts)], 10).astype(int), minlength=11)
        console.print(
            "forgetting events histogram (10 = 10+): "
            + ", ".join(f"{k}:{v}" for k, v in enumerate(hist))
        )
        if out:
            if out.endswith(".json"):
                text = json.dumps(
                    {
                        "ids": log.ids.tolist(),
                        "forgetting_events": [None if np.isinf(c) else int(c) for c in counts],
                        "summary": s,
                        "spec": {
                            "dataset": dataset,
                            "epochs": epochs,
                            "lr": lr,
                            "batch_size": batch_size,
                            "hidden": list(spec.hidden),
                            "seed": seed,
                        },
                    }
                )
            else:
                lines = ["id,forgetting_events,never_learned"]
                lines += [
                    f"{i},{'' if np.isinf(c) else int(c)},{int(np.isinf(c))}"
                    for i, c in zip(log.ids, counts, strict=True)
                ]
                text = "\n".join(lines) + "\n"
            atomic_write_text(out, text)
            console.print(f"wrote {out}")
