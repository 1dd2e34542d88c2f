"""Choose the tiny model's unlearning learning rates on a validation split (data_seed=1).

For each method and lr, unlearn the forget people of the validation data (a different set of
invented people than the reported data_seed=0) and print forget / retain probabilities.
Rule: the largest lr whose retain probability stays >= 0.5 x the target's.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/llm_validate.py
"""

from __future__ import annotations

import copy
import sys
import time

import torch

from obliviate.llm.methods import REGISTRY
from obliviate.llm.metrics import LMScorer, evaluate
from obliviate.llm.models import LM
from obliviate.llm.run import LLMSpec, build_base, build_data, make_method
from obliviate.llm.train import encode, fine_tune


def main() -> None:
    torch.set_num_threads(1)
    spec = LLMSpec(data_seed=1, methods=())
    data = build_data(spec)
    base = build_base(spec, data)
    kept = list(data.split("retain")) + list(data.split("world"))
    forget, retain = encode(base, data.split("forget")), encode(base, kept)
    target = LM(copy.deepcopy(base.model), base.tokenizer, base.device, base.prefix)
    fine_tune(
        target,
        forget + retain,
        n_epochs=spec.n_epochs,
        lr=spec.lr,
        batch_size=spec.batch_size,
        seed=0,
    )
    ref = evaluate(LMScorer(target), target, data, generate=False)
    t_f, t_r = ref["forget_Q_A_Prob"]["agg_value"], ref["retain_Q_A_Prob"]["agg_value"]
    print(f"target forget {t_f:.3f} retain {t_r:.3f}")
    lrs = [float(x) for x in (sys.argv[1:] or ["3e-4", "1e-3", "3e-3", "1e-2"])]
    for name in [m for m in REGISTRY if m != "retrain"]:
        for lr in lrs:
            t = time.perf_counter()
            method = make_method(LLMSpec(unlearn_lr=lr, methods=()), name)
            out = method.unlearn(target, forget, retain, base=base)
            r = evaluate(LMScorer(out), out, data, generate=False)
            f_p, r_p = r["forget_Q_A_Prob"]["agg_value"], r["retain_Q_A_Prob"]["agg_value"]
            print(
                f"{name:12s} lr={lr:<7g} forget {f_p:.3f} retain {r_p:.3f}  {time.perf_counter() - t:.1f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
