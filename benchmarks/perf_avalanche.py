"""The same stream, model, recipe and strategy under obliviate and under Avalanche, timed.

    python benchmarks/perf_avalanche.py --setup          # once: Avalanche into benchmarks/.avalanche/
    python benchmarks/perf_avalanche.py [--strategy naive|ewc] [--epochs 5] [--repeat 3]

Both frameworks train the same MLP (obliviate's, identical initial weights) with plain SGD on
digits, class-incremental, 5 experiences of 2 classes (obliviate's stream: same rows, same class
order), batch 32, ``--epochs`` epochs per experience, one torch thread, and after every
experience evaluate on every experience's test set (the accuracy matrix). Prints the median wall
time of each over ``--repeat`` runs, the ratio (goal: obliviate >= 2x faster) and the final row
of each accuracy matrix (close, not identical: the two draw minibatches in different orders).

Avalanche (``avalanche-lib==0.6.0``) is optional and never a dependency of obliviate:
``--setup`` pip-installs it with ``--no-deps`` into ``--target`` (default
``benchmarks/.avalanche/``, git-ignored) together with the three pure dependencies its import
needs (dill, psutil, tqdm). Avalanche imports torchvision, tensorboard, wandb, pytorchcv,
torchmetrics and a few more at module level for datasets, models and loggers this benchmark does
not use; torchvision's wheel does not import beside the CPU build of torch here, so this script
(and only this script) puts inert stub modules in their place before importing Avalanche. Any
code path that really needed them would fail loudly (a stub returns nothing useful).
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
AVALANCHE_PINS = ["avalanche-lib==0.6.0", "dill==0.3.9", "psutil==7.2.2", "tqdm==4.70.1"]
STUBBED = (
    "torchvision",
    "pycocotools",
    "GPUtil",
    "gputil",
    "torchmetrics",
    "wandb",
    "tensorboard",
    "pytorchcv",
    "gdown",
    "quadprog",
    "lvis",
    "ctrl",
    "qpsolvers",
    "higher",
    "ffcv",
    "kornia",
)


# ---- stubs for Avalanche's unused optional imports (this script only) --------------------------


class _Inert(type):
    """A class that is also a factory of further inert classes: ``Stub.anything`` is one."""

    def __getattr__(cls, name: str):  # type: ignore[no-untyped-def]
        if name.startswith("__"):
            raise AttributeError(name)
        return _inert(name)

    def __getitem__(cls, item):  # type: ignore[no-untyped-def]
        return cls

    def __or__(cls, other):  # type: ignore[no-untyped-def]
        return cls

    __ror__ = __or__


def _inert(name: str) -> type:
    return _Inert(
        name, (), {"__init__": lambda self, *a, **k: None, "__call__": lambda self, *a, **k: None}
    )


def _module_getattr(name: str):  # type: ignore[no-untyped-def]
    if name.startswith("__"):
        raise AttributeError(name)
    return _inert(name)


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):  # type: ignore[no-untyped-def]
        if fullname.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _module_getattr  # type: ignore[attr-defined]
        return module

    def exec_module(self, module):  # type: ignore[no-untyped-def]
        pass


def import_avalanche(target: Path):  # type: ignore[no-untyped-def]
    if not (target / "avalanche").is_dir():
        sys.exit(
            f"Avalanche is not installed in {target}; run: python {Path(__file__).name} --setup"
        )
    sys.path.insert(0, str(target))
    sys.meta_path.insert(0, _StubFinder())
    tb = types.ModuleType("torch.utils.tensorboard")  # torch's shim checks tensorboard's version
    tb.__getattr__ = _module_getattr  # type: ignore[attr-defined]
    sys.modules["torch.utils.tensorboard"] = tb
    import avalanche
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset,
    )
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import EWC, Naive

    return types.SimpleNamespace(
        version=avalanche.__version__,
        benchmark_from_datasets=benchmark_from_datasets,
        tensor_dataset=_make_taskaware_tensor_classification_dataset,
        accuracy_metrics=accuracy_metrics,
        EvaluationPlugin=EvaluationPlugin,
        Naive=Naive,
        EWC=EWC,
    )


# ---- the two runs ---------------------------------------------------------------------------


def run_obliviate(stream, args):  # type: ignore[no-untyped-def]
    from obliviate.continual import make_strategy
    from obliviate.continual.loop import train_stream
    from obliviate.models import ModelSpec, model_for_stream
    from obliviate.training import TrainConfig

    model = model_for_stream(ModelSpec(hidden=(100,), seed=0), stream)
    params = (
        {"reg_strength": args.reg_strength, "mode": "separate"} if args.strategy == "ewc" else {}
    )
    strategy = make_strategy(args.strategy, **params)
    config = TrainConfig(n_epochs=args.epochs, batch_size=32, lr=args.lr, seed=0)
    t0 = time.perf_counter()
    res = train_stream(model, stream, strategy, config)
    return time.perf_counter() - t0, [float(v) for v in res.accuracy_matrix[-1]]


def run_avalanche(av, stream, args):  # type: ignore[no-untyped-def]
    import torch

    from obliviate.models import ModelSpec, model_for_stream

    def ds(d):  # type: ignore[no-untyped-def]
        return av.tensor_dataset(d.x, d.y, targets=d.y.tolist(), task_labels=0)

    bench = av.benchmark_from_datasets(
        train=[ds(e.train) for e in stream], test=[ds(e.test) for e in stream]
    )
    model = model_for_stream(ModelSpec(hidden=(100,), seed=0), stream)
    evaluator = av.EvaluationPlugin(av.accuracy_metrics(experience=True), loggers=[])
    common = {
        "train_mb_size": 32,
        "train_epochs": args.epochs,
        "eval_mb_size": 4096,
        "device": "cpu",
        "evaluator": evaluator,
    }
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    loss = torch.nn.CrossEntropyLoss()
    if args.strategy == "ewc":
        strat = av.EWC(
            model=model,
            optimizer=opt,
            criterion=loss,
            ewc_lambda=args.reg_strength,
            mode="separate",
            **common,
        )
    else:
        strat = av.Naive(model=model, optimizer=opt, criterion=loss, **common)
    t0 = time.perf_counter()
    last = {}
    for exp in bench.train_stream:
        strat.train(exp, num_workers=0)
        last = strat.eval(bench.test_stream, num_workers=0)
    seconds = time.perf_counter() - t0
    accs = {k: v for k, v in last.items() if k.startswith("Top1_Acc_Exp/eval_phase/test_stream/")}
    row = [float(accs[k]) for k in sorted(accs, key=lambda k: int(k.rsplit("Exp", 1)[1]))]
    return seconds, row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--setup", action="store_true", help="pip-install Avalanche into --target and stop"
    )
    ap.add_argument("--target", type=Path, default=HERE / ".avalanche")
    ap.add_argument("--strategy", choices=("naive", "ewc"), default="naive")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument(
        "--reg-strength", type=float, default=1000.0, help="EWC lambda (both frameworks)"
    )
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.setup:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-deps",
                "--target",
                str(args.target),
                *AVALANCHE_PINS,
            ],
            check=True,
        )
        print(f"Avalanche installed in {args.target}")
        return

    import torch

    torch.set_num_threads(1)
    av = import_avalanche(args.target)
    from obliviate.data import build_scenario, load_dataset

    train, test = load_dataset("digits")
    stream = build_scenario("class-incremental", train, test, n_experiences=5, seed=0)
    import warnings

    warnings.filterwarnings("ignore", module="avalanche")
    warnings.filterwarnings("ignore", message=".*positional arguments.*")
    (
        run_obliviate(stream, args),
        run_avalanche(av, stream, args),
    )  # warm-up: first-call costs of both
    ours, theirs = [], []
    for _ in range(args.repeat):  # interleaved, so a busy machine hurts both alike
        ours.append(run_obliviate(stream, args))
        theirs.append(run_avalanche(av, stream, args))
    t_ours = statistics.median(t for t, _ in ours)
    t_theirs = statistics.median(t for t, _ in theirs)
    print(
        f"digits class-incremental 5x2, MLP(100), SGD lr {args.lr}, batch 32, {args.epochs} epochs/experience, "
        f"strategy {args.strategy}; median of {args.repeat}"
    )
    print(f"obliviate          {t_ours:7.2f} s   final row {[round(v, 3) for v in ours[0][1]]}")
    print(
        f"avalanche {av.version:8s} {t_theirs:7.2f} s   final row {[round(v, 3) for v in theirs[0][1]]}"
    )
    print(f"avalanche / obliviate = {t_theirs / t_ours:.2f}x   (goal >= 2x)")


if __name__ == "__main__":
    main()
