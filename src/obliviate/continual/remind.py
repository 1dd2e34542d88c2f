"""REMIND: replay of product-quantised features from frozen early layers (Hayes et al., 2020)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import derive_seed, generator
from obliviate._validation import check_choice, check_number
from obliviate.continual._encoder import (
    ENCODER_SOURCES,
    EncoderRecipe,
    cached,
    encoder_key,
    encoder_parameters,
    load_encoder,
    pretraining_data,
    require_model,
    set_requires_grad,
)
from obliviate.continual.base import Batch, Strategy, deleted_rows
from obliviate.data.dataset import as_id_tensor
from obliviate.data.scenarios import Experience
from obliviate.models.base import Model
from obliviate.models.output_layer import REQUIREMENT
from obliviate.training import eval_mode, model_device

__all__ = ["REMIND", "pq_decode", "pq_encode", "pq_fit"]


def _chunks(d: int, n_subvectors: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each of ``n_subvectors`` nearly equal slices of ``range(d)``."""
    bounds = torch.linspace(0, d, n_subvectors + 1, device="cpu").round().long().tolist()
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def pq_fit(z: Tensor, n_subvectors: int, n_codewords: int, seed: int) -> list[Tensor]:
    """Product-quantisation codebooks (Jegou et al., 2011) for features ``z`` ``[N, d]``.

    The ``d`` dimensions are cut into ``n_subvectors`` contiguous slices (nearly equal when
    ``d`` is not a multiple); each slice gets ``min(n_codewords, N)`` centroids by k-means
    (scikit-learn, one seeded initialisation). Returns one ``[k, d_s]`` float32 codebook per slice.
    """
    from sklearn.cluster import KMeans

    x = z.detach().double().numpy()
    books = []
    k = min(n_codewords, x.shape[0])
    for s, (a, b) in enumerate(_chunks(x.shape[1], n_subvectors)):
        km = KMeans(n_clusters=k, n_init=1, random_state=derive_seed(seed, "pq", s) % (2**31))
        km.fit(x[:, a:b])
        books.append(torch.from_numpy(km.cluster_centers_).float())
    return books


def pq_encode(z: Tensor, codebooks: list[Tensor]) -> Tensor:
    """Codes ``[N, m]`` (int64): for each slice, the index of the nearest codeword (squared
    Euclidean distance; ties to the lower index)."""
    d = sum(int(c.shape[1]) for c in codebooks)
    codes = []
    for (a, b), book in zip(_chunks(d, len(codebooks)), codebooks, strict=True):
        dist = torch.cdist(z[:, a:b].float(), book, compute_mode="donot_use_mm_for_euclid_dist")
        codes.append(dist.argmin(dim=1))
    return torch.stack(codes, dim=1)


def pq_decode(codes: Tensor, codebooks: list[Tensor]) -> Tensor:
    """Reconstructed features ``[N, d]``: each slice's codeword, concatenated."""
    return torch.cat([book[codes[:, s].long()] for s, book in enumerate(codebooks)], dim=1)


class REMIND(Strategy):
    """REMIND: frozen early layers, product-quantised feature memory, replay of the codes.

    The model's feature extractor (``G``, the "early layers") is replaced by an encoder
    pretrained on data disjoint from the stream and frozen; the output layer (``F``, the plastic
    part) is trained. Product-quantisation codebooks are fitted once on the encoder's features
    of the pretraining data (the paper's base initialisation). For each batch (Hayes et al.,
    2020, Algorithm 1): the batch's features are quantised and reconstructed, joined by
    ``replay_size`` samples per new sample drawn (seeded) from the memory of codes and reconstructed, ``F`` is
    trained on the union with cross-entropy, then the batch's codes enter the memory. When the
    memory is full, each new sample replaces a random sample of the class with the most samples
    (Section 3.2).

    Parameters
    ----------
    memory_size : int, >= 1
        Compressed samples the memory holds.
    n_subvectors : int, >= 1
        ``m``, PQ slices per feature vector (paper: 32 for 512-d features).
    n_codewords : int, in [2, 256]
        ``c``, centroids per slice (paper: 256, one byte per code).
    replay_size : int, >= 1
        ``r``, memory samples replayed per new sample (paper: 50): a batch of ``B`` samples is
        joined by ``min(r * B, memory)`` reconstructed memory samples.
    encoder : {"blobs", "fashion-mnist"}
        Pretraining data of the frozen encoder (see :mod:`obliviate.continual._encoder`).
    encoder_epochs : int, >= 0
        Pretraining epochs of the encoder.
    seed : int
        Seed of the encoder pretraining, the k-means and the replay and eviction draws.

    Notes
    -----
    - ``G``/``F`` split: obliviate models expose one cut, ``features``/``classify``, so ``G`` is
      the whole feature extractor and ``F`` is the output layer (the paper cuts a ResNet-18 after
      layer 3, and ``F`` has 3 conv layers); features are vectors, not spatial maps, so each
      sample has one code of ``m`` bytes instead of ``7 x 7 x m``.
    - The encoder and the codebooks come from Fashion-MNIST or generated blobs
      (:class:`~obliviate.continual._encoder.EncoderRecipe`), not from the first classes of the
      stream; the paper base-initialises on the first 100 ImageNet classes.
    - The loop may feed an experience for several epochs; the memory takes each sample at its
      first appearance in the experience only. Minibatches replace the paper's one-sample steps
      (``r * B`` replayed samples for a batch of ``B``).
    - Each memory row also keeps its sample id (8 bytes, not in the paper), so a deleted
      sample's code can be found and removed (:meth:`purge`).
    - No augmentation of the reconstructed features (the paper's random crops and manifold mixup
      on feature maps).

    References
    ----------
    Hayes, T. L., Kafle, K., Shrestha, R., Acharya, M. & Kanan, C. (2020). REMIND Your Neural
    Network to Prevent Catastrophic Forgetting. ECCV 2020, Section 3, Algorithm 1.
    Jegou, H., Douze, M. & Schmid, C. (2011). Product Quantization for Nearest Neighbor Search.
    IEEE TPAMI 33(1).
    """

    model_requirement: ClassVar[str | None] = REQUIREMENT
    needs_task_boundaries: ClassVar[bool] = False
    keeps_memory: ClassVar[bool] = True
    freezes_parameters: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = (
        "codebooks_",
        "memory_codes_",
        "memory_y_",
        "memory_task_",
        "memory_ids_",
        "n_steps_",
        "requires_grad_",
        "stored_",
    )
    codebooks_: list[Tensor] | None = None
    memory_codes_: Tensor
    memory_y_: Tensor
    memory_task_: Tensor
    memory_ids_: Tensor

    def __init__(
        self,
        *,
        memory_size: int = 1000,
        n_subvectors: int = 8,
        n_codewords: int = 256,
        replay_size: int = 50,
        encoder: str = "blobs",
        encoder_epochs: int = 3,
        seed: int = 0,
    ) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="REMIND")
        check_number("n_subvectors", n_subvectors, low=1, integer=True, owner="REMIND")
        check_number("n_codewords", n_codewords, low=2, high=256, integer=True, owner="REMIND")
        check_number("replay_size", replay_size, low=1, integer=True, owner="REMIND")
        check_choice("encoder", encoder, ENCODER_SOURCES, owner="REMIND")
        check_number("encoder_epochs", encoder_epochs, low=0, integer=True, owner="REMIND")
        check_number("seed", seed, integer=True, owner="REMIND")
        self.memory_size = memory_size
        self.n_subvectors = n_subvectors
        self.n_codewords = n_codewords
        self.replay_size = replay_size
        self.encoder = encoder
        self.encoder_epochs = encoder_epochs
        self.seed = seed

    def memory_used(self) -> int:
        # the memory is created with the codebooks (in ``_setup``)
        return 0 if self.codebooks_ is None else int(self.memory_y_.numel())

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples' quantised codes (ids ``[K]``, int64) from the memory,
        with their labels, task ids and ids. The codebooks come from the encoder's pretraining
        data, never from the stream, so nothing else is derived from a stream sample. See
        :meth:`~obliviate.continual.base.Strategy.purge`."""
        ids = as_id_tensor(ids)
        if self.codebooks_ is None:
            return
        keep = ~deleted_rows(self.memory_ids_, ids)
        self.memory_codes_ = self.memory_codes_[keep].clone()
        self.memory_y_ = self.memory_y_[keep].clone()
        self.memory_task_ = self.memory_task_[keep].clone()
        self.memory_ids_ = self.memory_ids_[keep].clone()

    # ---- hooks -------------------------------------------------------------------------------
    def begin(self, model: nn.Module, experience: Experience) -> None:
        m = require_model(model, "REMIND", example=experience.train.x)
        if self.codebooks_ is None:
            self._setup(m, experience.train.sample_shape)
        self.requires_grad_ = {n: p.requires_grad for n, p in encoder_parameters(m)}
        set_requires_grad(encoder_parameters(m), dict.fromkeys(self.requires_grad_, False))
        self.stored_ = experience.train.ids[:0].clone()  # ids offered during this experience

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        m = require_model(model, "REMIND", example=batch.x)
        assert self.codebooks_ is not None  # created in begin
        codes = pq_encode(self._features(m, batch.x), self.codebooks_)
        h = pq_decode(codes, self.codebooks_)
        y, task = batch.y, batch.task
        if self.memory_used():
            gen = generator(self.seed, "remind-replay", self.n_steps_)
            n = self.replay_size * batch.y.shape[0]
            idx = torch.randperm(self.memory_used(), generator=gen, device=gen.device)[:n]
            h = torch.cat([h, pq_decode(self.memory_codes_[idx], self.codebooks_)])
            y = torch.cat([y, self.memory_y_[idx]])
            if task is not None:
                task = torch.cat([task, self.memory_task_[idx]])
        loss = nn.functional.cross_entropy(m.classify(h, task), y)
        self._store(codes, batch)
        self.n_steps_ += 1
        return loss

    def end(self, model: nn.Module, experience: Experience) -> None:
        m = require_model(model, "REMIND", example=experience.train.x)
        set_requires_grad(encoder_parameters(m), self.requires_grad_)
        del self.requires_grad_, self.stored_

    # ---- internals ---------------------------------------------------------------------------
    def _setup(self, model: Model, sample_shape: tuple[int, ...]) -> None:
        recipe = EncoderRecipe(source=self.encoder, n_epochs=self.encoder_epochs, seed=self.seed)
        load_encoder(model, recipe, sample_shape)
        key = encoder_key(recipe, model, sample_shape)

        def fit() -> dict[str, Tensor]:
            data = pretraining_data(recipe, sample_shape)
            g = generator(self.seed, "pq-rows")
            rows = data.x[torch.randperm(len(data), generator=g, device=g.device).to(data.x.device)]
            z = self._features(model, rows[:5000])
            books = pq_fit(z, self.n_subvectors, self.n_codewords, self.seed)
            return {str(i): b for i, b in enumerate(books)}

        books = cached(f"{key}-pq{self.n_subvectors}x{self.n_codewords}-s{self.seed}", fit)
        dev = model_device(model)  # codebooks and codes live with the model
        self.codebooks_ = [books[str(i)].to(dev) for i in range(len(books))]
        dtype = torch.uint8 if self.n_codewords <= 256 else torch.int64
        self.memory_codes_ = torch.zeros(0, len(self.codebooks_), dtype=dtype, device=dev)
        self.memory_y_ = torch.zeros(0, dtype=torch.int64, device=dev)
        self.memory_task_ = torch.zeros(0, dtype=torch.int64, device=dev)
        self.memory_ids_ = torch.zeros(0, dtype=torch.int64, device=dev)
        self.n_steps_ = 0

    @staticmethod
    def _features(model: Model, x: Tensor) -> Tensor:
        # the frozen encoder keeps its pretrained batch-norm statistics; each submodule's own
        # mode comes back afterwards
        with eval_mode(model), torch.no_grad():
            return model.features(x).reshape(x.shape[0], -1)

    def _store(self, codes: Tensor, batch: Batch) -> None:
        """Add the batch's first-seen samples; when full, evict a random sample of the largest
        class (ties: the lowest class id) for each one."""
        new = ~torch.isin(batch.ids, self.stored_)
        self.stored_ = torch.cat([self.stored_, batch.ids[new]])
        task = batch.task if batch.task is not None else torch.full_like(batch.y, -1)
        gen = generator(self.seed, "remind-evict", self.n_steps_)
        for i in new.nonzero().reshape(-1).tolist():
            code = codes[i : i + 1].to(self.memory_codes_.dtype)
            y, t = batch.y[i : i + 1], task[i : i + 1]
            if self.memory_used() < self.memory_size:
                self.memory_codes_ = torch.cat([self.memory_codes_, code])
                self.memory_y_ = torch.cat([self.memory_y_, y])
                self.memory_task_ = torch.cat([self.memory_task_, t])
                self.memory_ids_ = torch.cat([self.memory_ids_, batch.ids[i : i + 1]])
                continue
            counts = torch.bincount(self.memory_y_)
            largest = int(torch.argmax(counts))
            rows = (self.memory_y_ == largest).nonzero().reshape(-1)
            slot = int(rows[torch.randint(rows.numel(), (1,), generator=gen, device=gen.device)])
            self.memory_codes_[slot], self.memory_y_[slot] = code[0], y[0]
            self.memory_task_[slot] = t[0]
            self.memory_ids_[slot] = batch.ids[i]
