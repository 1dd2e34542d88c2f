"""Per-sample gradients for the diagonal Fisher: which path is fast on which model.

Times the ways :mod:`obliviate.continual.penalties` can compute the diagonal empirical Fisher on
``--n-rows`` MNIST-shaped rows (random inputs: the cost does not depend on the values):

- ``batched``: one backward vmapped over one-hot cotangents (``autograd.grad(...,
  is_grads_batched=True)``, :func:`~obliviate.continual.penalties.per_sample_grads`);
- ``loop``: one ``autograd.grad`` per sample (:func:`~obliviate.continual.penalties.per_sample_grads_loop`);
- ``vmap``: ``torch.func.vmap(torch.func.grad(...))`` over rows, each a batch of one;
- ``linear``: the closed form for networks whose trainable parameters are all in ``nn.Linear``
  layers (one ordinary backward; exact only there).

on an MLP (784-100-10) and on a small CNN with BatchNorm and Dropout (a user-style model), both
in eval mode as :func:`~obliviate.continual.penalties.diagonal_fisher` runs them, and prints the
seconds and each path's ratio to the fastest, side by side. Every path's Fisher is checked
against the loop's (max relative difference).

Usage: ``python benchmarks/per_sample_fisher.py [--n-rows 256] [--repeats 3] [--threads 1]``
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from obliviate.continual import penalties
from obliviate.data.dataset import Dataset


class SmallCNN(nn.Module):
    """Conv(1->16) BN ReLU MaxPool Conv(16->32) BN ReLU MaxPool, Linear(->64) Dropout Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 64),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))


def fisher_vmap(model: nn.Module, data: Dataset) -> dict[str, torch.Tensor]:
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return -torch.log_softmax(out, dim=1)[0].gather(0, y.reshape(1))[0]

    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    for s in range(0, len(data), 64):
        g = vmap(grad(loss), in_dims=(None, 0, 0))(params, data.x[s : s + 64], data.y[s : s + 64])
        for n in sums:
            sums[n] += g[n].pow(2).sum(dim=0)
    return {n: v / len(data) for n, v in sums.items()}


def time_path(fn, repeats: int) -> tuple[float, dict[str, torch.Tensor]]:  # type: ignore[no-untyped-def]
    out = fn()  # warm-up (and the value)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-rows", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.n_rows, 1, 28, 28)
    y = torch.randint(0, 10, (args.n_rows,))
    data = Dataset(x, y, torch.arange(args.n_rows), 10, name="random-mnist-shaped")
    print(f"{args.n_rows} rows, {args.threads} thread(s), best of {args.repeats} (seconds)")
    print(f"{'model':<10}{'path':<10}{'seconds':>10}{'x fastest':>11}{'max rel diff':>14}")
    for name, model in (("mlp", mlp()), ("cnn+bn", SmallCNN())):
        model.eval()
        paths = {
            "batched": lambda m=model: penalties._fisher_by(m, data, "batched"),
            "loop": lambda m=model: penalties._fisher_by(m, data, "loop"),
            "vmap": lambda m=model: fisher_vmap(m, data),
        }
        if name == "mlp":
            paths["linear"] = lambda m=model: penalties._fisher_by(m, data, "linear")
        results = {k: time_path(fn, args.repeats) for k, fn in paths.items()}
        ref = results["loop"][1]
        fastest = min(t for t, _ in results.values())
        for k, (t, value) in results.items():
            diff = max(
                float((value[n] - ref[n]).abs().max() / ref[n].abs().max().clamp_min(1e-30))
                for n in ref
            )
            print(f"{name:<10}{k:<10}{t:>10.3f}{t / fastest:>10.1f}x{diff:>14.1e}")
        chosen = penalties.fisher_path(model, args.n_rows)
        print(f"{name:<10}diagonal_fisher on {args.n_rows} rows takes: {chosen}")


if __name__ == "__main__":
    main()
