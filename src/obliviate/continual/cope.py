"""CoPE: continual prototype evolution (De Lange & Tuytelaars, 2021)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual._encoder import UNSEEN, require_model, write_head
from obliviate.continual.base import Batch, Strategy
from obliviate.continual.buffers import ClassBalancedBuffer
from obliviate.data.dataset import as_id_tensor
from obliviate.data.scenarios import Experience
from obliviate.models.output_layer import REQUIREMENT
from obliviate.training import model_device

__all__ = ["CoPE", "ppp_loss", "update_prototypes"]

EPS = 1e-8


def ppp_loss(z: Tensor, y: Tensor, prototypes: Tensor, seen: Tensor, temperature: float) -> Tensor:
    """The pseudo-prototypical proxy loss (De Lange & Tuytelaars, 2021, Eq. 5-8).

    ``z`` ``[B, d]`` L2-normalised embeddings, ``y`` ``[B]`` labels, ``prototypes`` ``[C, d]``
    (unit rows; used only where ``seen`` ``[C]`` is True, and every label must be seen). For each
    class ``c`` in the batch, with ``B_c`` its samples, ``B_k`` the others and ``p_k`` the other
    classes' prototypes, the probability of ``c`` for an instance ``x_i`` against an attractor
    ``a`` (its prototype ``p_c`` or another sample of ``B_c``, a pseudo-prototype) is
    ``P(c | x_i; a) = e^{<a, x_i>/tau} / (e^{<a, x_i>/tau} + sum_k e^{<p_k, x_i>/tau})``::

        L = -1/|B| sum_c [ sum_{i in B_c} log mean_{a in B_c \\ {i}, p_c} P(c | x_i; a)
                           + sum_{j in B_k} sum_{i in B_c} log(1 - (P(c | x_j; x_i) + P(c | x_j; p_c)) / 2) ]

    Attractors and prototypes are detached; gradients flow through the instances.
    """
    loss = z.new_zeros(())
    for c in torch.unique(y).tolist():
        bc, bk = z[y == c], z[y != c]
        others = seen.clone()
        others[c] = False
        pc, pk = prototypes[c : c + 1], prototypes[others]
        n_c = bc.shape[0]
        anchors = torch.cat([bc, pc, pk]).detach()
        # attractor: every instance of c against its pseudo-prototypes and its prototype
        d = torch.exp(anchors @ bc.T / temperature)
        d = d.masked_fill(
            torch.eye(*d.shape, dtype=torch.bool, device=d.device), 0.0
        )  # no self-attraction
        num, den = d[: n_c + 1], d[n_c + 1 :].sum(dim=0)
        expected = (num / (num + den + EPS)).sum(dim=0) / n_c
        loss = loss - torch.log(expected.clamp_min(EPS)).sum()
        if bk.shape[0] == 0:
            continue
        # repellor: other-class instances away from c's prototype and pseudo-prototypes
        d = torch.exp(anchors @ bk.T / temperature)
        num, den = d[: n_c + 1], d[n_c + 1 :].sum(dim=0, keepdim=True)
        prob = num / (num + den + EPS)
        expected = (prob[:-1] + prob[-1:]) / 2
        loss = loss - torch.log((1 - expected).clamp_min(EPS)).sum()
    return loss / z.shape[0]


@torch.no_grad()
def update_prototypes(prototypes: Tensor, z: Tensor, y: Tensor, momentum: float) -> None:
    """Evolve the prototypes of the classes in a batch, in place (Eq. 3)::

        p_c <- normalise(alpha * p_c + (1 - alpha) * mean_{i: y_i = c} z_i)

    ``z`` are the batch's normalised embeddings; their class mean is not re-normalised before
    the momentum step, as in the authors' code.
    """
    for c in torch.unique(y).tolist():
        batch_mean = z[y == c].mean(dim=0)
        moved = momentum * prototypes[c] + (1 - momentum) * batch_mean
        prototypes[c] = nn.functional.normalize(moved, dim=0)


class CoPE(Strategy):
    """CoPE: prototypes that evolve with the embedding, a PPP loss and class-balanced replay.

    Every class has a prototype on the unit sphere of the (L2-normalised) feature space. Each
    batch is joined by ``replay_batch_size`` samples of a class-balanced memory; the network is
    trained with the pseudo-prototypical proxy loss (:func:`ppp_loss`) and the prototypes of
    the batch's classes move towards the batch's class means with momentum ``alpha``
    (:func:`update_prototypes`); the batch's samples then enter the memory (class-balanced
    reservoir). Prediction is the nearest prototype: the output layer holds the prototypes as
    rows with zero bias (unseen classes: -1e9), so the model's forward pass ranks classes by
    ``<p_c, f(x)> = |f(x)| cos(p_c, f(x))``, the same order as the nearest-prototype rule.

    Parameters
    ----------
    memory_size : int, >= 1
        Samples in the class-balanced replay memory.
    momentum : float, in [0, 1)
        ``alpha``, the prototype momentum (paper: 0.99).
    temperature : float, > 0
        ``tau`` of the PPP loss (the Avalanche implementation's default, 0.1).
    replay_batch_size : int >= 1 or None
        Memory samples per batch; None uses the batch's size (paper: equal halves).
    seed : int
        Seeds new prototypes, the memory and the replay draws.

    Notes
    -----
    - The embedding is the model's ``features`` (after its last ReLU), L2-normalised; the paper's
      network ends in a linear projection to the prototype space.
    - Prototypes of new classes start as random unit vectors (seeded), as in the reference code;
      they are updated once per step with the embeddings of that step's forward pass (before the
      optimiser step), as the Avalanche implementation does.
    - The loop may feed an experience for several epochs; the memory takes each sample at its
      first appearance in the experience. The output layer is not trained (frozen during each
      experience) and holds the prototypes.
    - Probabilities in the loss get a 1e-8 floor inside the logarithms (the reference code
      produces NaN when a batch holds one class and a single prototype exists).

    References
    ----------
    De Lange, M. & Tuytelaars, T. (2021). Continual Prototype Evolution: Learning Online from
    Non-Stationary Data Streams. ICCV 2021, Section 3 (Eq. 3-8).
    """

    model_requirement: ClassVar[str | None] = REQUIREMENT
    needs_task_boundaries: ClassVar[bool] = False
    keeps_memory: ClassVar[bool] = True
    freezes_parameters: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = (
        "prototypes_",
        "seen_",
        "memory_",
        "n_steps_",
        "offered_",
        "head_grad_",
    )
    memory_: ClassBalancedBuffer | None = None

    def __init__(
        self,
        *,
        memory_size: int = 200,
        momentum: float = 0.99,
        temperature: float = 0.1,
        replay_batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="CoPE")
        check_number("momentum", momentum, low=0, high=1, high_open=True, owner="CoPE")
        check_number("temperature", temperature, low=0, low_open=True, owner="CoPE")
        if replay_batch_size is not None:
            check_number("replay_batch_size", replay_batch_size, low=1, integer=True, owner="CoPE")
        check_number("seed", seed, integer=True, owner="CoPE")
        self.memory_size = memory_size
        self.momentum = momentum
        self.temperature = temperature
        self.replay_batch_size = replay_batch_size
        self.seed = seed

    def memory_used(self) -> int:
        return 0 if self.memory_ is None else len(self.memory_)

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64) from the class-balanced memory
        (:meth:`~obliviate.continual.buffers.ClassBalancedBuffer.purge`). The prototypes are a
        momentum average of the model's embeddings over training, updated with the network at
        every step: influence like the weights (they are the output layer), left to the
        unlearner. See :meth:`~obliviate.continual.base.Strategy.purge`."""
        ids = as_id_tensor(ids)
        if self.memory_ is not None:
            self.memory_.purge(ids)

    def begin(self, model: nn.Module, experience: Experience) -> None:
        m = require_model(model, "CoPE", example=experience.train.x)
        if self.memory_ is None:
            dev = model_device(model)
            self.prototypes_ = torch.zeros(m.n_classes, m.feature_dim, device=dev)
            self.seen_ = torch.zeros(m.n_classes, dtype=torch.bool, device=dev)
            self.memory_ = ClassBalancedBuffer(memory_size=self.memory_size, seed=self.seed)
            self.n_steps_ = 0
        self.offered_ = torch.zeros(0, dtype=torch.int64, device=experience.train.ids.device)
        self.head_grad_ = [p.requires_grad for p in m.head_parameters()]
        for p in m.head_parameters():
            p.requires_grad_(False)
        self._write(m)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        m = require_model(model, "CoPE", example=batch.x)
        x, y, task = batch.x, batch.y, batch.task
        assert self.memory_ is not None  # created in begin
        if len(self.memory_):
            n = len(y) if self.replay_batch_size is None else self.replay_batch_size
            stored = self.memory_.filled()
            idx = self.memory_.sample(n, generator(self.seed, "cope-replay", self.n_steps_))
            sx, sy = stored["x"], stored["y"]
            assert sx is not None and sy is not None  # a non-empty memory
            x = torch.cat([x, sx[idx]])
            y = torch.cat([y, sy[idx]])
        for c in torch.unique(y).tolist():
            if not bool(self.seen_[c]):
                gen = generator(self.seed, "cope-prototype", c)
                init = torch.rand(m.feature_dim, generator=gen, device=gen.device) * 2 - 1
                self.prototypes_[c] = nn.functional.normalize(init, dim=0).to(
                    self.prototypes_.device
                )
                self.seen_[c] = True
        z = nn.functional.normalize(m.features(x).reshape(x.shape[0], -1), dim=1)
        loss = ppp_loss(z, y, self.prototypes_, self.seen_, self.temperature)
        update_prototypes(self.prototypes_, z.detach(), y, self.momentum)
        new = ~torch.isin(batch.ids, self.offered_)
        if bool(new.any()):
            self.offered_ = torch.cat([self.offered_, batch.ids[new]])
            t = None if task is None else task[new]
            self.memory_.add_experience(batch.x[new], batch.y[new], batch.ids[new], t)
        self.n_steps_ += 1
        self._write(m)
        return loss

    def end(self, model: nn.Module, experience: Experience) -> None:
        m = require_model(model, "CoPE", example=experience.train.x)
        self._write(m)
        for p, flag in zip(m.head_parameters(), self.head_grad_, strict=True):
            p.requires_grad_(flag)
        del self.offered_, self.head_grad_

    def _write(self, model: nn.Module) -> None:
        bias = torch.where(self.seen_, 0.0, UNSEEN)
        write_head(model, self.prototypes_, bias)  # type: ignore[arg-type]
