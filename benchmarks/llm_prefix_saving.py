"""What reusing the frozen blocks' output saves: training steps with and without the replay.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/llm_prefix_saving.py --model smollm2-135m --top-k 6

Alternates ``--steps`` training steps (AdamW, batch ``--batch-size`` of fictitious-people QA)
with the bottom blocks replayed from the cache and computed each time, on the same model, and
prints the median seconds per step of each (the cache is filled before timing).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from obliviate.llm.data import fictitious_qa
from obliviate.llm.models import LM, PrefixCache, blocks, load_lm, make_trainable
from obliviate.llm.train import encode, mean_token_nll


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--top-k", type=int, default=6)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args()
    torch.set_num_threads(1)
    lm = make_trainable(load_lm(a.model), mode="top", top_k=a.top_k)
    n_frozen = len(blocks(lm.model)) - a.top_k
    cached = LM(lm.model, lm.tokenizer, lm.device, PrefixCache(n_frozen))
    data = encode(lm, fictitious_qa(n_people=8, n_attributes=3).items)
    params = [q for q in lm.model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    with torch.no_grad():
        t = time.perf_counter()
        for e in data:
            cached.prefix.get(lm.model, e.ids, lm.device)  # type: ignore[union-attr]
        fill = time.perf_counter() - t
    times: dict[str, list[float]] = {"replayed": [], "computed": []}
    for step in range(2 * a.steps):
        which = cached if step % 2 == 0 else lm
        batch = [data[(step * a.batch_size + i) % len(data)] for i in range(a.batch_size)]
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        mean_token_nll(which, batch).backward()
        opt.step()
        times["replayed" if step % 2 == 0 else "computed"].append(time.perf_counter() - t)
    r, c = statistics.median(times["replayed"]), statistics.median(times["computed"])
    print(
        f"{a.model}, top {a.top_k} of {len(blocks(lm.model))} blocks training, batch {a.batch_size}: "
        f"{r:.3f} s/step replayed vs {c:.3f} s/step computed ({c / r:.2f}x); "
        f"filling the cache for {len(data)} sequences took {fill:.1f} s"
    )


if __name__ == "__main__":
    main()
