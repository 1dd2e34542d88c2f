"""The training loop does per step exactly the tensor work of a hand-written loop
(benchmarks/overhead.py), and the benchmark itself runs and proves identical work."""

import copy
import dataclasses
import pickle

import pytest
import torch
from _benchmarks import load

from obliviate.continual import make_strategy
from obliviate.continual.loop import train_stream
from obliviate.data import build_scenario, load_dataset
from obliviate.data.dataset import Dataset
from obliviate.experiments import LearnSpec
from obliviate.models import model_for_stream
from obliviate.training import Batch, batches


def _bench():
    return load("overhead")


def _setup():
    spec = LearnSpec(dataset="digits", scenario="class-incremental", n_experiences=2).resolved()
    train, test = load_dataset("digits")
    stream = build_scenario(spec.scenario, train, test, n_experiences=2, seed=0)
    return stream, model_for_stream(spec.model_spec(), stream), spec.train_config()


def test_loop_step_dispatches_the_hand_loops_aten_ops_and_no_more():
    """Ops per extra epoch, obliviate minus the hand loop, is zero: nothing per step (no id
    gather for a loss that never reads ids, no autocast or scaler work at fp32)."""
    bench = _bench()
    stream, init, config = _setup()
    exps = [(e.train.x, e.train.y, e.test.x, e.test.y) for e in stream]

    def ops(fn, n_epochs: int) -> int:
        cfg = dataclasses.replace(config, n_epochs=n_epochs)
        with bench._OpCount() as count:
            fn(copy.deepcopy(init), cfg)
        return count.n

    def ours(model, cfg):
        train_stream(model, stream, make_strategy("naive"), cfg)

    def hand(model, cfg):
        bench.hand_loop(
            model, exps, n_epochs=cfg.n_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            momentum=cfg.momentum, seed=cfg.seed,
        )  # fmt: skip

    per_epoch_ours = ops(ours, 2) - ops(ours, 1)
    per_epoch_hand = ops(hand, 2) - ops(hand, 1)
    assert per_epoch_hand > 0
    assert per_epoch_ours == per_epoch_hand


def test_batch_ids_are_gathered_on_first_read_with_the_same_values():
    data = Dataset.from_arrays(
        torch.randn(50, 3).numpy(), (torch.arange(50) % 3).numpy(), ids=range(1000, 1050)
    )
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    got = list(batches(data, 16, gen, experience=4))
    assert [len(b.y) for b in got] == [16, 16, 16, 2]
    assert torch.equal(torch.cat([b.ids for b in got]), data.ids[order])
    assert torch.equal(torch.cat([b.x for b in got]), data.x[order])
    b = got[0]
    assert b.ids is b.ids and b.experience == 4 and b.task is None
    with pytest.raises(AttributeError, match="read-only"):
        b.x = b.x
    for k, c in ((1, copy.deepcopy(got[1])), (2, pickle.loads(pickle.dumps(got[2])))):
        assert isinstance(c, Batch) and c.experience == 4
        assert torch.equal(c.ids, data.ids[order][16 * k : 16 * (k + 1)])
        assert torch.equal(c.x, got[k].x)
    explicit = Batch(x=b.x, y=b.y, ids=b.ids, task=None, experience=0)
    assert explicit.ids is b.ids
    assert "n_rows=16" in repr(b)


def test_overhead_benchmark_runs_and_proves_identical_work(capsys):
    rc = _bench().main(
        [
            "--dataset",
            "digits",
            "--methods",
            "naive",
            "--repeats",
            "1",
            "--experiences",
            "2",
            "--count",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out  # bitwise-equal weights and accuracy matrices
    assert "bf16 autocast on the CPU" in out
    assert "ATen ops" in out
