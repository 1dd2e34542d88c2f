"""LUCIR, CoPE, SLDA, PNN, L2P and REMIND: each method's defining computation on hand-computed
tensors, the frozen-encoder recipe, and clear errors on a user model that lacks what they need."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from obliviate.continual import make_strategy
from obliviate.continual._encoder import (
    EncoderRecipe,
    cache_dir,
    pretrained_encoder,
    pretraining_data,
)
from obliviate.continual.cope import ppp_loss, update_prototypes
from obliviate.continual.l2p import select_prompts
from obliviate.continual.loop import train_stream
from obliviate.continual.lucir import cosine_logits, less_forget_loss, margin_ranking_loss
from obliviate.continual.pnn import Column, progressive_forward
from obliviate.continual.remind import pq_decode, pq_encode, pq_fit
from obliviate.continual.slda import lda_classifier, streaming_update
from obliviate.data import build_scenario, synthetic_dataset
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, model_for_stream
from obliviate.training import TrainConfig

NEW = ("lucir", "cope", "slda", "pnn", "l2p", "remind")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))


def _stream(scenario="class-incremental", n_experiences=2, n_classes=4):
    train, test = synthetic_dataset(n_classes=n_classes, n_per_class=40, n_features=8, seed=0)
    return build_scenario(scenario, train, test, n_experiences=n_experiences, seed=0)


CONFIG = TrainConfig(n_epochs=2, batch_size=16, lr=0.1, seed=0)


class UserNet(nn.Module):
    """A user's model: batch norm, dropout, and forward(x) only."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 4)
        )

    def forward(self, x):
        return self.net(x)


class TaskUserNet(UserNet):
    """The same user model, taking task ids (task-incremental streams require the argument)."""

    def forward(self, x, task=None):
        return self.net(x)


# ---- user-style models: they run (features traced at the output layer), or PNN refuses ----------


@pytest.mark.parametrize("name", NEW)
def test_user_model_runs_or_gets_a_clear_error(name):
    scenario = "task-incremental" if name == "pnn" else "class-incremental"
    model = TaskUserNet() if name == "pnn" else UserNet()
    if name != "pnn":  # features = the input of the user's last nn.Linear (models.output_layer)
        result = train_stream(model, _stream(scenario), make_strategy(name), CONFIG)
        assert np.isfinite(result.accuracy_matrix[-1]).all()
        return
    with pytest.raises(ObliviateError) as err:
        train_stream(model, _stream(scenario), make_strategy(name), CONFIG)
    message = str(err.value)
    assert "\n" not in message and "multi-head obliviate MLP" in message


def test_lucir_refuses_multi_head_models():
    stream = _stream("task-incremental")
    model = model_for_stream(ModelSpec(hidden=(16,)), stream)
    with pytest.raises(ObliviateError, match="single-head"):
        train_stream(model, stream, make_strategy("lucir"), CONFIG)


def test_pnn_needs_task_ids():
    stream = _stream()
    with pytest.raises(ObliviateError, match="task ids"):
        train_stream(model_for_stream(ModelSpec(), stream), stream, make_strategy("pnn"), CONFIG)


# ---- LUCIR ------------------------------------------------------------------------------------


def test_lucir_less_forget_loss_by_hand():
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    f_old = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # cosines 1/sqrt(2) and 1
    expected = ((1 - 1 / math.sqrt(2)) + 0.0) / 2
    assert less_forget_loss(f, f_old).item() == pytest.approx(expected, abs=1e-7)


def test_lucir_cosine_logits_and_margin_ranking_by_hand():
    f = torch.tensor([[3.0, 4.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    logits = cosine_logits(f, w, 2.0)
    assert torch.allclose(logits, torch.tensor([[1.2, 1.6, -1.2]]))
    cos = torch.tensor([[0.9, 0.7, 0.2], [0.1, 0.8, 0.6]])
    y = torch.tensor([0, 1])
    new = torch.tensor([1, 2])
    # only row 0 is old; K=2 hardest new: 0.7, 0.2 -> max(0.5-0.9+0.7,0)=0.3, max(0.5-0.9+0.2,0)=0
    assert margin_ranking_loss(cos, y, new, 0.5, 2).item() == pytest.approx(0.15)
    assert margin_ranking_loss(cos, y, new, 0.5, 1).item() == pytest.approx(0.3)
    assert margin_ranking_loss(cos, torch.tensor([1, 2]), new, 0.5, 2).item() == 0.0


def test_lucir_head_is_a_cosine_classifier():
    stream = _stream()
    model = model_for_stream(ModelSpec(hidden=(16,)), stream)
    strategy = make_strategy("lucir", memory_size=20)
    train_stream(model, stream, strategy, CONFIG)
    w, b = model.head.weight.detach(), model.head.bias.detach()
    norms = w.norm(dim=1)
    assert torch.allclose(norms, norms[0].expand_as(norms), atol=1e-5)
    assert float(norms[0]) == pytest.approx(float(strategy.scale_.detach()), rel=1e-5)
    assert torch.equal(b, torch.zeros_like(b))
    x = stream[0].test.x
    assert torch.equal(
        model(x).argmax(1), cosine_logits(model.features(x), w, strategy.scale_).argmax(1)
    )


# ---- CoPE -------------------------------------------------------------------------------------


def test_cope_prototype_update_by_hand():
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    update_prototypes(protos, z, torch.tensor([0, 0, 1]), momentum=0.5)
    h = 1 / math.sqrt(2)
    assert torch.allclose(protos, torch.tensor([[h, h], [h, h]]))


def test_cope_ppp_loss_by_hand():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = ppp_loss(z, torch.tensor([0, 1]), protos, torch.tensor([True, True]), 1.0)
    e = math.e
    # per class: attractor -log(e/(e+1)), repellor -log(1 - 1/(1+e)) = -log(e/(e+1))
    assert loss.item() == pytest.approx(-4 * math.log(e / (e + 1)) / 2, rel=1e-6)
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_cope_predicts_the_nearest_prototype():
    stream = _stream()
    model = model_for_stream(ModelSpec(hidden=(16,)), stream)
    strategy = make_strategy("cope", memory_size=20)
    train_stream(model, stream, strategy, CONFIG)
    x = stream[1].test.x
    z = nn.functional.normalize(model.features(x), dim=1)
    sims = z @ strategy.prototypes_.T
    sims[:, ~strategy.seen_] = -math.inf
    assert torch.equal(model(x).argmax(1), sims.argmax(1))


# ---- SLDA -------------------------------------------------------------------------------------


def test_slda_covariance_update_by_hand_and_against_a_batch_computation():
    mean, count = torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    sigma = torch.zeros(2, 2, dtype=torch.float64)
    z = torch.tensor([[1.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    t = streaming_update(mean, count, sigma, 0, z, torch.tensor([0, 0]))
    assert t == 2
    assert torch.equal(sigma, torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(mean[0], torch.tensor([2.0, 0.0], dtype=torch.float64))
    # one class: the streaming covariance is the batch covariance (divided by N)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 3, generator=g, dtype=torch.float64)
    mean, count = torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    sigma = torch.zeros(3, 3, dtype=torch.float64)
    streaming_update(mean, count, sigma, 0, z, torch.zeros(50, dtype=torch.int64))
    centred = z - z.mean(dim=0)
    assert torch.allclose(sigma, centred.T @ centred / 50, atol=1e-12)
    assert torch.allclose(mean[0], z.mean(dim=0), atol=1e-12)


def test_slda_update_equals_the_per_sample_recursion():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)
    ref_mean, ref_count = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3)
    ref_sigma, t = torch.zeros(3, 3, dtype=torch.float64), 0
    for zi, yi in zip(z, y.tolist(), strict=True):  # the paper's recursion, one sample at a time
        d = (zi - ref_mean[yi]).reshape(-1, 1)
        ref_sigma = (t * ref_sigma + t / (t + 1) * (d @ d.T)) / (t + 1)
        ref_mean[yi] = (ref_count[yi] * ref_mean[yi] + zi) / (ref_count[yi] + 1)
        ref_count[yi] += 1
        t += 1
    mean, count = torch.zeros(3, 3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    sigma, n = torch.zeros(3, 3, dtype=torch.float64), 0
    for start in (0, 7, 25):  # batches of 7, 18 and 15 samples
        stop = {0: 7, 7: 25, 25: 40}[start]
        n = streaming_update(mean, count, sigma, n, z[start:stop], y[start:stop])
    assert n == 40
    assert torch.allclose(sigma, ref_sigma, atol=1e-12)
    assert torch.allclose(mean, ref_mean, atol=1e-12)


def test_slda_classifier_by_hand():
    mean = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], dtype=torch.float64)
    count = torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64)
    w, b = lda_classifier(mean, count, torch.eye(2, dtype=torch.float64), shrinkage=0.0)
    assert torch.equal(w, mean)
    assert torch.equal(b[:2], torch.tensor([-0.5, -2.0], dtype=torch.float64))
    assert b[2] < -1e8  # unseen class never predicted


def test_slda_keeps_the_encoder_frozen_and_writes_the_lda_rule():
    stream = _stream()
    model = model_for_stream(ModelSpec(hidden=(16,)), stream)
    strategy = make_strategy("slda", encoder_epochs=1)
    train_stream(model, stream, strategy, CONFIG)
    recipe = EncoderRecipe(source="blobs", n_epochs=1, seed=0)
    encoder = pretrained_encoder(model, recipe, stream.sample_shape)
    for k, v in encoder.items():
        assert torch.equal(model.state_dict()[k], v), k
    w, b = lda_classifier(strategy.mean_, strategy.count_, strategy.sigma_, strategy.shrinkage)
    assert torch.equal(model.head.weight.detach(), w.float())
    n_train = sum(len(e.train) for e in stream)
    assert strategy.n_updates_ == n_train  # one pass although the loop ran 2 epochs


# ---- REMIND -----------------------------------------------------------------------------------


def test_pq_encode_decode_by_hand():
    books = [torch.tensor([[0.0], [10.0]]), torch.tensor([[-1.0], [1.0]])]
    z = torch.tensor([[1.0, 0.5], [9.0, -2.0]])
    codes = pq_encode(z, books)
    assert torch.equal(codes, torch.tensor([[0, 1], [1, 0]]))
    assert torch.equal(pq_decode(codes, books), torch.tensor([[0.0, 1.0], [10.0, -1.0]]))


def test_pq_fit_reconstructs_points_it_has_enough_codewords_for():
    z = torch.tensor([[0.0, 1.0, 2.0], [5.0, 6.0, 7.0], [0.0, 1.0, 2.0], [5.0, 6.0, 7.0]])
    books = pq_fit(z, n_subvectors=2, n_codewords=2, seed=0)
    assert [tuple(b.shape) for b in books] == [(2, 2), (2, 1)]  # 3 dims cut as 2 + 1
    assert torch.allclose(pq_decode(pq_encode(z, books), books), z)


def test_remind_memory_is_class_balanced_when_full():
    stream = _stream(n_experiences=2)
    model = model_for_stream(ModelSpec(hidden=(16,)), stream)
    strategy = make_strategy("remind", memory_size=40, encoder_epochs=1)
    train_stream(model, stream, strategy, CONFIG)
    counts = torch.bincount(strategy.memory_y_, minlength=4)
    assert int(counts.sum()) == 40
    assert int(counts.max() - counts.min()) <= 1
    assert strategy.memory_codes_.dtype == torch.uint8


# ---- L2P --------------------------------------------------------------------------------------


def test_l2p_key_matching_by_hand():
    query = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    keys = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    idx, sim = select_prompts(query, keys, 2)
    assert torch.equal(idx, torch.tensor([[1, 2], [0, 2]]))
    h = 1 / math.sqrt(2)
    assert torch.allclose(sim, torch.tensor([[1.0, h], [1.0, h]]))
    sim[0, 1].backward()  # the off-diagonal key [1, 1] is pulled toward the query [1, 0]
    assert keys.grad is not None and keys.grad[2].abs().sum() > 0  # pulled toward the queries


def test_l2p_prompts_change_predictions_and_encoder_stays_frozen():
    stream = _stream()
    model = model_for_stream(ModelSpec(hidden=(16,)), stream)
    strategy = make_strategy("l2p", prompt_lr=0.5, encoder_epochs=1)
    train_stream(model, stream, strategy, CONFIG)
    assert strategy.pool_.prompts.abs().sum() > 0  # the prompts learned
    encoder = pretrained_encoder(
        model, EncoderRecipe(source="blobs", n_epochs=1, seed=0), stream.sample_shape
    )
    for k, v in encoder.items():
        assert torch.equal(model.state_dict()[k], v), k
    x = stream[0].test.x
    plain = model.classify(model.features(x))
    assert not torch.equal(model(x), plain)  # the forward pass is prompted


# ---- PNN --------------------------------------------------------------------------------------


def test_progressive_forward_by_hand():
    eye = torch.eye(2)
    col0 = Column([(eye, torch.zeros(2)), (eye, torch.zeros(2))], (eye, torch.zeros(2)))
    col1 = Column(
        [(eye, torch.zeros(2)), (torch.zeros(2, 2), torch.zeros(2))],
        (torch.zeros(2, 2), torch.ones(2)),
        laterals=[[2 * eye], [3 * eye]],
    )
    x = torch.tensor([[1.0, -1.0]])
    assert torch.equal(progressive_forward(x, [col0]), torch.tensor([[1.0, 0.0]]))
    # column 1: h1 = relu(x) = [1,0]; h2 = relu(0 + 2 * h1^(0)) = [2,0];
    # y = 0 + 1 + 3 * h2^(0) = [1,1] + [3,0]
    assert torch.equal(progressive_forward(x, [col0, col1]), torch.tensor([[4.0, 1.0]]))


def test_pnn_never_forgets():
    stream = _stream("task-incremental", n_experiences=2)
    model = model_for_stream(ModelSpec(hidden=(16, 16)), stream)
    strategy = make_strategy("pnn")
    result = train_stream(model, stream, strategy, CONFIG)
    r = result.accuracy_matrix
    assert r[1, 0] == r[0, 0]
    assert strategy.n_parameters() > 0


# ---- the encoder recipe -----------------------------------------------------------------------


def test_encoder_is_deterministic_and_cached():
    stream = _stream()
    model = model_for_stream(ModelSpec(hidden=(16,)), stream)
    recipe = EncoderRecipe(source="blobs", n_samples=200, n_epochs=1, seed=3)
    first = pretrained_encoder(model, recipe, stream.sample_shape)
    files = list(cache_dir().glob("*.pt"))
    assert len(files) == 1
    files[0].unlink()
    again = pretrained_encoder(model, recipe, stream.sample_shape)  # retrained, not read
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    cached = pretrained_encoder(model, recipe, stream.sample_shape)  # read from disk
    assert all(torch.equal(first[k], cached[k]) for k in first)
    other = pretrained_encoder(model, dataclasses.replace(recipe, seed=4), stream.sample_shape)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert "head.weight" not in first


def test_fashion_encoder_needs_images():
    with pytest.raises(ObliviateError, match="single-channel images"):
        make_strategy("slda", encoder="fashion-mnist").begin(
            model_for_stream(ModelSpec(), _stream()), _stream()[0]
        )


@pytest.mark.slow  # pretrains a CNN encoder and fits REMIND's k-means: ~10 s on an idle CPU
def test_strategies_are_deterministic_on_cnn_images():
    x = np.random.default_rng(0).normal(size=(80, 1, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(4), 20)
    data = Dataset.from_arrays(x, y, n_classes=4)
    stream = build_scenario("class-incremental", data, data, n_experiences=2, seed=0)
    for name in ("slda", "remind", "l2p"):
        accs = []
        for _ in range(2):
            model = model_for_stream(ModelSpec(name="cnn", hidden=(16,)), stream)
            strategy = make_strategy(name, encoder_epochs=1)
            accs.append(train_stream(model, stream, strategy, CONFIG).accuracy_matrix)
        assert np.array_equal(accs[0], accs[1], equal_nan=True), name


def _write_idx(path, array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    path.write_bytes(header + array.tobytes())


def test_fashion_encoder_refuses_mnist_files(tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    dark = (rng.random((20, 28, 28)) < 0.1) * 255  # mean pixel ~0.1, as MNIST
    for stem, n in (("train", 20), ("t10k", 20)):
        _write_idx(folder / f"{stem}-images-idx3-ubyte", dark[:n])
        _write_idx(folder / f"{stem}-labels-idx1-ubyte", np.arange(n) % 10)
    monkeypatch.setenv("OBLIVIATE_DATA", str(tmp_path))
    with pytest.raises(ObliviateError, match="look like MNIST"):
        pretraining_data(EncoderRecipe(source="fashion-mnist", n_samples=20), (1, 8, 8))
