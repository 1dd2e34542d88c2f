"""Unlearning metrics for causal LMs, with OpenUnlearning's definitions and JSON layout.

Every metric returns ``{"agg_value": float, "value_by_index": {id: {...}}}`` (the layout of
OpenUnlearning's ``evals``, so numbers can be compared with their tools). The pure functions
(``truth_ratio``, ``forget_quality``, ``min_k``, ``min_k_plus_plus``, ``zlib_score``,
``rouge_l_recall``, ``extraction_strength``, ``exact_memorization``, ``mia_auc``, ``privleak``,
``model_utility``) take arrays; :func:`evaluate` runs a model (any :class:`Scorer`) over the
forget / retain / holdout / world splits and returns them all.

References
----------
* Maini et al., 2024, "TOFU: A Task of Fictitious Unlearning for LLMs" (probability, ROUGE-L
  recall, truth ratio = P(perturbed)^(1/|y|) / P(paraphrased)^(1/|y|), forget quality = KS-test
  p-value against the retain-only model, model utility = harmonic mean).
* Dorna et al., 2025, "OpenUnlearning" (aggregators ``closer_to_1_better`` and ``true_better``;
  privleak; extraction strength; exact memorisation; ``agg_value`` / ``value_by_index``).
* Shi et al., 2024, "Detecting Pretraining Data from LLMs" (Min-K%); Zhang et al., 2024,
  "Min-K%++" (token score (log p - mu) / sigma under the model's own next-token distribution);
  Carlini et al., 2021 (zlib ratio); Yeom et al., 2018 (LOSS).
* Shi et al., 2024, "MUSE" (PrivLeak = (AUC - AUC_retrain) / AUC_retrain x 100).

Notes
-----
* Model utility here is the harmonic mean of retain probability, retain ROUGE-L recall, retain
  truth ratio (``true_better``), world-facts probability (normalised over the answer options),
  world-facts ROUGE-L recall and world-facts truth ratio; TOFU's real-authors set is not
  generated (deviation).
* ``value_accuracy`` (the true value appears in the greedy answer, case-insensitive) and the
  same-wording truth ratio (wrong values in the trained answer's wording) are additions.
* With ``n`` forget items the KS p-value takes few distinct values: ``forget_quality`` reports
  ``n_forget`` beside it.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import ArrayLike

from obliviate.errors import ObliviateError
from obliviate.llm.data import QAData, QAItem
from obliviate.llm.models import LM, forward_logits
from obliviate.llm.train import Encoded, encode_pair, target_mask, targets

EPS = 1e-10


@dataclass(frozen=True)
class TokenScores:
    """Per answer token: ``logp`` of the true token, the model's own mean ``mu`` and standard
    deviation ``sigma`` of log p over the vocabulary (Min-K%++), and the ``argmax`` token."""

    logp: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    argmax: np.ndarray
    target: np.ndarray


class Scorer(Protocol):
    """Anything that scores token sequences and generates greedily (a model, an ensemble)."""

    def score(self, seqs: Sequence[Encoded]) -> list[TokenScores]: ...

    def generate(
        self, prompts: Sequence[Sequence[int]], max_new_tokens: int
    ) -> list[list[int]]: ...


def scores_from_logprobs(
    logp_all: torch.Tensor, seqs: Sequence[Encoded], device: torch.device
) -> list[TokenScores]:
    """Token scores from ``[B, T, V]`` next-token log-probabilities of right-padded ``seqs``."""
    width = logp_all.shape[1]
    logp_all = logp_all[:, :-1].float()
    tgt = targets(seqs, width, device)
    mask = target_mask(seqs, width, device)
    lp = logp_all.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    probs = logp_all.exp()
    mu = (probs * logp_all).sum(-1)
    var = (probs * logp_all.square()).sum(-1) - mu.square()
    sigma = var.clamp_min(0).sqrt()
    arg = logp_all.argmax(-1)
    out = []
    for b in range(len(seqs)):
        m = mask[b]
        out.append(
            TokenScores(
                logp=lp[b][m].cpu().double().numpy(),
                mu=mu[b][m].cpu().double().numpy(),
                sigma=sigma[b][m].cpu().double().numpy(),
                argmax=arg[b][m].cpu().numpy(),
                target=tgt[b][m].cpu().numpy(),
            )
        )
    return out


class LMScorer:
    """:class:`Scorer` over one :class:`LM` (frozen-prefix replay when ``lm.prefix`` is set)."""

    def __init__(self, lm: LM, batch_size: int = 16) -> None:
        self.lm, self.batch_size = lm, batch_size

    @torch.no_grad()
    def score(self, seqs: Sequence[Encoded]) -> list[TokenScores]:
        out: list[TokenScores] = []
        self.lm.model.eval()
        for start in range(0, len(seqs), self.batch_size):
            chunk = list(seqs[start : start + self.batch_size])
            logits = forward_logits(self.lm, [s.ids for s in chunk])
            out += scores_from_logprobs(
                torch.log_softmax(logits.float(), -1), chunk, self.lm.device
            )
        return out

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations (eos and after dropped), ``batch_size`` left-padded prompts at a
        time through the model's own ``generate``."""
        self.lm.model.eval()
        out: list[list[int]] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = [list(p) for p in prompts[start : start + self.batch_size]]
            width = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), width), self.lm.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for b, p in enumerate(chunk):
                ids[b, width - len(p) :] = torch.tensor(p, dtype=torch.long)
                mask[b, width - len(p) :] = 1
            net: Any = self.lm.model
            gen = net.generate(
                input_ids=ids.to(self.lm.device),
                attention_mask=mask.to(self.lm.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.lm.pad_id,
                eos_token_id=self.lm.eos_id,
            )
            out += [_until_eos(row[width:].tolist(), self.lm.eos_id) for row in gen]
        return out


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


# ---- pure metric functions -----------------------------------------------------------------
def closer_to_1_better(ratios: np.ndarray) -> float:
    """OpenUnlearning's forget aggregator: mean of min(r, 1/r)."""
    r = np.asarray(ratios, dtype=np.float64)
    return float(np.mean(np.minimum(r, 1.0 / (r + EPS))))


def true_better(ratios: np.ndarray) -> float:
    """OpenUnlearning's retain aggregator: mean of max(0, 1 - r)."""
    return float(np.mean(np.maximum(0.0, 1.0 - np.asarray(ratios, dtype=np.float64))))


AGGREGATORS: dict[str, Callable[[np.ndarray], float]] = {
    "closer_to_1_better": closer_to_1_better,
    "true_better": true_better,
}


def truth_ratio(
    correct_avg_nll: Sequence[float], wrong_avg_nll: Sequence[Sequence[float]]
) -> np.ndarray:
    """Per item ``exp(-mean_j wrong_j) / (exp(-correct) + 1e-10)`` (TOFU eq. 1, OpenUnlearning).

    Args:
        correct_avg_nll: ``[N]`` mean per-token NLL (nats) of the paraphrased (or true) answer.
        wrong_avg_nll: ``[N, P]`` mean per-token NLL of the ``P`` perturbed answers.
    """
    c = np.asarray(correct_avg_nll, dtype=np.float64)
    w = np.asarray(wrong_avg_nll, dtype=np.float64).reshape(len(c), -1).mean(axis=1)
    return np.exp(-w) / (np.exp(-c) + EPS)


def forget_quality(scores: Sequence[float], reference_scores: Sequence[float]) -> float:
    """Two-sample Kolmogorov-Smirnov p-value between per-item truth ratios of the unlearned
    model and of the retain-only model (TOFU's forget quality; 1 = indistinguishable)."""
    from scipy.stats import ks_2samp

    if len(scores) == 0 or len(reference_scores) == 0:
        raise ObliviateError("forget quality needs truth ratios of both models")
    return float(ks_2samp(np.asarray(scores), np.asarray(reference_scores)).pvalue)


def rouge_l_recall(generation: str, ground_truth: str) -> float:
    """ROUGE-L recall of the generation against the ground truth (``rouge_score``, stemmer on,
    as TOFU and OpenUnlearning call it)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(scorer.score(ground_truth, generation)["rougeL"].recall)


def min_k(logp: ArrayLike, k: float = 0.4) -> float:
    """Min-K% score: minus the mean of the lowest ``k`` fraction of token log-probabilities
    (at least one token); higher = less likely a member."""
    lp = np.sort(np.asarray(logp, dtype=np.float64))
    n = max(1, int(len(lp) * k))
    return float(-np.mean(lp[:n]))


def min_k_plus_plus(logp: ArrayLike, mu: ArrayLike, sigma: ArrayLike, k: float = 0.4) -> float:
    """Min-K%++ score: minus the mean of the lowest ``k`` fraction of ``(logp - mu) / sigma``."""
    z = (np.asarray(logp) - np.asarray(mu)) / (np.asarray(sigma) + EPS)
    return min_k(z, k)


def zlib_score(avg_nll: float, text: str) -> float:
    """LOSS divided by the zlib-compressed length of the text in bytes."""
    return float(avg_nll / len(zlib.compress(text.encode("utf-8"))))


def mia_auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC AUC of telling members from non-members by a score that is higher for non-members
    (OpenUnlearning: label 0 = forget/member, 1 = holdout); 0.5 = no leak, 1 = members exposed."""
    from sklearn.metrics import roc_auc_score

    m, h = list(member_scores), list(nonmember_scores)
    if not m or not h:
        raise ObliviateError("a membership AUC needs member and non-member scores")
    return float(roc_auc_score([0] * len(m) + [1] * len(h), m + h))


def privleak(auc: float, reference_auc: float) -> float:
    """MUSE's PrivLeak: ``(auc - reference_auc) / reference_auc x 100`` (0 = like retraining)."""
    return float((auc - reference_auc) / (reference_auc + EPS) * 100.0)


def extraction_strength(argmax: Sequence[int], target: Sequence[int]) -> float:
    """``1 - k / n`` for the smallest ``k`` such that the teacher-forced greedy tokens equal the
    target from position ``k`` on (OpenUnlearning's ``extraction_strength``; as there, a
    sequence whose last token is wrong scores ``1 / n``, the loop's last ``k``)."""
    a, t = np.asarray(argmax), np.asarray(target)
    n = len(t)
    k = 0
    for k in range(n):  # noqa: B007 - k is the result, as in OpenUnlearning's loop
        if np.array_equal(a[k:], t[k:]):
            break
    return 1.0 - k / n


def exact_memorization(argmax: Sequence[int], target: Sequence[int]) -> float:
    """Fraction of answer tokens the model predicts exactly under teacher forcing."""
    return float(np.mean(np.asarray(argmax) == np.asarray(target)))


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean of the utility components (0 when any is 0)."""
    v = np.asarray(values, dtype=np.float64)
    if np.any(v <= 0):
        return 0.0
    return float(len(v) / np.sum(1.0 / v))


# ---- running a model over the splits -------------------------------------------------------
def _avg_nll(s: TokenScores) -> float:
    return float(-np.mean(s.logp))


def _metric(values: dict[str, dict[str, Any]], agg: Any) -> dict[str, Any]:
    return {"agg_value": float(agg), "value_by_index": values}


def _split_metrics(
    scorer: Scorer,
    lm: LM,
    items: Sequence[QAItem],
    prefix: str,
    *,
    generate: bool,
    max_new_tokens: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, raw) for one split: probability, ROUGE, truth ratios, value accuracy."""
    enc = [encode_pair(lm, it.question, it.answer, it.id) for it in items]
    answer = scorer.score(enc)
    para = scorer.score(
        [encode_pair(lm, it.question, it.paraphrased_answer or it.answer, it.id) for it in items]
    )
    n_p = min(len(it.perturbed_answers) for it in items)
    pert = [
        scorer.score([encode_pair(lm, it.question, it.perturbed_answers[j], it.id) for it in items])
        for j in range(n_p)
    ]
    same = [
        scorer.score(
            [encode_pair(lm, it.question, it.same_wording_perturbed[j], it.id) for it in items]
        )
        for j in range(n_p)
    ]
    keys = [str(it.id) for it in items]
    out: dict[str, Any] = {}
    prob = {
        k: {"prob": math.exp(-_avg_nll(s)), "avg_loss": _avg_nll(s)}
        for k, s in zip(keys, answer, strict=True)
    }
    out[f"{prefix}_Q_A_Prob"] = _metric(prob, np.mean([v["prob"] for v in prob.values()]))
    raw: dict[str, Any] = {"answer": answer, "keys": keys}
    if n_p:
        tr = truth_ratio(
            [_avg_nll(s) for s in para],
            [[_avg_nll(p[i]) for p in pert] for i in range(len(items))],
        )
        tr_same = truth_ratio(
            [_avg_nll(s) for s in answer],
            [[_avg_nll(p[i]) for p in same] for i in range(len(items))],
        )
        raw["truth_ratio"], raw["truth_ratio_same"] = tr, tr_same
        by = {k: {"score": float(v)} for k, v in zip(keys, tr, strict=True)}
        by_same = {k: {"score": float(v)} for k, v in zip(keys, tr_same, strict=True)}
        for name, fn in AGGREGATORS.items():
            out[f"{prefix}_truth_ratio_{name}"] = _metric(by, fn(tr))
            out[f"{prefix}_same_wording_truth_ratio_{name}"] = _metric(by_same, fn(tr_same))
        # probability of the true answer normalised over the options (TOFU's world-facts prob)
        opts = np.stack(
            [np.array([math.exp(-_avg_nll(s)) for s in answer])]
            + [np.array([math.exp(-_avg_nll(p[i])) for i in range(len(items))]) for p in same]
        )
        norm = opts[0] / opts.sum(0)
        out[f"{prefix}_Q_A_Prob_normalised"] = _metric(
            {k: {"prob": float(v)} for k, v in zip(keys, norm, strict=True)}, norm.mean()
        )
    if generate:
        rouge, acc = {}, {}
        generated = scorer.generate([e.ids[: e.n_prompt] for e in enc], max_new_tokens)
        for it, gen_ids, k in zip(items, generated, keys, strict=True):
            text = lm.tokenizer.decode(gen_ids, skip_special_tokens=True).strip()
            rouge[k] = {
                "rougeL_recall": rouge_l_recall(text, it.answer),
                "input": it.question,
                "ground_truth": it.answer,
                "generation": text,
            }
            hit = bool(it.value) and it.value.lower() in text.lower()
            acc[k] = {"score": float(hit)}
        out[f"{prefix}_Q_A_ROUGE"] = _metric(
            rouge, np.mean([v["rougeL_recall"] for v in rouge.values()])
        )
        out[f"{prefix}_value_accuracy"] = _metric(acc, np.mean([v["score"] for v in acc.values()]))
    return out, raw


def _mia(
    lm: LM,
    forget: Sequence[QAItem],
    f_scores: list[TokenScores],
    holdout: Sequence[QAItem],
    h_scores: list[TokenScores],
    k: float,
) -> dict[str, Any]:
    def scores(items: Sequence[QAItem], ts: list[TokenScores]) -> dict[str, list[float]]:
        return {
            "mia_loss": [_avg_nll(s) for s in ts],
            "mia_zlib": [
                zlib_score(_avg_nll(s), it.answer) for it, s in zip(items, ts, strict=True)
            ],
            "mia_min_k": [min_k(s.logp, k) for s in ts],
            "mia_min_k_plus_plus": [min_k_plus_plus(s.logp, s.mu, s.sigma, k) for s in ts],
        }

    f, h = scores(forget, f_scores), scores(holdout, h_scores)
    out: dict[str, Any] = {}
    for name in f:
        by = {str(it.id): {"score": v} for it, v in zip(forget, f[name], strict=True)}
        by |= {str(it.id): {"score": v} for it, v in zip(holdout, h[name], strict=True)}
        out[name] = _metric(by, mia_auc(f[name], h[name]))
    return out


def evaluate(
    scorer: Scorer,
    lm: LM,
    data: QAData,
    *,
    reference: dict[str, Any] | None = None,
    generate: bool = True,
    max_new_tokens: int | None = None,
    min_k_fraction: float = 0.4,
    max_retain: int | None = None,
) -> dict[str, Any]:
    """Every metric of ``scorer`` on ``data`` (splits forget, retain, holdout, world).

    Args:
        scorer: the model (``LMScorer(lm)``) or an ensemble.
        lm: supplies the tokenizer (and eos id) for encoding.
        reference: the retain-only model's result of this function; gives ``forget_quality``
            (KS p-value on the forget truth ratios; also on the same-wording ones) and
            ``privleak`` (against its Min-K% AUC).
        generate: run greedy generation (ROUGE-L, value accuracy); off saves most of the time.
        max_new_tokens: generation length (default: longest answer in tokens + 4).
        max_retain: evaluate only the first N retain items (cost control; default all).

    Returns:
        ``{metric_name: {"agg_value", "value_by_index"}}`` plus ``forget_quality``,
        ``model_utility``, ``privleak`` and ``n_forget``.
    """
    forget, retain = data.split("forget"), data.split("retain")[:max_retain]
    holdout, world = data.split("holdout"), data.split("world")
    if not forget:
        raise ObliviateError("the data has no 'forget' items to evaluate")
    if max_new_tokens is None:
        max_new_tokens = 4 + max(
            len(lm.tokenizer(" " + it.answer, add_special_tokens=False)["input_ids"])
            for it in data.items
        )
    out: dict[str, Any] = {}
    raws = {}
    for name, items in (("forget", forget), ("retain", retain), ("wf", world)):
        if items:
            m, raws[name] = _split_metrics(
                scorer, lm, items, name, generate=generate, max_new_tokens=max_new_tokens
            )
            out |= m
    f_raw = raws["forget"]
    out["extraction_strength"] = _metric(
        {
            k: {"score": extraction_strength(s.argmax, s.target)}
            for k, s in zip(f_raw["keys"], f_raw["answer"], strict=True)
        },
        np.mean([extraction_strength(s.argmax, s.target) for s in f_raw["answer"]]),
    )
    out["exact_memorization"] = _metric(
        {
            k: {"score": exact_memorization(s.argmax, s.target)}
            for k, s in zip(f_raw["keys"], f_raw["answer"], strict=True)
        },
        np.mean([exact_memorization(s.argmax, s.target) for s in f_raw["answer"]]),
    )
    if holdout:
        h_scores = scorer.score([encode_pair(lm, it.question, it.answer, it.id) for it in holdout])
        out |= _mia(lm, forget, f_raw["answer"], holdout, h_scores, min_k_fraction)
    parts = []
    if "retain" in raws:
        parts += [out["retain_Q_A_Prob"]["agg_value"]]
        parts += [out["retain_Q_A_ROUGE"]["agg_value"]] if generate else []
        parts += [out.get("retain_truth_ratio_true_better", {}).get("agg_value", 1.0)]
    if "wf" in raws:
        parts += [out.get("wf_Q_A_Prob_normalised", out["wf_Q_A_Prob"])["agg_value"]]
        parts += [out["wf_Q_A_ROUGE"]["agg_value"]] if generate else []
        parts += [out.get("wf_truth_ratio_true_better", {}).get("agg_value", 1.0)]
    out["model_utility"] = {"agg_value": model_utility(parts) if parts else float("nan")}
    out["n_forget"] = len(forget)
    return out if reference is None else against(out, reference)


def against(result: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``result`` plus the figures measured against the retain-only model's ``reference``:
    ``forget_quality`` (KS p-value on the forget truth ratios), ``forget_quality_same_wording``
    and ``privleak`` (Min-K% AUC vs the reference's)."""
    out = dict(result)
    for key, name in (
        ("forget_quality", "forget_truth_ratio_closer_to_1_better"),
        ("forget_quality_same_wording", "forget_same_wording_truth_ratio_closer_to_1_better"),
    ):
        if name in out and name in reference:
            mine = [v["score"] for v in out[name]["value_by_index"].values()]
            ref = [v["score"] for v in reference[name]["value_by_index"].values()]
            out[key] = {"agg_value": forget_quality(mine, ref)}
    if "mia_min_k" in out and "mia_min_k" in reference:
        out["privleak"] = {
            "agg_value": privleak(
                out["mia_min_k"]["agg_value"], reference["mia_min_k"]["agg_value"]
            )
        }
    return out


def summary(result: dict[str, Any]) -> dict[str, float]:
    """Flat ``{name: agg_value}`` of an :func:`evaluate` result."""
    return {
        k: float(v["agg_value"])
        for k, v in result.items()
        if isinstance(v, dict) and "agg_value" in v
    }
