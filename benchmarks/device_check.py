"""Every strategy, every unlearner and the sharded engine on a chosen device and precision,
compared with CPU fp32.

Usage::

    python benchmarks/device_check.py --device cpu|cuda|cuda:N|mps [--precision fp32|bf16|fp16]
        [--methods ewc,ssd,...] [--tolerance 0.05] [--quick]

For each method, the same seeded run (digits, class-incremental — task-incremental for the
strategies that need task ids — 5 experiences, the digits learn recipe; unlearners: forget ``class:3`` of digits from the original trained by the digits
forget recipe) runs twice: on CPU in fp32 (the reference) and on ``--device`` at
``--precision``. It prints both accuracies (strategies: ACC, the mean final accuracy over
experiences; unlearners: test accuracy of the unlearned model; sharded: test accuracy of a
2-shard x 2-slice store after deleting 20 ids) and the wall seconds of each, and fails (exit 1)
when an accuracy differs from the CPU fp32 reference by more than ``--tolerance`` (absolute;
default 0.05). On CPU fp32 the two runs must agree exactly (same bits). ``--quick``: 1 epoch,
2 experiences and a 300-row training set (the CI setting: ``tests/test_device_check.py``).

Everything runs on one CPU thread on the CPU side. No GPU figures are in the README until this
has run on one (the command above with ``--device cuda``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace

import numpy as np
import torch

from obliviate.continual import STRATEGIES, make_strategy, strategy_class
from obliviate.continual.loop import train_stream
from obliviate.data import build_scenario, load_dataset
from obliviate.experiments import LearnSpec
from obliviate.experiments.forget import ForgetSpec
from obliviate.models import model_for_stream
from obliviate.training import accuracy, check_device, check_precision, precision
from obliviate.unlearning import UNLEARNERS, make_unlearner
from obliviate.unlearning.base import build_request


def _data(quick: bool):  # type: ignore[no-untyped-def]
    return load_dataset("digits", limit=300 if quick else None)


def run_strategy(name: str, device: str, prec: str, quick: bool) -> tuple[float, float]:
    """(ACC, seconds) of ``name`` on digits class-incremental (task-incremental for a strategy
    that needs task ids)."""
    scenario = "task-incremental" if strategy_class(name).needs_task_ids else "class-incremental"
    spec = LearnSpec(
        dataset="digits", scenario=scenario, strategy=name, n_experiences=2 if quick else 5
    ).resolved()
    train, test = _data(quick)
    stream = build_scenario(spec.scenario, train, test, n_experiences=spec.n_experiences)
    config = spec.train_config()
    if quick:
        config = replace(config, n_epochs=1)
    model = model_for_stream(spec.model_spec(), stream).to(device)
    t0 = time.perf_counter()
    with precision(prec):
        res = train_stream(model, stream, make_strategy(name), config)
    return float(np.nanmean(res.accuracy_matrix[-1])), time.perf_counter() - t0


_ORIGINALS: dict[tuple[str, str, bool], torch.nn.Module] = {}


def run_unlearner(name: str, device: str, prec: str, quick: bool) -> tuple[float, float]:
    """(test accuracy, seconds) of ``name`` forgetting class 3 of digits."""
    spec = ForgetSpec(dataset="digits", forget="class:3", method=name)
    recipe = spec.resolved_recipe()
    if quick:
        recipe = replace(recipe, train=replace(recipe.train, n_epochs=2))
    train, test = _data(quick)
    key = (device, prec, quick)  # the original is trained on that device at that precision
    if key not in _ORIGINALS:
        with precision(prec):
            _ORIGINALS[key] = recipe.fit(train, device=device)
    request = build_request(train, "class:3", recipe=recipe)
    t0 = time.perf_counter()
    with precision(prec):
        out = make_unlearner(name).unlearn(_ORIGINALS[key], request)
    return accuracy(out, test), time.perf_counter() - t0


def run_sharded(device: str, prec: str, quick: bool) -> tuple[float, float]:
    """(test accuracy after deleting 20 ids, seconds) of a 2 x 2 SISA store on digits."""
    from obliviate.sharded import DataSpec, ShardConfig, ShardedStore
    from obliviate.training import Recipe, TrainConfig

    recipe = Recipe(train=TrainConfig(n_epochs=1 if quick else 5, lr=0.05, seed=0))
    config = ShardConfig(n_shards=2, n_slices=2, recipe=recipe, seed=0)
    data = DataSpec(dataset="digits", limit=300 if quick else None)
    _, test = _data(quick)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        store = ShardedStore.train(
            f"{tmp}/store",
            data=data,
            config=config,
            backend="inline",
            device=device,
            precision=prec,
        )
        ids = store.ledger.samples(("active",))[:20, 0]
        store.forget([int(i) for i in ids])
        acc = float((store.predict(test.x) == test.y).float().mean())
        store.close()
    return acc, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--methods", default=None, help="comma-separated; default: all + sharded")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    device = str(check_device(args.device, name="--device"))
    prec = check_precision(args.precision, name="--precision")
    torch.set_num_threads(1)
    names = (
        args.methods.split(",")
        if args.methods
        else [*sorted(STRATEGIES), *sorted(UNLEARNERS), "sharded"]
    )
    exact = torch.device(device).type == "cpu" and prec == "fp32"
    bad = []
    print(
        f"{'method':22} {'cpu fp32':>9} {device + ' ' + prec:>14} {'diff':>7} {'s cpu':>7} {'s dev':>7}"
    )
    for name in names:
        if name == "sharded":
            fn = run_sharded
            args_ = ()
        elif name in STRATEGIES:
            fn, args_ = run_strategy, (name,)
        elif name in UNLEARNERS:
            fn, args_ = run_unlearner, (name,)
        else:
            print(f"error: unknown method {name!r}", file=sys.stderr)
            return 2
        ref, s_ref = fn(*args_, "cpu", "fp32", args.quick)
        got, s_got = fn(*args_, device, prec, args.quick)
        diff = got - ref
        ok = (
            (diff == 0 or (np.isnan(ref) and np.isnan(got)))
            if exact
            else abs(diff) <= args.tolerance
        )
        if not ok:
            bad.append(name)
        print(
            f"{name:22} {ref:9.4f} {got:14.4f} {diff:+7.4f} {s_ref:7.2f} {s_got:7.2f}"
            + ("" if ok else "  FAIL")
        )
    rule = "bitwise equal" if exact else f"within {args.tolerance} absolute"
    print(
        f"{len(names) - len(bad)}/{len(names)} {rule} of CPU fp32"
        + (f"; failed: {', '.join(bad)}" if bad else "")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
