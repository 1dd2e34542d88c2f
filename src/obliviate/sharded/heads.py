"""Exact unlearning of a classifier on a frozen backbone: per-shard heads (SAFE's design).

A user's pre-trained backbone (any ``nn.Module`` mapping a batch ``x`` to features ``[N, D]``:
a CNN trunk, a text encoder, a language model's pooled hidden state) stays frozen. Only a small
head per shard is trained: the training set is split into ``n_shards`` shards x ``n_slices``
slices by the same seeded hash of each id as the whole-model engine
(:func:`obliviate.sharded.assign`), shard ``k``'s head trains on its neighbourhood's data
(``graph``, :func:`obliviate.sharded.neighbourhoods`) slice by slice with a checkpoint after
each slice (SISA), and prediction averages the heads' class probabilities (SISA's mean of
softmax). Deleting ids retrains only the heads whose neighbourhood holds them, from the last
checkpoint that never saw them; the result is bitwise the heads trained without those ids
(tested).

The backbone's features are computed once per training row (``n_backbone_rows_``) and reused by
every shard, slice, epoch and retraining; a whole model per shard would run the backbone
``n_epochs`` times per row per stage it trains in.

Usage::

    heads = ShardedHeads(n_shards=4, n_slices=2, n_epochs=20, lr=1e-2, seed=0)
    heads.fit(backbone, train)              # train: obliviate Dataset with ids
    heads.forget([17, 42])                  # exact: only the affected heads retrain
    proba = heads.predict_proba(test.x)     # [N, C] float32

Notes
-----
SAFE (Dukler et al., 2023, section 3) trains InCA cross-attention adapters on a frozen ViT and
chooses the shard graph by expected cost; here the adapter is a linear head (or one hidden
layer, ``hidden``), the graph is given, and the store lives in memory (no ledger or receipts;
use :class:`obliviate.sharded.ShardedStore` for whole models with a ledger). Each stage trains
with a fresh optimiser for ``n_epochs`` epochs over slices ``0..r`` of the neighbourhood, rows
in id order, batches drawn from ``generator(seed, "heads", k, r)`` (as
:mod:`obliviate.sharded.sisa`).

References
----------
Bourtoule et al., 2021, "Machine Unlearning" (SISA), section 4; Dukler, Bowman, Achille,
Golatkar, Swaminathan, Soatto, 2023, "SAFE: Machine Unlearning With Shard Graphs" (ICCV),
sections 3-4.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, final

import numpy as np
import torch
from torch import Tensor, nn

from obliviate._rng import derive_seed
from obliviate.data.dataset import Dataset, as_id_tensor
from obliviate.errors import ObliviateError
from obliviate.io import atomic_save_torch, state_sha256
from obliviate.models.base import seeded_init
from obliviate.sharded.config import assign
from obliviate.sharded.graph import neighbourhoods
from obliviate.training import TrainConfig, eval_mode, fit

FORMAT = "obliviate-sharded-heads/1"


@final
class ShardedHeads:
    """Per-shard heads on one frozen backbone, with exact deletion by retraining heads.

    Parameters
    ----------
    n_shards, n_slices
        Shards (one head each) and SISA slices per shard (>= 1).
    graph
        Shard graph spec of :func:`obliviate.sharded.neighbourhoods` (``"none"``, ``"ring:1"``,
        ...): a head also trains on its neighbours' data.
    hidden
        0: a linear head ``D -> C``; > 0: ``Linear(D, hidden) -> ReLU -> Linear(hidden, C)``.
    head_factory
        Instead of ``hidden``: ``head_factory(D, C) -> nn.Module`` builds each shard's head or
        adapter (any module mapping ``[N, D]`` features to ``[N, C]`` logits), called inside
        :func:`obliviate.models.base.seeded_init` so its initial weights come from ``seed``.
    n_epochs, lr, batch_size, optimizer, weight_decay
        Each stage's recipe (:class:`obliviate.training.TrainConfig`).
    seed
        Drives the shard/slice hash, every head's initial weights and the batch order.

    Learned state: ``backbone_``, ``features_`` (the training rows' features, a
    :class:`Dataset` with the original ids and labels), ``samples_`` (``[n, 3]`` int64 rows
    ``(id, shard, slice)`` of the live ids), ``hoods_``, ``checkpoints_`` (per shard, the head's
    ``state_dict`` after each stage), ``heads_`` (the final heads), ``n_backbone_rows_``.

    Raises
    ------
    ObliviateError
        A value out of range (named, with the allowed range).
    """

    def __init__(
        self,
        *,
        n_shards: int = 4,
        n_slices: int = 1,
        graph: str = "none",
        hidden: int = 0,
        n_epochs: int = 20,
        lr: float = 1e-2,
        batch_size: int = 32,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        seed: int = 0,
        head_factory: Callable[[int, int], nn.Module] | None = None,
    ) -> None:
        for name, value in (("n_shards", n_shards), ("n_slices", n_slices)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ObliviateError(f"{name}={value!r}: give a whole number >= 1")
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 0:
            raise ObliviateError(f"hidden={hidden!r}: give 0 (a linear head) or a width >= 1")
        if head_factory is not None and (not callable(head_factory) or hidden):
            raise ObliviateError(
                "head_factory must be a callable (D, C) -> nn.Module, and hidden must be 0 with it"
            )
        neighbourhoods(graph, n_shards, seed)  # validates the spec
        TrainConfig(  # validates the recipe's values (one line naming the value)
            n_epochs=n_epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            weight_decay=weight_decay,
            seed=seed,
        )
        self.n_epochs, self.lr, self.batch_size = n_epochs, lr, batch_size
        self.optimizer, self.weight_decay = optimizer, weight_decay
        self.n_shards, self.n_slices, self.graph = n_shards, n_slices, graph
        self.hidden, self.seed, self.head_factory = hidden, seed, head_factory

    # ---- training --------------------------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """``[N, D]`` float32 backbone features of ``x`` (no grad, backbone in eval mode)."""
        backbone = self._fitted()
        out: list[Tensor] = []
        with torch.no_grad(), eval_mode(backbone):
            for start in range(0, x.shape[0], 1024):
                out.append(backbone(x[start : start + 1024]).float())
        f = torch.cat(out) if out else torch.zeros((0, 0))
        if f.dim() != 2:
            raise ObliviateError(
                f"the backbone returned features of shape {tuple(f.shape)}; it must map a batch "
                "to [N, D] (flatten or pool its output)"
            )
        return f

    def fit(self, backbone: nn.Module, train: Dataset) -> ShardedHeads:
        """Compute ``train``'s features once, then train every shard's head stage by stage.

        The backbone is never trained (its parameters are not touched; ``requires_grad`` is
        left as it was). Returns ``self``.

        Raises:
            ObliviateError: fewer training rows than shards, or a backbone output not ``[N, D]``.
        """
        if len(train) < self.n_shards:
            raise ObliviateError(
                f"{len(train)} training rows for n_shards={self.n_shards}: give more rows or "
                "fewer shards"
            )
        self.backbone_ = backbone
        feats = self.features(train.x)
        self.n_backbone_rows_ = int(train.x.shape[0])
        self.features_ = Dataset(
            x=feats, y=train.y, ids=train.ids, n_classes=train.n_classes, name=train.name
        )
        ids = train.ids.cpu().numpy().astype(np.int64)
        shard, slice_ = assign(ids, self.n_shards, self.n_slices, self.seed)
        self.samples_ = np.stack([ids, shard, slice_], axis=1)
        self.hoods_ = neighbourhoods(self.graph, self.n_shards, self.seed)
        self.checkpoints_: list[list[dict[str, Tensor]]] = [[] for _ in range(self.n_shards)]
        self.heads_: list[nn.Module] = [self._new_head(k) for k in range(self.n_shards)]
        for k in range(self.n_shards):
            self._train_from(k, 0)
        return self

    def _new_head(self, shard: int) -> nn.Module:
        d, c = int(self.features_.x.shape[1]), int(self.features_.n_classes)
        with seeded_init(derive_seed(self.seed, "heads-init", shard)):
            if self.head_factory is not None:
                head = self.head_factory(d, c)
                if not isinstance(head, nn.Module):
                    raise ObliviateError(
                        f"head_factory returned {type(head).__name__}; it must return an nn.Module"
                    )
                return head
            if self.hidden:
                return nn.Sequential(
                    nn.Linear(d, self.hidden), nn.ReLU(), nn.Linear(self.hidden, c)
                )
            return nn.Linear(d, c)

    def slices(self, shard: int) -> tuple[np.ndarray, ...]:
        """Sorted live ids per slice over ``shard``'s neighbourhood."""
        rows = self.samples_[np.isin(self.samples_[:, 1], self.hoods_[shard])]
        return tuple(np.sort(rows[rows[:, 2] == r, 0]) for r in range(self.n_slices))

    def _train_from(self, shard: int, start: int) -> None:
        """Re-run stages ``start..n_slices-1`` of ``shard`` from the checkpoint before ``start``."""
        head = self._new_head(shard)
        if start > 0:
            head.load_state_dict(self.checkpoints_[shard][start - 1])
        del self.checkpoints_[shard][start:]
        parts = self.slices(shard)
        for r in range(start, self.n_slices):
            seen = np.concatenate(parts[: r + 1])
            if seen.size:
                fit(head, self.features_.select_ids(seen), self._config(), key=("heads", shard, r))
            self.checkpoints_[shard].append(
                {k: v.detach().clone() for k, v in head.state_dict().items()}
            )
        head.eval()
        self.heads_[shard] = head

    # ---- deletion --------------------------------------------------------------------------
    def forget(self, ids: Sequence[int] | np.ndarray | Tensor) -> dict[str, Any]:
        """Delete ``ids`` exactly: retrain each head whose neighbourhood holds one of them, from
        the checkpoint before the earliest slice holding one.

        Returns ``{"n_removed", "retrained": {shard: first retrained slice}, "seconds"}``.

        Raises:
            ObliviateError: an id that is not (or no longer) in the training set, or a request
                that would delete every remaining row.
        """
        self._fitted()
        want = np.unique(as_id_tensor(ids).cpu().numpy().astype(np.int64))
        live = np.isin(want, self.samples_[:, 0])
        if not live.all():
            shown = ", ".join(str(int(i)) for i in want[~live][:10])
            raise ObliviateError(
                f"{int((~live).sum())} id(s) are not live training rows: {shown}; give ids that "
                "were trained on and not yet deleted"
            )
        if want.size == 0:
            return {"n_removed": 0, "retrained": {}, "seconds": 0.0}
        if want.size >= self.samples_.shape[0]:
            raise ObliviateError(
                f"the request deletes all {want.size} remaining rows; nothing would be left to train on"
            )
        t0 = time.perf_counter()
        gone = self.samples_[np.isin(self.samples_[:, 0], want)]
        retrain: dict[int, int] = {}
        for k, hood in enumerate(self.hoods_):
            hit = gone[np.isin(gone[:, 1], hood)]
            if hit.size:
                retrain[k] = int(hit[:, 2].min())
        self.samples_ = self.samples_[~np.isin(self.samples_[:, 0], want)]
        for k, start in sorted(retrain.items()):
            self._train_from(k, start)
        return {
            "n_removed": int(want.size),
            "retrained": retrain,
            "seconds": time.perf_counter() - t0,
        }

    # ---- prediction ------------------------------------------------------------------------
    def predict_proba(self, x: Tensor) -> Tensor:
        """``[N, C]`` float32: the mean over shards of each head's softmax on ``x``'s features."""
        f = self.features(x)
        with torch.no_grad():
            probs = [torch.softmax(h(f), dim=-1) for h in self.heads_]
        return torch.stack(probs).mean(0)

    def predict(self, x: Tensor) -> Tensor:
        """``[N]`` int64: the class with the highest mean probability."""
        return self.predict_proba(x).argmax(-1)

    def head_states(self) -> list[dict[str, Tensor]]:
        """Each shard's final head ``state_dict`` (shard order)."""
        return [dict(h.state_dict()) for h in self.heads_]

    # ---- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted state to one file, atomically (a crash leaves the old file or the
        new one): the constructor arguments but ``head_factory``, the features, the live
        ``(id, shard, slice)`` rows, every checkpoint, and the backbone's state sha256 (the
        backbone itself is the user's and is not saved).

        Raises:
            ObliviateError: not fitted.
        """
        backbone = self._fitted()
        params = {k: v for k, v in self.get_params().items() if k != "head_factory"}
        atomic_save_torch(
            {
                "format": FORMAT,
                "params": params,
                "custom_head": self.head_factory is not None,
                "backbone_sha256": state_sha256(backbone.state_dict()),
                "features": {
                    "x": self.features_.x,
                    "y": self.features_.y,
                    "ids": self.features_.ids,
                    "n_classes": int(self.features_.n_classes),
                    "name": self.features_.name,
                },
                "samples": torch.from_numpy(self.samples_),
                "checkpoints": self.checkpoints_,
                "n_backbone_rows": self.n_backbone_rows_,
            },
            path,
        )
        return Path(path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        backbone: nn.Module,
        *,
        head_factory: Callable[[int, int], nn.Module] | None = None,
    ) -> ShardedHeads:
        """Open a file written by :meth:`save` with the same ``backbone`` (checked by its state
        sha256) and, if it was built with one, the same ``head_factory``.

        Raises:
            ObliviateError: not such a file, another backbone, or a missing/extra head_factory.
        """
        try:
            blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise ObliviateError(f"cannot read sharded heads from {str(path)!r}: {exc}") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ObliviateError(f"{str(path)!r} is not a file written by ShardedHeads.save")
        if blob["custom_head"] != (head_factory is not None):
            raise ObliviateError(
                f"{str(path)!r} was saved "
                + ("with" if blob["custom_head"] else "without")
                + " a head_factory; pass the same one to load"
            )
        if state_sha256(backbone.state_dict()) != blob["backbone_sha256"]:
            raise ObliviateError(
                "the backbone given is not the one these heads were trained on (sha256 mismatch)"
            )
        heads = cls(**blob["params"], head_factory=head_factory)
        heads.backbone_ = backbone
        heads.features_ = Dataset(**blob["features"])
        heads.samples_ = blob["samples"].numpy()
        heads.checkpoints_ = blob["checkpoints"]
        heads.n_backbone_rows_ = blob["n_backbone_rows"]
        heads.hoods_ = neighbourhoods(heads.graph, heads.n_shards, heads.seed)
        heads.heads_ = []
        for k in range(heads.n_shards):
            head = heads._new_head(k)
            head.load_state_dict(heads.checkpoints_[k][-1])
            head.eval()
            heads.heads_.append(head)
        return heads

    def _config(self) -> TrainConfig:
        return TrainConfig(
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            seed=self.seed,
        )

    def _fitted(self) -> nn.Module:
        backbone = getattr(self, "backbone_", None)
        if backbone is None:
            raise ObliviateError("ShardedHeads is not fitted; call fit(backbone, train) first")
        return backbone

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}
