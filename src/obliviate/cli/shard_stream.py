"""``obliviate shard stream learn|forget|status|verify|resume``: sharded continual learning.

S shards learn a scenario's stream continually with a continual strategy; ``forget`` deletes ids
exactly inside the stream (rollback to each affected shard's last checkpoint that never saw them,
replay without them) and prints the receipt. See :mod:`obliviate.sharded.continual`.
``learn``, ``forget`` and ``resume`` take ``--device`` / ``--precision`` like every training
command, but accept only ``cpu`` / ``fp32`` (one-line error otherwise): the engine's exact
deletion holds bit for bit on CPU fp32 training only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from obliviate.cli import _common as _c
from obliviate.errors import ObliviateError

STORE_HELP = "folder of the sharded continual store"
BACKEND_HELP = "where shards train: inline (this process, default), local (process pool) or ray"
EXACT_WHY = (
    "the sharded continual engine trains on the CPU at fp32 only (its bitwise contract: a "
    "deletion gives the bits a retraining without the ids gives)"
)


def _device_option() -> Any:
    """``--device``: accepted for every training command; here only ``cpu`` (see
    :func:`_check_exact`)."""
    return typer.Option(
        "cpu", "--device", help="cpu only: " + EXACT_WHY, callback=_c._device_callback
    )


def _precision_option() -> Any:
    """``--precision``: here only ``fp32`` (see :func:`_check_exact`)."""
    return typer.Option(
        "fp32", "--precision", help="fp32 only: " + EXACT_WHY, callback=_c._precision_callback
    )


def _check_exact(device: str, precision: str) -> None:
    """Refuse, in one line naming the flag, a device other than the CPU or a precision other
    than fp32 (as ``obliviate lifecycle --path exact`` does): the engine's exact deletion
    replays shards to the same bits, which holds for CPU fp32 training only."""
    from obliviate.training import check_device

    if check_device(device, name="--device").type != "cpu":
        raise ObliviateError(f"--device {device}: {EXACT_WHY}; use --device cpu")
    if precision != "fp32":
        raise ObliviateError(f"--precision {precision}: {EXACT_WHY}; use --precision fp32")


def _stream(meta: dict[str, Any]) -> Any:
    from obliviate.data.datasets import load_dataset
    from obliviate.data.scenarios import build_scenario

    train, test = load_dataset(
        meta["dataset"], data_dir=meta.get("data_dir"), limit=meta.get("limit")
    )
    return build_scenario(
        meta["scenario"], train, test, n_experiences=meta["n_experiences"], seed=meta["seed"]
    )


def _summary(store: Any) -> dict[str, Any]:
    status = store.status()
    meta = store.metadata
    if meta.get("dataset") and status["n_experiences"]:
        stream = _stream(meta)
        seen = stream.experiences[: status["n_experiences"]]
        status["test_accuracy_seen"] = [store.accuracy(e.test) for e in seen]
    return status


def _print_status(info: dict[str, Any]) -> None:
    """``status`` as text: a header, one table row per shard, one line per request."""
    from rich.table import Table

    counts = ", ".join(f"{n} {state}" for state, n in info["samples"].items())
    strategy = info["strategy"]["name"]
    print(  # a plain line: a table title wraps to the table's width when piped
        f"{info['store']}: {strategy}, model version {info['model_version']}, "
        f"{info['n_experiences']} experience(s) learned, samples: {counts}"
    )
    table = Table()
    for col in ("shard", "checkpoint", "n_samples"):
        table.add_column(col)
    for s in info["shards"]:
        table.add_row(str(s["shard"]), (s["checkpoint"] or "-")[:16], str(s["n_samples"]))
    _c.console().print(table)
    accs = info.get("test_accuracy_seen")
    if accs:
        print("test accuracy per experience learned: " + ", ".join(f"{a:.4f}" for a in accs))
    for r in info["requests"]:
        print(f"request {r['request_id']}: {r['status']}")


def register(shard: typer.Typer) -> None:
    """Add the ``stream`` command group to ``obliviate shard``."""
    stream_app = typer.Typer(
        help="Sharded continual learning: S shards learn a stream; exact deletion inside it.",
        no_args_is_help=True,
    )

    @stream_app.command("learn")
    def learn(
        store: Path = typer.Option(..., "--store", help=STORE_HELP + " (created if new)"),
        dataset: str | None = typer.Option(None, "--dataset", help="dataset name [digits]"),
        data_dir: str | None = typer.Option(None, "--data-dir", help="folder with IDX files"),
        limit: int | None = typer.Option(None, "--limit", help="first N training rows only"),
        scenario: str | None = typer.Option(
            None, "--scenario", help="scenario name [class-incremental]"
        ),
        n_experiences: int | None = typer.Option(
            None, "--n-experiences", help="experiences in the stream [5]"
        ),
        until: int | None = typer.Option(
            None, "--until", help="learn up to this many experiences (default: all)"
        ),
        strategy: str | None = typer.Option(None, "--strategy", help="continual strategy [replay]"),
        sets: list[str] | None = typer.Option(
            None, "--set", help="strategy hyperparameter key=value (repeatable)"
        ),
        shards: int | None = typer.Option(None, "--shards", help="number of shards S [3]"),
        slices: int | None = typer.Option(None, "--slices", help="slices R per experience [1]"),
        hidden: str = typer.Option("100", "--hidden", help="hidden widths, e.g. 100 or 64,64"),
        epochs: int | None = typer.Option(None, "--epochs", help="n_epochs per experience [5]"),
        batch_size: int | None = typer.Option(None, "--batch-size", help="[32]"),
        lr: float | None = typer.Option(None, "--lr", help="[0.05]"),
        seed: int | None = _c.seed_option(None, help="seed of assignment, init, data order [0]"),
        backend: str = typer.Option("inline", "--backend", help=BACKEND_HELP),
        workers: int | None = typer.Option(None, "--workers", help="parallel workers"),
        as_json: bool = _c.json_option(),
        quiet: bool = _c.quiet_option(),
        device: str = _device_option(),
        precision: str = _precision_option(),
    ) -> None:
        """Create the store (first call) and learn the stream's next experiences; print status."""
        _check_exact(device, precision)
        from obliviate.continual import strategy_class
        from obliviate.models import ModelSpec
        from obliviate.sharded.continual import ShardedContinual
        from obliviate.training import Recipe, TrainConfig

        if (store / "ledger.sqlite").is_file():
            st = ShardedContinual(store, backend=backend, n_workers=workers)
            meta = st.metadata
            if not meta.get("dataset"):
                raise ObliviateError(
                    f"{str(store)!r} was not created by `obliviate shard stream learn`; "
                    "feed it from Python (ShardedContinual.learn)"
                )
            # the store's own settings continue it: options given now must agree with them
            recipe = st.config.recipe
            kept = {
                "dataset": meta.get("dataset"),
                "scenario": meta.get("scenario"),
                "n_experiences": meta.get("n_experiences"),
                "seed": meta.get("seed"),
                "limit": meta.get("limit"),
                "strategy": st.strategy_name,
                "shards": st.config.n_shards,
                "slices": st.config.n_slices,
                "epochs": recipe.train.n_epochs,
                "batch_size": recipe.train.batch_size,
                "lr": recipe.train.lr,
            }
            given = locals()
            clash = [
                f"--{k.replace('_', '-')} {given[k]} (store: {v})"
                for k, v in kept.items()
                if given[k] is not None and given[k] != v
            ]
            if clash:
                st.close()
                raise ObliviateError(
                    f"the store {str(store)!r} exists with other settings: {'; '.join(clash)}; "
                    "leave these options out to continue it, or give a new --store"
                )
        else:
            dataset = dataset if dataset is not None else "digits"
            scenario = scenario if scenario is not None else "class-incremental"
            n_experiences = n_experiences if n_experiences is not None else 5
            strategy = strategy if strategy is not None else "replay"
            shards = shards if shards is not None else 3
            slices = slices if slices is not None else 1
            epochs = epochs if epochs is not None else 5
            batch_size = batch_size if batch_size is not None else 32
            lr = lr if lr is not None else 0.05
            seed = seed if seed is not None else 0
            params = _c.parse_sets(strategy_class(strategy), sets)
            meta = {
                "dataset": dataset,
                "data_dir": data_dir,
                "limit": limit,
                "scenario": scenario,
                "n_experiences": n_experiences,
                "seed": seed,
            }
            stream = _stream(meta)  # a bad dataset or scenario fails before the store exists
            recipe = Recipe(
                ModelSpec(hidden=_c.parse_int_tuple("--hidden", hidden), seed=seed),
                TrainConfig(n_epochs=epochs, batch_size=batch_size, lr=lr, seed=seed),
            )
            st = ShardedContinual.for_stream(  # task-aware streams keep their task heads
                store,
                stream,
                n_shards=shards,
                strategy=strategy,
                strategy_params=params,
                recipe=recipe,
                n_slices=slices,
                seed=seed,
                metadata=meta,
                backend=backend,
                n_workers=workers,
            )
        with st:
            stream = _stream(meta)
            end = len(stream) if until is None else min(until, len(stream))
            for exp in stream.experiences[len(st.experiences()) : end]:
                if not quiet:
                    print(
                        f"learning experience {exp.index} ({len(exp.train)} rows)", file=sys.stderr
                    )
                st.learn(exp)
            info = _summary(st)
        if as_json:
            _c.emit_json(info)
        else:
            _print_status(info)

    @stream_app.command("forget")
    def forget(
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        ids: str | None = typer.Option(None, "--ids", help="ids to delete, e.g. 3,17,42"),
        ids_file: Path | None = typer.Option(None, "--ids-file", help="file of ids"),
        request_id: str | None = typer.Option(None, "--request-id", help="idempotency key"),
        check_exactness: bool = typer.Option(
            False, "--check-exactness", help="also replay affected shards from scratch and compare"
        ),
        backend: str = typer.Option("inline", "--backend", help=BACKEND_HELP),
        workers: int | None = typer.Option(None, "--workers", help="parallel workers"),
        out: Path | None = _c.out_option("also write the receipt (JSON) to this file"),
        as_json: bool = _c.json_option(_c.ALWAYS_JSON_HELP),
        quiet: bool = _c.quiet_option(),
        device: str = _device_option(),
        precision: str = _precision_option(),
    ) -> None:
        """Delete ids exactly and print the receipt (JSON)."""
        _check_exact(device, precision)
        from obliviate.io import atomic_write_text
        from obliviate.sharded.continual import ShardedContinual

        if out is not None:
            _c.check_out_target(out)  # before the deletion commits
        wanted = _c.parse_ids_option(ids, ids_file)
        with ShardedContinual(store, backend=backend, n_workers=workers) as st:
            receipt = st.forget(wanted, request_id, check_exactness=check_exactness)
        if out is not None:
            import json

            with _c.writing(out):
                atomic_write_text(out, json.dumps(receipt, indent=2, sort_keys=True) + "\n")
        _c.emit_json(receipt)

    @stream_app.command("status")
    def status(
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        as_json: bool = _c.json_option(),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Shards, experiences, samples by state, requests, test accuracy (a table; --json)."""
        from obliviate.sharded.continual import ShardedContinual

        with ShardedContinual(store) as st:
            info = _summary(st)
        if as_json:
            _c.emit_json(info)
        else:
            _print_status(info)

    @stream_app.command("verify")
    def verify(
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        as_json: bool = _c.json_option(_c.ALWAYS_JSON_HELP),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Re-hash every file, check ids and the event chain; exit 1 when a problem is found."""
        from obliviate.sharded.continual import ShardedContinual

        with ShardedContinual(store) as st:
            report = st.verify()
        _c.emit_json(report)
        if not report["ok"]:
            raise typer.Exit(1)

    @stream_app.command("resume")
    def resume(
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        as_json: bool = _c.json_option(_c.ALWAYS_JSON_HELP),
        quiet: bool = _c.quiet_option(),
        device: str = _device_option(),
        precision: str = _precision_option(),
    ) -> None:
        """Complete a deletion a killed process left; print the receipts completed (JSON)."""
        _check_exact(device, precision)
        from obliviate.sharded.continual import ShardedContinual

        with ShardedContinual(store) as st:
            _c.emit_json(st.recover())

    shard.add_typer(stream_app, name="stream")
