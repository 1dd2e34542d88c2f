"""Exact deletion through sharded adapters (SAFE) vs approximate unlearning, tiny GPT-2.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/llm_sharded.py --seed 0

One frozen base (a tiny GPT-2 pre-trained on facts about *other* invented people), then:

* monolithic: the top ``--top-k`` blocks fine-tuned on forget + retain + world facts (the
  target); the retain-only oracle; the approximate methods on the target (seconds per request =
  one unlearning run over the forget set);
* SAFE: S shards x R slices, one adapter (copy of the top blocks) per shard; each forget person
  is one deletion request (its facts), retraining only the affected adapters from their last
  clean checkpoint; the ensemble (mean of the shards' next-token distributions, and the
  log-mean) measured after deletion. Training is also timed without reusing the frozen blocks'
  output, to measure that saving.

Prints two markdown tables.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from obliviate.llm.data import QAData
from obliviate.llm.metrics import LMScorer, against, evaluate, summary
from obliviate.llm.models import LM
from obliviate.llm.run import DEFAULT_METHODS, LLMSpec, build_base, build_data, make_method
from obliviate.llm.sharded import AdapterStore, SafeConfig
from obliviate.llm.train import encode, fine_tune

COLS = (
    "forget_Q_A_Prob",
    "forget_value_accuracy",
    "forget_quality_same_wording",
    "retain_Q_A_Prob",
    "retain_value_accuracy",
    "wf_value_accuracy",
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--shards", default="1,3,5,3g", help="S per store; g: group by entity")
    p.add_argument("--slices", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(1)
    spec = LLMSpec(
        mode="top",
        top_k=a.top_k,
        tiny_layers=a.layers,
        pretrain_epochs=30,
        n_epochs=a.epochs,
        lr=a.lr,
        seed=a.seed,
        methods=(),
    )
    data = build_data(spec)
    t = time.perf_counter()
    base = build_base(spec, data)
    print(f"base pre-training {time.perf_counter() - t:.1f} s", flush=True)
    kept = list(data.split("retain")) + list(data.split("world"))
    forget, retain = encode(base, data.split("forget")), encode(base, kept)
    rows: list[tuple[str, float, dict[str, float]]] = []

    t = time.perf_counter()
    target = LM(copy.deepcopy(base.model), base.tokenizer, base.device, base.prefix)
    fine_tune(target, forget + retain, n_epochs=a.epochs, lr=a.lr, batch_size=8, seed=a.seed)
    t_target = time.perf_counter() - t
    t = time.perf_counter()
    oracle = make_method(spec, "retrain").unlearn(target, forget, retain, base=base)
    t_oracle = time.perf_counter() - t
    ref = evaluate(LMScorer(oracle), oracle, data)
    rows.append(("retrain (oracle, exact)", t_oracle, summary(against(ref, ref))))
    rows.append(
        (
            "target (no deletion)",
            t_target,
            summary(evaluate(LMScorer(target), target, data, reference=ref)),
        )
    )
    for name in DEFAULT_METHODS:
        t = time.perf_counter()
        out = make_method(spec, name).unlearn(target, forget, retain)
        sec = time.perf_counter() - t
        rows.append((name, sec, summary(evaluate(LMScorer(out), out, data, reference=ref))))
        print(f"{name} done", flush=True)

    ft = QAData(tuple(it for it in data.items if it.split != "holdout"))
    people = data.entities("forget")
    safe_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shard_text in a.shards.split(","):
            n_shards, grouped = int(shard_text.rstrip("g")), shard_text.endswith("g")
            cfg = SafeConfig(
                n_shards=n_shards,
                group_by_entity=grouped,
                n_slices=a.slices,
                top_k=a.top_k,
                n_epochs=a.epochs,
                lr=a.lr,
                batch_size=8,
                seed=a.seed,
            )
            t = time.perf_counter()
            store = AdapterStore.train(Path(tmp) / f"s{shard_text}", base=base, data=ft, config=cfg)
            t_train = time.perf_counter() - t
            cache = store.status()["prefix_cache"]
            t_plain = float("nan")
            if shard_text == "3":
                t = time.perf_counter()
                AdapterStore.train(
                    Path(tmp) / "plain", base=base, data=ft,
                    config=SafeConfig(**{**cfg.__dict__, "reuse_frozen": False}),
                )  # fmt: skip
                t_plain = time.perf_counter() - t
            costs, n_retrained = [], []
            for person in people:
                ids = [it.id for it in data.items if it.entity == person]
                receipt = store.forget(ids)
                costs.append(receipt["timings"]["retrain_seconds"])
                n_retrained.append(len(receipt["retrained"]))
            for combine in ("mean", "logmean"):
                res = evaluate(store.scorer(combine), store.lm, data, reference=ref)
                safe_rows.append(
                    (f"SAFE S={n_shards} R={a.slices}{' by person' if grouped else ''} ({combine})", t_train, t_plain,
                     float(np.mean(costs)), float(np.mean(n_retrained)), summary(res), cache)
                )  # fmt: skip
            print(f"S={shard_text} done", flush=True)

    print("\n| model | seconds per request | " + " | ".join(COLS) + " |")
    print("|" + "---|" * (len(COLS) + 2))
    for name, sec, s in rows:
        print(
            f"| {name} | {sec:.2f} | "
            + " | ".join(f"{s.get(c, float('nan')):.3f}" for c in COLS)
            + " |"
        )
    for name, _, _, cost, _, s, _ in safe_rows:
        print(
            f"| {name} | {cost:.2f} | "
            + " | ".join(f"{s.get(c, float('nan')):.3f}" for c in COLS)
            + " |"
        )
    print(
        "\n| store | train s | train s without frozen reuse | shards retrained per request | frozen outputs computed / reused |"
    )
    print("|---|---|---|---|---|")
    for name, t_train, t_plain, _, n_re, _, cache in safe_rows[::2]:
        c = "-" if cache is None else f"{cache['n_computed']} / {cache['n_reused']}"
        print(f"| {name.split(' (')[0]} | {t_train:.1f} | {t_plain:.1f} | {n_re:.1f} | {c} |")


if __name__ == "__main__":
    main()
