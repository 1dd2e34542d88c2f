"""Robustness of forgetting: does the forgotten knowledge come back? (issue #14, item 4)

Two recovery tests, each run on the unlearned model *and* on the retrained oracle with the same
procedure, so a figure reads against what a model that never saw the forget set does:

- :func:`quantization_recovery`: forget-set accuracy before and after int8 dynamic quantisation of
  the ``nn.Linear`` layers (``torch.ao.quantization.quantize_dynamic``). Zhang et al. (2024)
  showed that unlearning with small weight updates is undone by quantisation: the quantised
  unlearned weights fall into the same bins as the original's, and the forgotten answers return.
- :func:`related_finetune_recovery`: forget-set accuracy before and after a few fine-tuning steps
  on ``k`` samples that are *not* in the forget set: for class forgetting, samples of the
  remaining classes the original confuses most with the forgotten ones; otherwise a random draw
  of the retain set. Fine-tuning on related data (never on the forget set itself) restoring the
  forgotten behaviour is the targeted-relearning attack of Hu et al. (2024) and the "relearning on
  related data" test of Lynch et al. (2024); the self-regeneration / OFFSIDE tests of issue #14
  are of this kind.

:func:`robustness_report` runs both, plus the linear probe (:mod:`obliviate.unlearning.probe`)
fitted on held-out rows and evaluated on the forget set.

References
----------
Zhang, Z., Wang, F., Li, X., Wu, Z., Tang, X., Liu, H., He, Q., Yin, W. & Wang, S. (2024/2025).
Catastrophic Failure of LLM Unlearning via Quantization (first titled "Does your LLM truly
unlearn? An embarrassingly simple approach to recover unlearned knowledge"). ICLR 2025.
arXiv:2410.16454.

Hu, S., Fu, Y., Wu, Z. S. & Smith, V. (2024). Jogging the Memory of Unlearned LLMs Through
Targeted Relearning Attacks. arXiv:2406.13356.

Lynch, A., Guo, P., Ewart, A., Casper, S. & Hadfield-Menell, D. (2024). Eight Methods to Evaluate
Robust Unlearning in LLMs. arXiv:2402.16835.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from obliviate._rng import generator
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.training import (
    Batch,
    TrainConfig,
    accuracy,
    data_to,
    global_rng_from,
    make_optimizer,
    model_device,
    predict_logits,
    train_mode,
)
from obliviate.unlearning._ops import clone_model, cross_entropy
from obliviate.unlearning.base import ForgetRequest
from obliviate.unlearning.probe import probe_accuracy

RELATED_K = 32
"""Samples the related fine-tuning attack may use."""
RELATED_STEPS = 20
"""Optimiser steps of the related fine-tuning attack (full batch of the ``k`` samples)."""
RELATED = TrainConfig(n_epochs=1, batch_size=RELATED_K, lr=1e-3, optimizer="adam", seed=0)
"""Optimiser of the related fine-tuning attack: Adam, lr 1e-3 (the relearn attack's)."""


def quantize_int8(model: nn.Module) -> nn.Module:
    """A CPU copy of ``model`` (float32, eval mode) whose ``nn.Linear`` layers are int8 dynamic
    quantised (``torch.ao.quantization.quantize_dynamic``, qint8 weights per tensor, activations
    quantised per batch at run time). Other layers (convolutions, norms) stay float32.
    ``model`` is not modified."""
    m = copy.deepcopy(model).to("cpu").float().eval()
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)


def quantization_recovery(model: nn.Module, forget: Dataset) -> dict[str, float]:
    """Forget-set accuracy of ``model`` before (``before``) and after (``after``) int8 dynamic
    quantisation of its linear layers (:func:`quantize_int8`), and ``recovery`` = after - before
    (a value in [-1, 1]; large and positive: quantisation brings the forgotten answers back).
    Zhang et al. (2024), Sec. 4: the unlearned model is quantised as a user would deploy it and
    its accuracy on the forget set is measured again. NaN figures for an empty forget set."""
    if len(forget) == 0:
        return {"before": float("nan"), "after": float("nan"), "recovery": float("nan")}
    before = accuracy(model, forget)
    after = accuracy(quantize_int8(model), data_to(forget, "cpu"))
    return {"before": before, "after": after, "recovery": after - before}


def related_samples(
    original: nn.Module, request: ForgetRequest, *, k: int = RELATED_K, seed: int = 0
) -> Dataset:
    """The ``k`` samples the related fine-tuning attack uses; never a forget-set row.

    Class forgetting (the retain set holds no row of the forget set's classes): the rows of the
    remaining classes that ``original`` confuses most with the forgotten ones, i.e. the classes
    with the highest mean softmax probability on the forget set under the original (the
    forgotten classes excluded), taken class by class in that order, rows drawn at random within a
    class. Otherwise (random or sub-class forgetting): ``k`` retain rows drawn at random. The
    choice depends on the original and the request only, so the unlearned model and the oracle
    face the same samples. Raises :class:`ObliviateError` for ``k < 1`` or no retain set.
    """
    if k < 1:
        raise ObliviateError(f"related fine-tuning needs k >= 1 samples, got k={k!r}")
    retain = request.retain
    if retain is None or len(retain) == 0:
        raise ObliviateError("related fine-tuning needs a non-empty retain set in the request")
    gen = generator(seed, "robustness", "related")
    forgotten = torch.unique(request.forget.y.cpu())
    retain_y = retain.y.cpu()
    if bool(torch.isin(retain_y, forgotten).any()):  # random / sub-class forgetting
        idx = torch.randperm(len(retain), generator=gen)[: min(k, len(retain))]
        return retain.subset(torch.sort(idx).values)
    probs = predict_logits(original, request.forget).softmax(1).mean(0).cpu()
    probs[forgotten] = -1.0
    order = [int(c) for c in torch.argsort(probs, descending=True, stable=True)]
    chosen: list[torch.Tensor] = []
    n = 0
    for c in order:
        if n >= k or probs[c] < 0:
            break
        rows = torch.nonzero(retain_y == c).flatten()
        if rows.numel() == 0:
            continue
        take = rows[torch.randperm(rows.numel(), generator=gen)[: k - n]]
        chosen.append(take)
        n += take.numel()
    return retain.subset(torch.sort(torch.cat(chosen)).values)


def related_finetune_recovery(
    model: nn.Module,
    forget: Dataset,
    samples: Dataset,
    *,
    n_steps: int = RELATED_STEPS,
    config: TrainConfig = RELATED,
) -> dict[str, float]:
    """Forget-set accuracy of ``model`` before and after ``n_steps`` full-batch steps of
    fine-tuning a copy on ``samples`` (their own labels; :func:`related_samples`), and
    ``recovery`` = after - before. Hu et al. (2024) relearn with a small set of related, benign
    data; here the data are the closest classes, so any recovery is knowledge the unlearned model
    still held. ``model`` is not modified."""
    if len(forget) == 0:
        return {"before": float("nan"), "after": float("nan"), "recovery": float("nan")}
    before = accuracy(model, forget)
    m = clone_model(model)
    samples = data_to(samples, model_device(m))
    opt = make_optimizer([p for p in m.parameters() if p.requires_grad], config)
    batch = Batch(samples.x, samples.y, samples.ids, None, 0)
    with global_rng_from(config.seed, "related_finetune"):  # dropout masks from the seed
        for _ in range(n_steps):
            train_mode(m)
            opt.zero_grad(set_to_none=True)
            cross_entropy(m, batch).backward()
            opt.step()
    m.eval()
    after = accuracy(m, forget)
    return {"before": before, "after": after, "recovery": after - before}


def robustness_report(
    original: nn.Module,
    oracle: nn.Module,
    unlearned: nn.Module,
    request: ForgetRequest,
    held_out: Dataset,
    *,
    k: int = RELATED_K,
    n_steps: int = RELATED_STEPS,
    seed: int = 0,
) -> dict[str, Any]:
    """The robustness columns of a forget run, for the unlearned model and the oracle.

    Returns ``quantization`` and ``related_finetune`` (each ``{"unlearned": {...}, "oracle":
    {...}}`` with ``before``, ``after``, ``recovery``), ``related_k``, ``related_steps``,
    ``related_classes`` (labels of the attack's samples, sorted unique) and ``probe`` (forget-set
    accuracy of a linear probe on the penultimate features, fitted on ``held_out``, e.g. the test
    set; ``None`` for a model whose features cannot be read). Empty forget set: NaN figures.
    """
    forget = request.forget
    out: dict[str, Any] = {
        "quantization": {
            "unlearned": quantization_recovery(unlearned, forget),
            "oracle": quantization_recovery(oracle, forget),
        },
        "related_k": k,
        "related_steps": n_steps,
    }
    if len(forget):
        samples = related_samples(original, request, k=k, seed=seed)
        out["related_classes"] = sorted({int(c) for c in samples.y.tolist()})
        out["related_finetune"] = {
            name: related_finetune_recovery(m, forget, samples, n_steps=n_steps)
            for name, m in (("unlearned", unlearned), ("oracle", oracle))
        }
    else:
        nan = {"before": float("nan"), "after": float("nan"), "recovery": float("nan")}
        out["related_classes"] = []
        out["related_finetune"] = {"unlearned": dict(nan), "oracle": dict(nan)}
    out["probe"] = {"unlearned": None, "oracle": None}
    if len(forget) and len(torch.unique(held_out.y)) >= 2:
        for name, m in (("unlearned", unlearned), ("oracle", oracle)):
            try:
                out["probe"][name] = probe_accuracy(m, held_out, forget)
            except ObliviateError:  # a user model without a readable feature layer
                out["probe"][name] = None
    return out


__all__ = [
    "RELATED",
    "RELATED_K",
    "RELATED_STEPS",
    "quantization_recovery",
    "quantize_int8",
    "related_finetune_recovery",
    "related_samples",
    "robustness_report",
]
