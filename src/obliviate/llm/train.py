"""Tokenise QA items, per-sequence losses, and the one fine-tuning loop for causal LMs.

A sequence is ``prompt + answer + eos`` where the prompt is ``"Question: {q}\\nAnswer:"`` (empty
for plain text) and the answer ``" " + answer``, tokenised separately (so the answer's tokens
are the same in every wording context); only the answer's tokens (and eos) carry loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from obliviate._rng import generator
from obliviate.errors import ObliviateError
from obliviate.llm.data import QAItem
from obliviate.llm.models import LM, forward_logits


@dataclass(frozen=True)
class Encoded:
    """One tokenised sequence: ``ids`` (prompt + target) and ``n_prompt`` leading prompt tokens."""

    id: int
    ids: tuple[int, ...]
    n_prompt: int


def prompt_text(question: str) -> str:
    return f"Question: {question}\nAnswer:" if question else ""


def encode_pair(lm: LM, question: str, answer: str, item_id: int = -1) -> Encoded:
    tok = lm.tokenizer
    prompt = tok(prompt_text(question), add_special_tokens=False)["input_ids"] if question else []
    target = tok((" " if question else "") + answer, add_special_tokens=False)["input_ids"]
    ids = tuple(int(t) for t in [*prompt, *target, lm.eos_id])
    if len(ids) - max(len(prompt), 1) < 1:
        raise ObliviateError(f"item {item_id}: the answer/text is empty after tokenisation")
    return Encoded(id=item_id, ids=ids, n_prompt=len(prompt))


def encode(lm: LM, items: Sequence[QAItem]) -> list[Encoded]:
    """Tokenise each item's trained answer."""
    return [encode_pair(lm, it.question, it.answer, it.id) for it in items]


def target_mask(seqs: Sequence[Encoded], width: int, device: torch.device) -> Tensor:
    """``[B, width - 1]`` bool: which next-token predictions carry loss (answer tokens + eos)."""
    mask = torch.zeros((len(seqs), width - 1), dtype=torch.bool)
    for b, s in enumerate(seqs):
        mask[b, max(s.n_prompt, 1) - 1 : len(s.ids) - 1] = True
    return mask.to(device)


def targets(seqs: Sequence[Encoded], width: int, device: torch.device) -> Tensor:
    out = torch.zeros((len(seqs), width - 1), dtype=torch.long)
    for b, s in enumerate(seqs):
        out[b, : len(s.ids) - 1] = torch.tensor(s.ids[1:], dtype=torch.long)
    return out.to(device)


def token_nll(lm: LM, seqs: Sequence[Encoded], model: torch.nn.Module | None = None) -> Tensor:
    """``[B, T-1]`` float: negative log-likelihood of each target token, 0 outside the answer."""
    logits = forward_logits(lm, [s.ids for s in seqs], model=model)
    width = logits.shape[1]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, targets(seqs, width, lm.device).unsqueeze(-1)).squeeze(-1)
    return nll * target_mask(seqs, width, lm.device)


def sequence_nll(
    lm: LM, seqs: Sequence[Encoded], model: torch.nn.Module | None = None
) -> tuple[Tensor, Tensor]:
    """(``[B]`` summed answer NLL in nats, ``[B]`` number of answer tokens)."""
    nll = token_nll(lm, seqs, model)
    counts = torch.tensor([len(s.ids) - max(s.n_prompt, 1) for s in seqs], device=lm.device)
    return nll.sum(-1), counts.to(nll.dtype)


def mean_token_nll(lm: LM, seqs: Sequence[Encoded], model: torch.nn.Module | None = None) -> Tensor:
    """Scalar: NLL averaged over every answer token of the batch (Hugging Face's LM loss)."""
    total, counts = sequence_nll(lm, seqs, model)
    return total.sum() / counts.sum()


def check_schedule(n_epochs: int, lr: float, batch_size: int) -> None:
    if n_epochs < 0:
        raise ObliviateError(f"n_epochs={n_epochs}: must be >= 0")
    if not lr > 0:
        raise ObliviateError(f"lr={lr}: must be > 0")
    if batch_size < 1:
        raise ObliviateError(f"batch_size={batch_size}: must be >= 1")


def fine_tune(
    lm: LM,
    data: Sequence[Encoded],
    *,
    n_epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> LM:
    """Fine-tune ``lm.model`` in place (its trainable parameters) with AdamW on the answer NLL.

    Each epoch visits ``data`` in a seeded random order (``generator(seed, "llm-fit", epoch)``),
    so the same seed and data give the same bits on CPU.
    """
    check_schedule(n_epochs, lr, batch_size)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    if not params:
        raise ObliviateError("nothing to train: every parameter is frozen")
    if not data:
        return lm
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    lm.model.train()
    for epoch in range(n_epochs):
        order = torch.randperm(len(data), generator=generator(seed, "llm-fit", epoch)).tolist()
        for start in range(0, len(order), batch_size):
            batch = [data[i] for i in order[start : start + batch_size]]
            opt.zero_grad(set_to_none=True)
            mean_token_nll(lm, batch).backward()
            opt.step()
    lm.model.eval()
    return lm
