"""Fisher forgetting (Golatkar, Achille & Soatto, CVPR 2020): scrub by Fisher-shaped noise."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual.penalties import diagonal_fisher
from obliviate.unlearning._ops import trainable
from obliviate.unlearning._output_layer import REQUIREMENT, output_layer
from obliviate.unlearning.base import ForgetRequest, Unlearner

EPS = 1e-8
"""Added to the Fisher before inverting it (the reference code's value)."""


def fisher_noise_variance(
    fisher: Tensor,
    alpha: float,
    *,
    is_output: bool,
    max_var: float = 1e3,
    max_var_output: float = 1e2,
) -> Tensor:
    """Per-parameter noise variance ``alpha * min(1 / (F + 1e-8), cap)`` of Fisher forgetting.

    ``fisher``: the diagonal Fisher ``F`` of one parameter tensor on the retain set (any shape,
    float). ``cap`` is ``max_var`` (``max_var_output`` for the output layer). For a weight
    tensor (``ndim > 1``) the variance is averaged over dimension 1 (the inputs of each output
    unit) and broadcast back, so every unit gets one noise level. Output-layer tensors and all
    1-D tensors (biases, normalisation scales) get 10 times the variance. Returns a tensor of
    ``fisher``'s shape. (Reference code of Golatkar et al., ``get_mean_var``.)
    """
    var = torch.clamp(1.0 / (fisher + EPS), max=max_var_output if is_output else max_var) * alpha
    if var.ndim > 1:
        var = var.mean(dim=1, keepdim=True).expand_as(var).clone()
    if is_output or var.ndim == 1:
        var = var * 10.0
    return var


class FisherForgetting(Unlearner):
    """Add Gaussian noise shaped by the inverse Fisher of the retain set to every weight.

    With ``F`` the diagonal of the (true) Fisher information of the model on the retain set,
    ``F_i = mean_n sum_c p(c|x_n) (d log p(c|x_n) / d w_i)**2``, the scrubbed weights are

    ``S(w) = w + sqrt(v) * n``,  ``n ~ N(0, I)``,  ``v = alpha * min(F**-1, cap)``

    (see :func:`fisher_noise_variance` for the per-unit averaging and the caps). Weights the
    retain set needs (large ``F``) barely move; weights it does not constrain -- those that
    carried the forget set -- are drowned in noise. For class forgetting (a forget label with no
    row left in the retain set) the output-layer row of that class is first set to 0 with
    variance ``1e-4`` (times 10), so the class is no longer predicted, as in the reference code.

    Parameters
    ----------
    alpha:
        noise scale, ``> 0``: the paper's ``(lambda sigma_h**2)`` (the trade-off between
        forgetting and remaining accuracy); the reference code uses 1e-6 on CIFAR ResNets (here
        1e-5, see Notes).
    n_samples:
        retain rows used to estimate ``F`` (a seeded random subset; ``None``: all of them).
    seed:
        draws the noise and the Fisher subset.

    Model requirement: the model's logits must come from a final ``nn.Linear`` with one output per
    class (found by :func:`obliviate.unlearning._output_layer.output_layer`); other models are
    refused with an ObliviateError.

    Notes
    -----
    - The paper's Fisher-forgetting scrubbing function is
      ``S(w) = w + (lambda sigma_h**2)**(1/4) F**(-1/4) n`` (noise variance proportional to
      ``F**(-1/2)``); the authors' code (``get_mean_var`` in SelectiveForgetting), and the
      reimplementations that report numbers for it (Foster et al.'s SSD benchmark), use variance
      ``alpha / F`` with caps, per-unit averaging and the factor 10 on output layer and 1-D
      parameters. We follow the code.
    - ``F`` is the exact expectation over the model's predictive distribution (a sum over all
      classes, as the reference's ``hessian`` computes it), by
      :func:`obliviate.continual.penalties.diagonal_fisher` (``fisher="true"``), model in eval
      mode.
    - ``alpha`` 1e-5 was set on the retain/forget sets of digits (default MLP, seed 0) and the
      memorised toy of the conformance suite: the reference's 1e-6 left the memorised rows
      almost untouched (0.73 of 0.80 still fitted); 1e-5 brings that to 0.47 at a retain cost of
      ~2 points (class:3) and 2e-5 costs ~10 points.
    - On full MNIST (default MLP(256), seed 0) the same ``alpha`` costs 14-17 retain points
      (class:3 and random:10 %): the noise scale is not transferable across models and data;
      choose ``alpha`` on the retain set of the model at hand.
    - The noise is added to every parameter that requires grad; buffers (BatchNorm statistics)
      are left as they are, as in the reference.

    References
    ----------
    Golatkar, A., Achille, A. & Soatto, S. (2020). Eternal Sunshine of the Spotless Net: Selective
    Forgetting in Deep Networks. CVPR 2020. arXiv:1911.04933. (The
    "Fisher forgetting" scrubbing procedure.)
    Section and equation numbers not verified against the paper: of arXiv:1911.04933v5 only the
    abstract and the introduction were readable here, so the paper's form of the scrubbing
    function quoted under Notes is not checked against a numbered equation; the variance used
    follows the authors' code (``get_mean_var`` in SelectiveForgetting), as Notes say.
    """

    guarantee: ClassVar[Literal["exact", "approximate"]] = "approximate"
    needs: ClassVar[frozenset[str]] = frozenset({"retain"})
    model_requirement: ClassVar[str] = REQUIREMENT

    def __init__(self, *, alpha: float = 1e-5, n_samples: int | None = None, seed: int = 0) -> None:
        check_number("alpha", alpha, low=0, low_open=True, owner="FisherForgetting")
        if n_samples is not None:
            check_number("n_samples", n_samples, low=1, integer=True, owner="FisherForgetting")
        check_number("seed", seed, integer=True, owner="FisherForgetting")
        self.alpha = alpha
        self.n_samples = n_samples
        self.seed = seed

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        model = trainable(model)
        assert request.retain is not None
        n_classes = request.retain.n_classes
        head = output_layer(model, n_classes, "FisherForgetting", request.forget.x)
        head_ids = {id(p) for p in head.parameters()}
        fisher = diagonal_fisher(
            model,
            request.retain,
            fisher="true",
            n_samples=self.n_samples,
            seed=self.seed,
            key="fisher_forgetting",
        )
        gone = torch.tensor(
            [
                c
                for c in torch.unique(request.forget.y).tolist()
                if not bool((request.retain.y == c).any())
            ],
            dtype=torch.int64,
            device=request.forget.y.device,
        )
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name not in fisher:
                    continue
                is_out = id(p) in head_ids
                var = fisher_noise_variance(fisher[name], self.alpha, is_output=is_out)
                mu = p.detach().clone()
                if is_out and len(gone):
                    mu[gone] = 0.0
                    var[gone] = 1e-4 * 10.0
                noise = torch.randn(
                    p.shape,
                    generator=generator(self.seed, "fisher_forgetting", name),
                    dtype=p.dtype,
                    device="cpu",
                ).to(p.device)
                p.copy_(mu + var.sqrt() * noise)
        return model
