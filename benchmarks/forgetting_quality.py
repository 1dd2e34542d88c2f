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
    python benchmarks/forgetting_quality.py --dataset npz:runs/mnist_1k.npz \
        --label "MNIST (1000/1000 rows)" --out FILE --marker forgetting-quality-mnist

With ``--out`` the tables replace the part of that file between the markers
``<!-- NAME:start -->`` and ``<!-- NAME:end -->``, NAME given by ``--marker`` (default
``forgetting-quality``), appended with them when absent; the rest of the file is kept as it was,
so regenerating the other tables of ``docs/unlearning.md`` and this one (or this one on another
dataset, under another marker) do not overwrite each other. ``--label`` is the dataset's name in
the table headings (default: ``--dataset``); for an ``npz:`` dataset the section also names the
file and the forget recipe it was trained with (``npz``'s, :data:`obliviate.recipes.FORGET_RECIPES`).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import torch

from obliviate.experiments.forget import ForgetSpec, prepare, quality
from obliviate.io import markdown_out_problem, write_markdown_section
from obliviate.metrics.unlearning import min_quality_models
from obliviate.recipes import recipe, recipe_name

MARKER = "forgetting-quality"
METHODS = ("retrain", "ssd", "scrub", "finetune", "gradient_ascent", "neggrad_plus")


def recipe_line(dataset: str) -> str:
    """One line naming an ``npz:`` dataset's file and the forget recipe it is trained with."""
    fields = recipe("forget", dataset) or {}
    shown = ", ".join(f"{k}={v}" for k, v in fields.items())
    return (
        f"\nDataset `{dataset}`; original, oracles and retrained models use the forget recipe "
        f"`{recipe_name(dataset)}`: {shown}."
    )


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with the command line, before any training (None when nothing is)."""
    if args.n_models < min_quality_models():
        return (
            f"--n-models {args.n_models}: forgetting quality needs at least "
            f"{min_quality_models()} models a side; give --n-models 32 (the benchmarks' N)"
        )
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.marker):
        return (
            f"--marker {args.marker!r}: use letters, digits, '.', '_' and '-' only (it is "
            "written inside an HTML comment)"
        )
    if args.out:
        problem = markdown_out_problem(args.out, args.marker)
        if problem:
            return f"--out: {problem}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--forget", nargs="+", default=["random:10%", "class:3"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--n-models", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="markdown file whose marked section to rewrite")
    ap.add_argument(
        "--marker",
        default=MARKER,
        help="section name: --out rewrites between <!-- NAME:start --> and <!-- NAME:end -->",
    )
    ap.add_argument(
        "--label", default=None, help="dataset name in the headings (default: --dataset)"
    )
    args = ap.parse_args()
    problem = check_args(args)
    if problem:
        ap.exit(2, f"error: {problem}\n")
    label = args.label or args.dataset
    lines: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    torch.set_num_threads(1)
    print(f"load average at start: {os.getloadavg()}")
    if args.dataset.startswith("npz:"):
        emit(recipe_line(args.dataset))
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
            f"\n### {label} forget `{forget}` ({len(p.request.forget)} samples), "
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
            if "noise_floor" not in q:  # nothing to forget: quality was skipped (a warning said so)
                emit(f"| {method} | - | - | - | - | - | - | - | - | {seconds:.0f} |")
                continue
            nf = q["noise_floor"]
            emit(
                f"| {method} | {q['F']:.3f} ± {q['F_stderr']:.3f} | {nf['F']:.3f} ± "
                f"{nf['F_stderr']:.3f} | {q['F_challenge_code']:.3f} "
                f"[{nf['F_challenge_code']:.3f}] | {q['score']:.3f} | {q['mean_epsilon']:.2f} | "
                f"{q['n_separated']}/{len(q['epsilons'])} | {q['retain_acc_unlearned']:.3f} | "
                f"{q['test_acc_unlearned']:.3f} | {seconds:.0f} |"
            )
        if "H_levels" not in q:
            continue
        levels = ", ".join(f"{h:g}" for h in q["H_levels"])
        emit(
            f"\nResolution at N = {args.n_models}: a finite ε is at most "
            f"{q['max_finite_epsilon']:.2f}, so {q['n_reachable_bins']} of the 13 bins are "
            f"reachable and a forget example scores one of H = {levels}; F is their mean over "
            f"{len(q['epsilons'])} examples."
        )
    print(f"\nload average at end: {os.getloadavg()}")
    if args.out:
        write_markdown_section(Path(args.out), lines, args.marker)


if __name__ == "__main__":
    main()
