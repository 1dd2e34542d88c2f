"""``obliviate shard train|forget|status|verify|resume|predict``: exact unlearning with a ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from obliviate.cli import _common as _c
from obliviate.errors import ObliviateError

if TYPE_CHECKING:  # the CLI imports the engine lazily
    from obliviate.sharded import ShardedStore

STORE_HELP = "folder of the shard store"
BACKEND_HELP = "where shards (re)train: local (process pool), inline (this process) or ray"


def _parse_ids(text: str | None, file: Path | None) -> list[int]:
    from obliviate.data.forget_sets import parse_ids, read_id_file

    if (text is None) == (file is None):
        raise ObliviateError("give exactly one of --ids 1,2,3 or --ids-file FILE")
    ids = read_id_file(file) if file is not None else parse_ids(text or "")
    return [int(i) for i in ids.tolist()]


def _check_output(output: Path | None) -> None:
    """Refuse an output file that could not be written, before any work is done."""
    if output is None:
        return
    _c.check_out_target(output)


def _emit(obj: Any, output: Path | None = None) -> None:
    from obliviate.io import atomic_write_text

    text = json.dumps(obj, indent=2, sort_keys=True)
    if output is not None:
        with _c.writing(output):
            atomic_write_text(output, text + "\n")
    else:
        sys.stdout.write(text + "\n")


def _open(
    store: Path,
    backend: str = "local",
    workers: int | None = None,
    data_dir: str | None = None,
    *,
    device: str = "cpu",
    precision: str | None = None,
) -> ShardedStore:
    from obliviate.sharded import ShardedStore

    return ShardedStore(
        store,
        backend=backend,
        n_workers=workers,
        data_dir=data_dir,
        device=device,
        precision=precision,
    )


def register(app: typer.Typer) -> None:
    shard = typer.Typer(
        help="Exact unlearning: sharded (SISA / shard-graph) training with a ledger and receipts.",
        no_args_is_help=True,
    )

    @shard.command("train")
    def train(
        store: Path = typer.Option(
            ..., "--store", help=STORE_HELP + " (created; must not exist or be empty)"
        ),
        dataset: str = typer.Option(
            "digits", "--dataset", help="dataset name (obliviate list datasets)"
        ),
        data_dir: str | None = typer.Option(
            None, "--data-dir", help="folder with IDX files (mnist, fashion-mnist)"
        ),
        limit: int | None = typer.Option(
            None, "--limit", min=1, help="use only the first N training rows"
        ),
        shards: int = typer.Option(
            5, "--shards", help="number of shards S (S x R must not exceed the training rows)"
        ),
        slices: int = typer.Option(4, "--slices", help="number of slices R per shard"),
        graph: str = typer.Option(
            "none", "--graph", help="shard graph: none, ring:K, regular:D, cliques:C, edges:0-1,1-2"
        ),
        aggregation: str = typer.Option(
            "softmax", "--aggregation", help="softmax (mean of softmax) or vote"
        ),
        exclude_ids: Path | None = typer.Option(
            None, "--exclude-ids", help="file of ids to train as if they never existed"
        ),
        subjects: Path | None = typer.Option(
            None,
            "--subjects",
            help="data subjects: CSV (columns subject,id) or JSON {subject: [ids]}, stored as keyed hashes",
        ),
        backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
        workers: int | None = typer.Option(
            None, "--workers", help="parallel workers (default: all cores)"
        ),
        model: str = typer.Option("mlp", "--model", help="mlp or cnn"),
        hidden: str = typer.Option("100", "--hidden", help="hidden widths, e.g. 100 or 64,64"),
        epochs: int = typer.Option(10, "--epochs", help="n_epochs: passes over each shard's data"),
        batch_size: int = typer.Option(32, "--batch-size"),
        lr: float = typer.Option(0.05, "--lr"),
        seed: int = _c.seed_option(help="seed of assignment, initial weights and data order"),
        as_json: bool = typer.Option(False, "--json", help="print the status as JSON"),
        device: str = _c.device_option(),
        precision: str = _c.precision_option(),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Train a new shard store."""
        from obliviate.sharded import DataSpec, ShardConfig, ShardedStore
        from obliviate.sharded.config import default_recipe

        try:
            widths = tuple(int(h) for h in hidden.split(",") if h.strip())
        except ValueError:
            raise ObliviateError(f"--hidden {hidden!r}: give integers like 100 or 64,64") from None
        recipe = default_recipe(
            seed, model=model, hidden=widths, n_epochs=epochs, batch_size=batch_size, lr=lr
        )
        config = ShardConfig(
            n_shards=shards,
            n_slices=slices,
            graph=graph,
            aggregation=aggregation,
            seed=seed,
            recipe=recipe,
        )
        excluded = _parse_ids(None, exclude_ids) if exclude_ids is not None else None
        mapping = None
        data_spec = DataSpec(dataset=dataset, data_dir=data_dir, limit=limit, split_seed=0)
        if subjects is not None:  # read (and reject a bad file) before the training
            from obliviate.sharded.config import load_data
            from obliviate.sharded.subjects import check_mapping, read_mapping

            mapping = read_mapping(subjects)
            trained = set(load_data(data_spec)[0].ids.tolist()) - set(excluded or [])
            check_mapping(mapping, trained)
        st = ShardedStore.train(
            store,
            data=data_spec,
            config=config,
            exclude_ids=excluded,
            backend=backend,
            n_workers=workers,
            device=device,
            precision=precision,
        )
        if mapping is not None:
            from obliviate.sharded.subjects import import_subjects

            import_subjects(st.ledger, mapping)
        status = st.status()
        if as_json:
            _emit(status)
        else:
            from obliviate.sharded.sisa import load_data

            _, test, _ = load_data(st.data_spec)
            print(
                f"trained {shards} shards x {slices} slices ({graph}) on {sum(status['samples'].values())} samples "
                f"into {store}; test accuracy {st.accuracy(test):.4f}"
            )

    @shard.command("forget")
    def forget(
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        ids: str | None = typer.Option(None, "--ids", help="ids to delete, e.g. 1,2,3"),
        ids_file: Path | None = typer.Option(
            None, "--ids-file", help="file of ids (text, .json or .npy)"
        ),
        request_id: str | None = typer.Option(
            None, "--request-id", help="idempotency key (default: hash of the ids)"
        ),
        include_ids: bool = typer.Option(
            False, "--include-ids", help="put the ids themselves in the receipt"
        ),
        queue: bool = typer.Option(
            False,
            "--queue",
            help="only record the request; `shard resume` processes the queue in one pass",
        ),
        check_exactness: bool = typer.Option(
            False,
            "--check-exactness",
            help="also retrain affected shards from scratch and compare hashes",
        ),
        backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
        workers: int | None = typer.Option(None, "--workers"),
        data_dir: str | None = typer.Option(
            None, "--data-dir", help="override the store's data folder"
        ),
        out: Path | None = _c.out_option("write the receipt to this file (not to stdout)"),
        output: Path | None = _c.legacy_output_option(),
        _always_json: bool = _c.json_option(_c.ALWAYS_JSON_HELP),
        device: str = _c.device_option(),
        precision: str | None = _c.store_precision_option(),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Delete samples exactly; prints the JSON receipt."""
        output = _c.resolve_out(out, output)
        wanted = _parse_ids(ids, ids_file)
        _check_output(output)  # before the deletion: a receipt must never be lost after it
        st = _open(store, backend, workers, data_dir, device=device, precision=precision)
        receipt = st.forget(
            wanted,
            request_id,
            queue=queue,
            check_exactness=check_exactness,
            include_ids=include_ids,
        )
        _emit(receipt, output)

    @shard.command("status")
    def status(
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
        with_ids: bool = typer.Option(False, "--ids", help="list each shard's ids"),
        data_dir: str | None = typer.Option(None, "--data-dir"),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Each shard's current checkpoint and sample count; every request's status.

        A damaged ledger (SQLite's quick_check finds problems) is refused as `forget` refuses
        it: one `error:` line, exit 2; `shard verify` lists the problems."""
        st = _open(store, data_dir=data_dir)
        st.ledger.check_intact()  # never show a damaged ledger as a normal table
        try:
            st.recover()
        except ObliviateError as exc:  # still show the status; the problem is named
            if not quiet:
                print(f"warning: could not complete unfinished work: {exc}", file=sys.stderr)
        info = st.status(include_ids=with_ids)
        if as_json:
            _emit(info)
            return
        from rich.table import Table

        counts = ", ".join(f"{n} {state}" for state, n in info["samples"].items())
        # the header is a plain line: a table title wraps to the table's width when piped
        print(
            f"{store}: model version {info['model_version']}, graph {info['graph']}, samples: {counts}"
        )
        table = Table()
        for col in ("shard", "checkpoint", "n_samples", "n_own", "neighbourhood"):
            table.add_column(col)
        for s in info["shards"]:
            table.add_row(
                str(s["shard"]),
                (s["checkpoint"] or "-")[:16],
                str(s["n_samples"]),
                str(s["n_own"]),
                ",".join(map(str, s["neighbourhood"])),
            )
        _c.console().print(table)
        for r in info["requests"]:
            print(f"request {r['request_id']}: {r['status']}")
        if with_ids:
            for s in info["shards"]:
                print(f"shard {s['shard']} ids: {','.join(map(str, s['ids']))}")

    @shard.command("verify")
    def verify(
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        _always_json: bool = _c.json_option(_c.ALWAYS_JSON_HELP),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Re-hash every checkpoint, check ids against the ledger, walk the event chain.

        Exit 0 when sound; 1 when damage is found (the JSON report on stdout, one line naming
        the first problem on stderr)."""
        from obliviate.sharded.ledger import LedgerDamaged

        try:
            report = _open(store).verify()
        except LedgerDamaged as exc:
            report = {"ok": False, "problems": [str(exc)], "state": "damaged"}
        _emit(report)
        if not report["ok"]:
            n = len(report["problems"])
            first = " ".join(str(report["problems"][0]).split())  # one line, whatever SQLite says
            print(f"verify: {n} problem(s); first: {first}", file=sys.stderr)
            raise typer.Exit(1)

    @shard.command("resume")
    def resume(
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        rollback: bool = typer.Option(
            False, "--rollback", help="cancel unfinished requests instead of completing them"
        ),
        check_exactness: bool = typer.Option(False, "--check-exactness"),
        backend: str = typer.Option("local", "--backend", help=BACKEND_HELP),
        workers: int | None = typer.Option(None, "--workers"),
        data_dir: str | None = typer.Option(None, "--data-dir"),
        _always_json: bool = _c.json_option(_c.ALWAYS_JSON_HELP),
        device: str = _c.device_option(),
        precision: str | None = _c.store_precision_option(),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Complete (or roll back) unfinished work: interrupted and queued requests.

        Retrains like `shard forget`: `--device` and `--precision` as there."""
        st = _open(store, backend, workers, data_dir, device=device, precision=precision)
        if rollback:
            _emit({"cancelled": st.cancel_pending()})
            return
        receipts = st.recover() + st.process(check_exactness=check_exactness)
        _emit({"completed": [r["request_id"] for r in receipts], "receipts": receipts})

    @shard.command("predict")
    def predict(
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        input_: Path = typer.Option(
            ...,
            "--input",
            help=".npy of raw rows shaped like the store's data (the store standardises them)",
        ),
        preprocessed: bool = typer.Option(
            False,
            "--preprocessed",
            help="the rows are already standardised the way the loader does it",
        ),
        out: Path | None = _c.out_option("write class scores [N, classes] to this .npy"),
        output: Path | None = _c.legacy_output_option(),
        data_dir: str | None = typer.Option(None, "--data-dir"),
        _always_json: bool = _c.json_option(_c.ALWAYS_JSON_HELP),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Predict labels with the aggregated shard models; prints a JSON list of labels."""
        import numpy as np

        output = _c.resolve_out(out, output)
        _check_output(output)
        if not input_.exists():
            raise ObliviateError(
                f"input file {str(input_)!r} does not exist; give a .npy array of rows"
            )
        hint = "give a .npy array of numeric rows (numpy.save(path, rows))"
        with input_.open("rb") as f:
            if f.read(6) != b"\x93NUMPY":  # numpy would offer to unpickle anything else
                raise ObliviateError(f"{str(input_)!r} is not a .npy array; {hint}")
        try:
            x = np.load(input_, allow_pickle=False)
        except (ValueError, OSError) as exc:
            why = "it holds objects, which are never unpickled" if "pickle" in str(exc) else exc
            raise ObliviateError(
                f"{str(input_)!r} is not a readable .npy array ({why}); {hint}"
            ) from None
        st = _open(store, data_dir=data_dir)
        from obliviate.sharded.ledger import LedgerDamaged

        damage = None
        try:  # predicting reads only checkpoints; damage elsewhere in the ledger is a warning
            st.ledger.check_intact()
        except LedgerDamaged as exc:
            damage = exc
        st.recover()  # a ledger too damaged to read fails here or below: one error, no warning
        proba = st.predict_proba(x, preprocessed=preprocessed)
        if damage is not None:
            print(
                f"warning: {damage}; the predictions may come from a damaged store", file=sys.stderr
            )
        if output is not None:
            import io

            from obliviate.io import atomic_write_bytes

            buf = io.BytesIO()
            np.save(buf, proba.numpy())
            with _c.writing(output):
                atomic_write_bytes(output, buf.getvalue())
        _emit(proba.argmax(dim=1).tolist())

    from obliviate.cli.shard_stream import register as register_stream

    register_stream(shard)  # `obliviate shard stream ...`: sharded continual learning
    app.add_typer(shard, name="shard")
