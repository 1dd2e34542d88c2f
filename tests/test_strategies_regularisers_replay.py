"""SI, MAS, L2, DER, DER++, iCaRL, GDumb: effects, differential checks and bad input."""

import copy

import pytest
import torch

from obliviate._rng import generator
from obliviate.continual import make_strategy
from obliviate.continual.gdumb import greedy_balanced_update
from obliviate.continual.icarl import herding
from obliviate.continual.loop import train_stream
from obliviate.continual.mas import output_norm_importance
from obliviate.data import build_scenario, synthetic_dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, logits, model_for_stream
from obliviate.training import TrainConfig, batches

CONFIG = TrainConfig(n_epochs=2, batch_size=16, lr=0.1, seed=0)


def _stream(scenario="class-incremental", n_classes=4, n_experiences=2, n_per_class=40):
    tr, te = synthetic_dataset(n_classes=n_classes, n_per_class=n_per_class, n_features=8, seed=0)
    return build_scenario(scenario, tr, te, n_experiences=n_experiences, seed=0)


def _train(name, stream, **params):
    model = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
    strategy = make_strategy(name, **params)
    result = train_stream(model, stream, strategy, CONFIG)
    return model, strategy, result


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# ---- regularisers ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["si", "mas", "l2"])
def test_regulariser_holds_weights_near_the_anchor(name):
    """Strength > 0 changes the trajectory, and in the expected direction: after the second
    experience the weights stay closer to the first experience's weights than naive's do, and
    more so with a larger strength."""
    stream = _stream()
    # weights after experience 0 are the same for every strategy (no penalty yet)
    model0 = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
    train_stream(model0, stream, make_strategy("naive"), CONFIG, stop_after=1)
    first = _flat(model0)
    drift = {}
    for strength in (0.0, 0.05, 0.5):
        model, _, _ = _train(name, stream, reg_strength=strength)
        drift[strength] = float((_flat(model) - first).norm())
    naive, _, _ = _train("naive", stream)
    assert drift[0.0] == float((_flat(naive) - first).norm())
    assert drift[0.5] < drift[0.05] < drift[0.0], drift


def test_si_path_integral_matches_a_hand_written_sgd_loop():
    """With plain SGD the step is -lr * g, so omega = sum_t lr * g_t^2: SI must record the actual
    (non-zero) step, not an alias of the live weights."""
    tr, te = synthetic_dataset(n_classes=3, n_per_class=20, n_features=5, seed=1)
    stream = build_scenario("joint", tr, te, n_experiences=1)
    spec = ModelSpec(hidden=(6,), seed=0)
    model = model_for_stream(spec, stream)
    reference = copy.deepcopy(model)
    si = make_strategy("si", damping=0.5)
    train_stream(model, stream, si, CONFIG)

    omega = {n: torch.zeros_like(p) for n, p in reference.named_parameters()}
    start = {n: p.detach().clone() for n, p in reference.named_parameters()}
    gen = generator(CONFIG.seed, "stream", 0)
    for _ in range(CONFIG.n_epochs):
        for batch in batches(stream[0].train, CONFIG.batch_size, gen, experience=0):
            reference.zero_grad()
            torch.nn.functional.cross_entropy(logits(reference, batch.x), batch.y).backward()
            with torch.no_grad():
                for n, p in reference.named_parameters():
                    omega[n] += CONFIG.lr * p.grad.pow(2)
                    p -= CONFIG.lr * p.grad
    for n, p in reference.named_parameters():
        expected = omega[n] / ((p.detach() - start[n]).pow(2) + 0.5)
        assert torch.allclose(si.importance_[n], expected, rtol=1e-3, atol=1e-7), n
    assert sum(float(v.sum()) for v in si.importance_.values()) > 0


def test_mas_importance_equals_a_per_sample_loop():
    tr, _ = synthetic_dataset(n_classes=3, n_per_class=5, n_features=4, seed=2)
    stream = build_scenario("joint", tr, tr, n_experiences=1)
    model = model_for_stream(ModelSpec(hidden=(5,), seed=1), stream)
    fast = output_norm_importance(model, tr, chunk_size=4)
    slow = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(tr)):
        model.zero_grad()
        logits(model, tr.x[i : i + 1]).pow(2).sum().backward()
        for n, p in model.named_parameters():
            slow[n] += p.grad.abs() / len(tr)
    for n in slow:
        assert torch.allclose(fast[n], slow[n], atol=1e-6), n


# ---- DER / DER++ -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["der", "derpp"])
def test_der_stores_logits_and_respects_memory_size(name):
    stream = _stream()
    model = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
    strategy = make_strategy(name, memory_size=8)
    data = stream[0].train
    batch = next(batches(data, 5, generator(0, "b"), experience=0))
    strategy.loss(model, batch)
    stored = strategy.buffer_.filled()
    assert strategy.memory_used() == 5
    # the logits stored are the model's logits for those samples at insertion time
    assert torch.equal(stored["ids"], batch.ids)
    assert torch.allclose(stored["extra"], logits(model, batch.x).detach())
    for batch in batches(data, 10, generator(0, "c"), experience=0):
        strategy.loss(model, batch)
        assert strategy.memory_used() <= 8
    assert strategy.memory_used() == 8


def test_derpp_beta_adds_label_replay():
    stream = _stream()
    a, _, _ = _train("derpp", stream, beta=0.0, alpha=0.3)
    b, _, _ = _train("der", stream, alpha=0.3)
    c, _, _ = _train("derpp", stream, beta=1.0, alpha=0.3)
    assert not torch.equal(_flat(a), _flat(c))
    # DER++ with beta = 0 differs from DER only through its separate replay draws; both replay
    assert not torch.equal(_flat(b), _flat(_train("naive", stream)[0]))


# ---- iCaRL -------------------------------------------------------------------------------------


def test_herding_picks_the_expected_exemplars():
    # unit vectors p0 = (1, 0) (given scaled by 3: herding normalises), p1 = (0, 1), p2 = (.6, .8).
    # mu = (.533, .6): p2 is nearest; then (p2 + p0)/2 = (.8, .4) beats (p2 + p1)/2 = (.3, .9).
    feats = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    assert herding(feats, 3).tolist() == [2, 0, 1]
    # nearest-to-the-mean order would be [2, 1, 0]: herding is not that
    assert herding(feats, 1).tolist() == [2]
    assert herding(feats, 10).tolist() == [2, 0, 1]


def test_icarl_predicts_by_nearest_mean_of_exemplars():
    stream = _stream()
    model, icarl, result = _train("icarl", stream, memory_size=20)
    assert icarl.memory_used() == 20
    assert all(len(ex) == 5 for ex in icarl.exemplars_.values())
    test = torch.cat([e.test.x for e in stream])
    with torch.no_grad():
        phi = torch.nn.functional.normalize(model.features(test), dim=1)
        means = {}
        for c, ex in icarl.exemplars_.items():
            m = torch.nn.functional.normalize(model.features(ex.x), dim=1).mean(dim=0)
            means[c] = m / m.norm()
        classes = sorted(means)
        dist = torch.stack([(phi - means[c]).norm(dim=1) for c in classes], dim=1)
        nme = torch.tensor(classes)[dist.argmin(dim=1)]
        assert torch.equal(logits(model, test).argmax(dim=1), nme)
    assert result.accuracy_matrix[-1].mean() > 0.5


def test_icarl_restores_the_trained_head_before_training_again():
    stream = _stream()
    model, icarl, _ = _train("icarl", stream, memory_size=20)
    nme_head = [p.detach().clone() for p in model.head_parameters()]
    icarl.begin(model, stream[0])
    restored = [p.detach() for p in model.head_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(restored, icarl.trained_head_, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(restored, nme_head, strict=True))


# ---- GDumb -------------------------------------------------------------------------------------


def test_greedy_sampler_is_class_balanced():
    # 50 samples of class 0 arrive first, then 10 of class 1 and 10 of class 2; memory 12.
    y = torch.tensor([0] * 50 + [1] * 10 + [2] * 10)
    moves = greedy_balanced_update(torch.empty(0, dtype=torch.int64), y, 12, generator(0, "t"))
    slots = {}
    for slot, j in moves:
        slots[slot] = int(y[j])
    counts = torch.bincount(torch.tensor(list(slots.values())), minlength=3)
    assert counts.tolist() == [4, 4, 4]


def test_gdumb_memory_balanced_and_training_restarts_from_init():
    tr, te = synthetic_dataset(n_classes=6, n_per_class=30, n_features=8, seed=0)
    stream = build_scenario("class-incremental", tr, te, n_experiences=3, seed=0)
    model = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
    init = copy.deepcopy(model.state_dict())
    gdumb = make_strategy("gdumb", memory_size=25)
    train_stream(model, stream, gdumb, CONFIG)
    counts = torch.bincount(gdumb.memory_.y, minlength=6)
    assert int(counts.sum()) == 25 and int(counts.max() - counts.min()) <= 1, counts
    assert torch.unique(gdumb.memory_.ids).numel() == 25
    gdumb.begin(model, stream[2])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in init.items())


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["der", "derpp", "icarl", "gdumb"])
def test_zero_memory_rejected(name):
    with pytest.raises(ObliviateError, match="memory_size.*0"):
        make_strategy(name, memory_size=0)


@pytest.mark.parametrize(
    "name, params, word",
    [
        ("si", {"reg_strength": -1.0}, "reg_strength"),
        ("si", {"damping": 0.0}, "damping"),
        ("mas", {"reg_strength": -0.5}, "reg_strength"),
        ("l2", {"reg_strength": -2.0}, "reg_strength"),
        ("der", {"alpha": -1.0}, "alpha"),
        ("derpp", {"beta": -1.0}, "beta"),
    ],
)
def test_negative_strength_rejected(name, params, word):
    with pytest.raises(ObliviateError, match=word):
        make_strategy(name, **params)


# ---- the acceptance figure (slow: about a minute) -----------------------------------------------


@pytest.mark.slow
def test_each_regulariser_beats_naive_on_permuted_digits():
    """5-permutation domain-incremental digits, default recipe and hyperparameters, 3 seeds."""
    from obliviate.experiments import LearnSpec, run_learn

    def acc(name):
        runs = [
            run_learn(LearnSpec(scenario="domain-permutation", strategy=name, seed=s))
            for s in range(3)
        ]
        return sum(r["acc"] for r in runs) / 3

    naive = acc("naive")
    for name in ("si", "mas", "l2"):
        assert acc(name) > naive + 0.05, name
