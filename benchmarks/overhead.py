"""Overhead of obliviate's training loop against a hand-written PyTorch loop doing identical work.

Usage::

    python benchmarks/overhead.py [--dataset digits] [--scenario class-incremental]
        [--experiences 5] [--repeats 9] [--methods naive,ewc] [--data-dir DIR]
        [--no-bf16] [--count]

For each method, obliviate (``train_stream`` with the ``naive`` or ``ewc`` strategy) and a
hand-written loop run in the same process, after one untimed warm-up pair, in ``--repeats``
interleaved rounds: the fp32 pair in alternating order (obliviate first, then the hand loop
first, ...), then the bf16 run, so each fp32 side goes first and second equally often and
follows the other side and the bf16 run equally often. Both get the same thing:

- the same model (built once by ``obliviate.models.build_model`` from the run seed, then copied);
- the same data order: per experience ``i`` a ``torch.Generator`` seeded with
  ``derive_seed(seed, "stream", i)``, one ``randperm`` per epoch, batches sliced from it;
- the same recipe (the dataset's default recipe from ``obliviate.experiments``), a fresh
  optimiser per experience, the same evaluation (test accuracy of every experience before
  training and after each experience: one float32 forward pass over each test set, in eval
  mode, as many calls on both sides);
- for EWC (Kirkpatrick et al., 2017, separate penalties, empirical Fisher): after each
  experience the diagonal empirical Fisher over the experience's training rows, computed the
  same way (eval mode, chunks of 256 rows, the closed form for linear layers: one backward pass
  to the layer outputs ``delta``, then ``(delta^2)^T a^2`` for each weight and ``sum delta^2``
  for each bias, summed over chunks, divided by N), and the
  penalty ``reg_strength / 2 * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2`` added to every
  batch's cross-entropy.

obliviate does, on top, what the hand loop does not: a divergence check of the weights after
each experience, its per-experience RNG scope (``global_rng_from``), the mode walks
(``train_mode``, ``eval_mode``) and a CPU copy of the final weights for resuming. Those are the
overhead being measured, not unfairness.

It checks that both produce bitwise-equal weights and accuracy matrices (the proof that the work
is identical) and prints median wall times, the ratio of medians, the median of the per-pair
ratios with its quartiles (the spread), the ratio of the fastest runs and the median of the
per-pair ratios of process CPU times with quartiles (CPU time is the least disturbed by other
processes on a busy machine). Target <= 1.10, goal <= 1.05. One CPU thread.

``--count`` adds load-independent measures: the extra ATen operations and Python function calls
per optimiser step (obliviate minus the hand loop; per-run work spread over the steps).

bf16: the same obliviate run under ``obliviate.training.precision("bf16")`` (bfloat16 autocast of
the forward pass and loss, float32 weights) is timed in the same interleaved repeats (skip it
with ``--no-bf16``); a second table gives its median time against obliviate fp32 and against
the hand loop (fp32), the CPU-time ratio, and the change of the final mean accuracy. On CPUs
without native bf16 matrix units autocast usually costs time rather than saving it (the casts
dominate for small models).
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from obliviate._rng import derive_seed
from obliviate.continual import make_strategy
from obliviate.continual.loop import train_stream
from obliviate.data import build_scenario, load_dataset
from obliviate.experiments import LearnSpec
from obliviate.models import model_for_stream
from obliviate.training import TrainConfig, precision

Exp = tuple[Tensor, Tensor, Tensor, Tensor]  # x_train, y_train, x_test, y_test


# ---- the hand-written loop -------------------------------------------------------------------


def _accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(dim=1) == y).float().mean())
    model.train()
    return acc


def _fisher(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 256) -> list[Tensor]:
    """Diagonal empirical Fisher of an MLP, the same computation as obliviate's (see the module
    doc): for ``z = W a + b`` the per-sample gradient is ``delta a^T``, so the sum over rows of
    its square is ``(delta^2)^T a^2`` (and ``sum delta^2`` for the bias)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    model.eval()
    sums = [[torch.zeros_like(m.weight), torch.zeros_like(m.bias)] for m in linears]
    for start in range(0, x.shape[0], chunk):
        xb, yb = x[start : start + chunk], y[start : start + chunk]
        inputs, outputs = [], []
        h = xb.flatten(1)
        for k, lin in enumerate(linears):
            inputs.append(h.detach())
            z = lin(h)
            outputs.append(z)
            h = torch.relu(z) if k < len(linears) - 1 else z
        nll = -torch.log_softmax(h, dim=1).gather(1, yb.reshape(-1, 1)).sum()
        deltas = torch.autograd.grad(nll, outputs)
        for (sw, sb), d, a in zip(sums, deltas, inputs, strict=True):
            d2 = d.detach().pow(2)
            sw += d2.T @ a.pow(2)
            sb += d2.sum(dim=0)
    model.train()
    return [s / x.shape[0] for pair in sums for s in pair]


def hand_loop(
    model: nn.Module,
    exps: list[Exp],
    *,
    n_epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    seed: int,
    ewc: float | None = None,
) -> list[list[float]]:
    """Plain PyTorch: the accuracy matrix (row 0: before training) of naive or EWC training."""
    rows = [[_accuracy(model, xt, yt) for _, _, xt, yt in exps]]
    penalties: list[tuple[list[Tensor], list[Tensor]]] = []
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    for i, (x, y, _, _) in enumerate(exps):
        gen = torch.Generator().manual_seed(derive_seed(seed, "stream", i))
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
        n = x.shape[0]
        for _ in range(n_epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x[idx]), y[idx])
                for fisher, anchor in penalties:
                    total = None
                    for f, p, a in zip(fisher, params, anchor, strict=True):
                        term = (f * (p - a).pow(2)).sum()
                        total = term if total is None else total + term
                    loss = loss + (ewc / 2) * total  # type: ignore[operator]
                loss.backward()
                opt.step()
        if ewc is not None:
            penalties.append((_fisher(model, x, y), [p.detach().clone() for p in params]))
        rows.append([_accuracy(model, xt, yt) for _, _, xt, yt in exps])
    return rows


# ---- the comparison --------------------------------------------------------------------------


def _bits_equal(a: Tensor, b: Tensor) -> bool:
    """Bitwise equality (NaN == NaN when their bits agree)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        view = {torch.float32: torch.int32, torch.float64: torch.int64}.get(a.dtype)
        if view is not None:
            return torch.equal(a.view(view), b.view(view))
    return torch.equal(a, b)


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def compare(method: str, args: argparse.Namespace) -> dict[str, float]:
    spec = LearnSpec(
        dataset=args.dataset,
        scenario=args.scenario,
        n_experiences=args.experiences,
        strategy=method,
        seed=args.seed,
        data_dir=args.data_dir,
    ).resolved()
    if spec.optimizer != "sgd" or spec.weight_decay:
        sys.exit("the hand loop implements SGD (with momentum) without weight decay only")
    train, test = load_dataset(spec.dataset, data_dir=spec.data_dir)
    stream = build_scenario(
        spec.scenario, train, test, n_experiences=spec.n_experiences, seed=spec.seed
    )
    if stream.task_aware or spec.model != "mlp":
        sys.exit(
            "the hand loop is a single-head MLP: use --model mlp and a scenario without task ids"
        )
    exps = [(e.train.x, e.train.y, e.test.x, e.test.y) for e in stream]
    init = model_for_stream(spec.model_spec(), stream)
    config = spec.train_config()
    ewc = float(spec.params["reg_strength"]) if method == "ewc" else None
    if method == "ewc" and (
        spec.params["mode"],
        spec.params["fisher"],
        spec.params["n_fisher_samples"],
    ) != ("separate", "empirical", None):
        sys.exit(
            "the hand loop implements EWC with separate penalties and the full empirical Fisher"
        )

    def ours() -> tuple[nn.Module, list[list[float]]]:
        model = copy.deepcopy(init)
        res = train_stream(model, stream, make_strategy(method, **spec.params), config)
        return model, [res.initial_accuracy.tolist(), *res.accuracy_matrix.tolist()]

    def ours_bf16() -> tuple[nn.Module, list[list[float]]]:
        with precision("bf16"):  # bfloat16 autocast of the forward pass and loss
            return ours()

    def hand() -> tuple[nn.Module, list[list[float]]]:
        model = copy.deepcopy(init)
        rows = hand_loop(
            model,
            exps,
            n_epochs=config.n_epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            momentum=config.momentum,
            seed=config.seed,
            ewc=ewc,
        )
        return model, rows

    # warm-up pair, and the proof of identical work
    (m1, r1), (m2, r2) = ours(), hand()
    same_w = all(
        _bits_equal(a, b)
        for a, b in zip(m1.state_dict().values(), m2.state_dict().values(), strict=True)
    )
    same_r = [[repr(v) for v in row] for row in r1] == [
        [repr(v) for v in row] for row in r2
    ]  # NaN-safe
    r3 = ours_bf16()[1] if args.bf16 else r1  # warm-up; its accuracy against fp32
    counts = _count(ours, hand, n_steps=_n_steps(exps, config)) if args.count else {}
    wall: dict[str, list[float]] = {"ours": [], "hand": [], "bf16": []}
    cpu: dict[str, list[float]] = {"ours": [], "hand": [], "bf16": []}
    for k in range(args.repeats):
        # the fp32 pair in alternating order (A B, B A, ...), then bf16: each fp32 runner goes
        # first and second equally often, and follows the other fp32 runner and the bf16 run
        # equally often (a run's predecessor can leave the allocator and caches warm or cold)
        order = [("ours", ours), ("hand", hand)] if k % 2 == 0 else [("hand", hand), ("ours", ours)]
        if args.bf16:
            order.append(("bf16", ours_bf16))
        for name, fn in order:
            w, c = _timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
    med = statistics.median
    pairs = [a / b for a, b in zip(wall["ours"], wall["hand"], strict=True)]
    cpu_pairs = [a / b for a, b in zip(cpu["ours"], cpu["hand"], strict=True)]
    out: dict[str, float] = {
        "ours": med(wall["ours"]),
        "hand": med(wall["hand"]),
        "ratio": med(wall["ours"]) / med(wall["hand"]),
        "pair_ratio": med(pairs),
        "pair_q1": _quantile(pairs, 0.25),
        "pair_q3": _quantile(pairs, 0.75),
        "min_ratio": min(wall["ours"]) / min(wall["hand"]),
        "cpu_ratio": med(cpu_pairs),
        "cpu_q1": _quantile(cpu_pairs, 0.25),
        "cpu_q3": _quantile(cpu_pairs, 0.75),
        "bitwise_weights": same_w,
        "same_matrix": same_r,
        "final_acc": sum(r1[-1]) / len(r1[-1]),
        **counts,
    }
    if args.bf16:
        out |= {
            "bf16": med(wall["bf16"]),
            "bf16_vs_fp32": med(wall["bf16"]) / med(wall["ours"]),
            "bf16_vs_hand": med(wall["bf16"]) / med(wall["hand"]),
            "bf16_cpu_vs_fp32": med(cpu["bf16"]) / med(cpu["ours"]),
            "bf16_acc_diff": sum(r3[-1]) / len(r3[-1]) - sum(r1[-1]) / len(r1[-1]),
        }
    return out


def _quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear interpolation between order statistics)."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _n_steps(exps: list[Exp], config: TrainConfig) -> int:
    return config.n_epochs * sum(-(-x.shape[0] // config.batch_size) for x, *_ in exps)


class _OpCount(TorchDispatchMode):
    """Counts the ATen operations dispatched inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.n += 1
        return func(*args, **(kwargs or {}))


def _count(
    ours: Callable[[], object], hand: Callable[[], object], *, n_steps: int
) -> dict[str, float]:
    """Load-independent measures of the extra work, per optimiser step of the run: ATen
    operations dispatched and Python function calls (cProfile), obliviate minus the hand loop.
    Whatever is per experience or per run (evaluation, checks, the final state copy) is spread
    over the steps."""
    out: dict[str, float] = {}
    for name, fn in (("ours", ours), ("hand", hand)):
        with _OpCount() as ops:
            fn()
        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        calls = sum(v[1] for v in pstats.Stats(prof).stats.values())  # type: ignore[attr-defined]
        out[f"ops_{name}"], out[f"calls_{name}"] = ops.n, calls
    out["extra_ops_per_step"] = (out["ops_ours"] - out["ops_hand"]) / n_steps
    out["extra_calls_per_step"] = (out["calls_ours"] - out["calls_hand"]) / n_steps
    out["n_steps"] = n_steps
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--scenario", default="class-incremental")
    p.add_argument("--experiences", type=int, default=5)
    p.add_argument("--methods", default="naive,ewc")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument(
        "--no-bf16", dest="bf16", action="store_false", help="skip the bf16 autocast runs"
    )
    p.add_argument(
        "--count",
        action="store_true",
        help="also count ATen operations and Python calls per step (load-independent)",
    )
    args = p.parse_args(argv)
    if args.repeats < 1:
        sys.exit("--repeats must be at least 1")
    torch.set_num_threads(1)
    print(
        f"{args.dataset} / {args.scenario}, {args.experiences} experiences, default recipe, "
        f"{args.repeats} interleaved repeats, 1 thread, torch {torch.__version__}"
    )
    print(
        f"{'method':8} {'obliviate s':>12} {'hand s':>9} {'ratio':>7} {'pair ratio [q1, q3]':>22} "
        f"{'min ratio':>10} {'CPU ratio [q1, q3]':>21} {'bitwise':>8}"
    )
    ok = True
    rows = []
    for method in args.methods.split(","):
        r = compare(method.strip(), args)
        rows.append((method, r))
        same = r["bitwise_weights"] and r["same_matrix"]
        ok &= bool(same)
        pair = f"{r['pair_ratio']:.3f} [{r['pair_q1']:.3f}, {r['pair_q3']:.3f}]"
        cpu = f"{r['cpu_ratio']:.3f} [{r['cpu_q1']:.3f}, {r['cpu_q3']:.3f}]"
        print(
            f"{method:8} {r['ours']:12.3f} {r['hand']:9.3f} {r['ratio']:7.3f} {pair:>22} "
            f"{r['min_ratio']:10.3f} {cpu:>21} {'yes' if same else 'NO':>8}",
            flush=True,
        )
    if args.bf16:
        print(
            "bf16 autocast on the CPU (obliviate.training.precision('bf16')), same runs "
            "interleaved:"
        )
        print(
            f"{'method':8} {'bf16 s':>9} {'bf16/fp32':>10} {'bf16/hand':>10} "
            f"{'CPU bf16/fp32':>14} {'ACC bf16-fp32':>14}"
        )
        for method, r in rows:
            print(
                f"{method:8} {r['bf16']:9.3f} {r['bf16_vs_fp32']:10.3f} {r['bf16_vs_hand']:10.3f} "
                f"{r['bf16_cpu_vs_fp32']:14.3f} {r['bf16_acc_diff']:+14.4f}"
            )
    if args.count:
        print("extra work per optimiser step (obliviate - hand; per-run work spread over steps):")
        print(f"{'method':8} {'steps':>6} {'ATen ops':>9} {'Python calls':>13}")
        for method, r in rows:
            print(
                f"{method:8} {int(r['n_steps']):6d} {r['extra_ops_per_step']:9.3f} "
                f"{r['extra_calls_per_step']:13.2f}"
            )
    print(
        "ratio = median(obliviate) / median(hand) of wall times; pair ratio = median over "
        "repeats of the per-pair ratio, [first, third quartile]; min ratio = fastest obliviate "
        "run / fastest hand run; CPU ratio = median of the per-pair ratios of process CPU "
        "times, [quartiles] (least disturbed by other load on the machine). "
        "Target <= 1.10, goal <= 1.05."
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
