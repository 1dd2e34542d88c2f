"""Forgetting quality at N = 32 a side, every method beside exact unlearning's noise floor (issue #14).

For each forget set and method: N originals (seeds a_i) trained together
(:mod:`obliviate.population`), each unlearned once by the method, scored against N models
retrained with disjoint seeds b_j, beside the noise floor (N retrained with seeds a_i against the
same N oracles): :func:`obliviate.experiments.forget.quality`. Prints a markdown table: F with its
standard error over the forget examples, the noise floor, the challenge's final score, the mean
finite epsilon, the examples perfectly separated (epsilon = inf, H = 0), the mean retain / test
accuracies, and the wall seconds of the whole row; then the resolution at this N.

    python benchmarks/forgetting_quality.py                      # digits, random:10% and class:3
    python benchmarks/forgetting_quality.py --n-models 8 --methods retrain ssd --forget random:10%
    python benchmarks/forgetting_quality.py --out docs/unlearning.md   # also (re)write its section

With ``--out`` the tables replace the part of that file between the markers
``<!-- forgetting-quality:start -->`` and ``<!-- forgetting-quality:end -->`` (appended with them
when absent), so regenerating the other tables of ``docs/unlearning.md`` and this one do not
overwrite each other as long as each keeps the other's part.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from obliviate.experiments.forget import ForgetSpec, prepare, quality

START, END = "<!-- forgetting-quality:start -->", "<!-- forgetting-quality:end -->"
METHODS = ("retrain", "ssd", "scrub", "finetune", "gradient_ascent", "neggrad_plus")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--forget", nargs="+", default=["random:10%", "class:3"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--n-models", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="markdown file whose marked section to rewrite")
    args = ap.parse_args()
    lines: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    torch.set_num_threads(1)
    print(f"load average at start: {os.getloadavg()}")
    for forget in args.forget:
        base = ForgetSpec(
            dataset=args.dataset,
            forget=forget,
            method="retrain",
            seed=args.seed,
            quality=args.n_models,
        )
        p = prepare(base)
        emit(
            f"\n### {args.dataset} forget `{forget}` ({len(p.request.forget)} samples), "
            f"N = {args.n_models} a side, seed {args.seed}\n"
        )
        emit(
            "| method | F ± s.e. | noise floor F (retrain vs retrain) | F, challenge code's rules "
            "[its noise floor] | score | mean finite ε | separated (ε = ∞) | RA | TA | s |"
        )
        emit("|---|---|---|---|---|---|---|---|---|---|")
        q = {}
        for method in args.methods:
            spec = ForgetSpec(
                dataset=args.dataset,
                forget=forget,
                method=method,
                seed=args.seed,
                quality=args.n_models,
            )
            start = time.perf_counter()
            q = quality(spec, p)
            seconds = time.perf_counter() - start
            nf = q["noise_floor"]
            emit(
                f"| {method} | {q['F']:.3f} ± {q['F_stderr']:.3f} | {nf['F']:.3f} ± "
                f"{nf['F_stderr']:.3f} | {q['F_challenge_code']:.3f} "
                f"[{nf['F_challenge_code']:.3f}] | {q['score']:.3f} | {q['mean_epsilon']:.2f} | "
                f"{q['n_separated']}/{len(q['epsilons'])} | {q['retain_acc_unlearned']:.3f} | "
                f"{q['test_acc_unlearned']:.3f} | {seconds:.0f} |"
            )
        levels = ", ".join(f"{h:g}" for h in q["H_levels"])
        emit(
            f"\nResolution at N = {args.n_models}: a finite ε is at most "
            f"{q['max_finite_epsilon']:.2f}, so {q['n_reachable_bins']} of the 13 bins are "
            f"reachable and a forget example scores one of H = {levels}; F is their mean over "
            f"{len(q['epsilons'])} examples."
        )
    print(f"\nload average at end: {os.getloadavg()}")
    if args.out:
        path = Path(args.out)
        text = path.read_text() if path.exists() else ""
        block = f"{START}\n" + "\n".join(lines) + f"\n{END}"
        if START in text and END in text:
            text = text[: text.index(START)] + block + text[text.index(END) + len(END) :]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        path.write_text(text)


if __name__ == "__main__":
    main()
