"""One LLM unlearning comparison: fine-tune a target, retrain the oracle, run methods, measure.

``run(LLMSpec(...))`` returns ``{"spec", "rows", "results", "timing"}``: ``rows`` are flat
dicts (columns :data:`SUMMARY_COLUMNS` and more), ``results`` the full OpenUnlearning-style
metric JSON per model (``target``, ``retrain``, each method).

The fine-tuning set is the ``forget`` + ``retain`` items, plus the ``world`` facts when
``replay_world`` (the base's general knowledge, replayed so that a tiny model trained from
scratch knows them; a pre-trained model already does). ``holdout`` people are never trained on.
The tiny model can also be pre-trained (``pretrain_epochs``) on facts about other invented
people, which gives frozen bottom blocks something to offer (sharded adapters).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from obliviate.errors import ObliviateError
from obliviate.llm.data import QAData, fictitious_qa, load_jsonl, resolve_request
from obliviate.llm.methods import REGISTRY
from obliviate.llm.metrics import LMScorer, against, evaluate, summary
from obliviate.llm.models import (
    DTYPES,
    LM,
    PrefixCache,
    blocks,
    check_device,
    load_lm,
    make_trainable,
    tiny_gpt2,
    word_tokenizer,
)
from obliviate.llm.train import encode, fine_tune

SUMMARY_COLUMNS: tuple[str, ...] = (
    "method",
    "seed",
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    "forget_value_accuracy",
    "forget_truth_ratio_closer_to_1_better",
    "forget_quality",
    "forget_quality_same_wording",
    "extraction_strength",
    "privleak",
    "retain_Q_A_Prob",
    "retain_value_accuracy",
    "model_utility",
    "seconds",
)
DEFAULT_METHODS = ("grad_ascent", "grad_diff", "npo", "simnpo", "rmu", "idk_dpo")
TINY_UNLEARN_LR: dict[str, float] = {
    "grad_ascent": 3e-4,
    "grad_diff": 1e-3,
    "npo": 3e-4,
    "simnpo": 3e-3,
    "rmu": 1e-3,
    "idk_dpo": 3e-3,
}
"""Unlearning lr per method for the tiny model, chosen on the validation data (``data_seed=1``,
never the reported ``data_seed=0``) by ``benchmarks/llm_validate.py``: the largest of 3e-4,
1e-3, 3e-3, 1e-2 that keeps the retain probability >= 0.5 x the target's."""


@dataclass(frozen=True)
class LLMSpec:
    """Every setting of one comparison (CleanRL style: one dataclass, all defaulted).

    Model: ``model`` is ``tiny`` (a GPT-2 of ``tiny_layers`` blocks x ``tiny_width``, built and
    pre-trained here), ``smollm2-135m`` or a local HF folder; ``mode`` / ``top_k`` /
    ``lora_rank`` choose what fine-tunes (:func:`obliviate.llm.models.make_trainable`).
    Data: the generator's sizes, or ``data_file`` (JSONL); ``forget_ids`` / ``forget_entities``
    override the forget split. Fine-tune: ``n_epochs``, ``lr``, ``batch_size``. Unlearning:
    ``unlearn_epochs``, ``unlearn_lr`` (None: :data:`TINY_UNLEARN_LR` for the tiny model, each
    method's own default otherwise), ``unlearn_batch_size`` for every method, and
    ``method_params`` (method -> keyword overrides). ``seed`` drives everything.
    """

    model: str = "tiny"
    methods: tuple[str, ...] = DEFAULT_METHODS
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    mode: str = "full"
    top_k: int = 1
    lora_rank: int = 8
    n_people: int = 10
    n_attributes: int = 3
    n_forget: int = 2
    n_holdout: int = 2
    n_world: int = 6
    data_seed: int = 0
    data_file: str | None = None
    forget_ids: tuple[int, ...] = ()
    forget_entities: tuple[str, ...] = ()
    n_epochs: int = 40
    lr: float = 3e-3
    batch_size: int = 8
    unlearn_epochs: int = 5
    unlearn_lr: float | None = None
    unlearn_batch_size: int = 4
    tiny_layers: int = 2
    tiny_width: int = 64
    pretrain_epochs: int = 0
    replay_world: bool = True
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    generate: bool = True
    max_retain: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ObliviateError(f"dtype {self.dtype!r}: choose {', '.join(DTYPES)}")
        if self.model == "tiny" and self.dtype != "float32":
            raise ObliviateError(
                f"dtype {self.dtype!r}: the tiny model is trained from scratch in float32 only; "
                "drop --dtype or give --model PATH / smollm2-135m"
            )
        unknown = [m for m in self.methods if m not in REGISTRY]
        if unknown:
            raise ObliviateError(f"unknown method(s) {unknown}; choose from {sorted(REGISTRY)}")
        bad = [m for m in self.method_params if m not in REGISTRY]
        if bad:
            raise ObliviateError(f"method_params names unknown method(s) {bad}")


def build_data(spec: LLMSpec) -> QAData:
    """The spec's QA data, with the forget split replaced when the spec names ids/entities."""
    data = (
        load_jsonl(spec.data_file)
        if spec.data_file
        else fictitious_qa(
            n_people=spec.n_people,
            n_attributes=spec.n_attributes,
            n_forget=spec.n_forget,
            n_holdout=spec.n_holdout,
            n_world=spec.n_world,
            seed=spec.data_seed,
        )
    )
    if spec.forget_ids or spec.forget_entities:
        chosen = set(
            resolve_request(data, ids=list(spec.forget_ids), entities=list(spec.forget_entities))
        )
        items = []
        for it in data.items:
            if it.id in chosen:
                items.append(dataclasses.replace(it, split="forget"))
            elif it.split == "forget":
                items.append(dataclasses.replace(it, split="retain"))
            else:
                items.append(it)
        bad = [it.id for it in items if it.id in chosen and it.split != "forget"]
        if bad:  # pragma: no cover - replace() above always sets it
            raise ObliviateError(f"could not mark {bad} as forget")
        data = QAData(tuple(items), name=data.name, meta=data.meta)
    return data


def build_base(spec: LLMSpec, data: QAData) -> LM:
    """The model before fine-tuning, with its trainable part chosen (``spec.mode``)."""
    if spec.model == "tiny":
        pre = fictitious_qa(
            n_people=max(6, spec.n_people),
            n_attributes=spec.n_attributes,
            n_forget=1,
            n_holdout=0,
            n_world=0,
            seed=spec.data_seed + 10_007,
        )
        tok = word_tokenizer(data.texts() + pre.texts())
        lm = tiny_gpt2(tok, n_layer=spec.tiny_layers, n_embd=spec.tiny_width, seed=spec.seed)
        lm.device = check_device(spec.device)
        lm.model.to(lm.device)
        make_trainable(lm, mode="full")
        corpus = encode(lm, list(pre.items) + list(data.split("world")))
        if spec.pretrain_epochs:
            fine_tune(
                lm,
                corpus,
                n_epochs=spec.pretrain_epochs,
                lr=spec.lr,
                batch_size=spec.batch_size,
                seed=spec.seed,
            )
    else:
        lm = load_lm(spec.model, device=spec.device, dtype=spec.dtype)
    make_trainable(lm, mode=spec.mode, top_k=spec.top_k, lora_rank=spec.lora_rank, seed=spec.seed)
    n_blocks = len(blocks(lm.model))
    if spec.mode == "top" and spec.top_k < n_blocks:
        lm.prefix = PrefixCache(n_blocks - spec.top_k)
    return lm


def make_method(spec: LLMSpec, name: str) -> Any:
    if name == "retrain":
        params: dict[str, Any] = {
            "n_epochs": spec.n_epochs,
            "lr": spec.lr,
            "batch_size": spec.batch_size,
        }
    else:
        params = {"n_epochs": spec.unlearn_epochs, "batch_size": spec.unlearn_batch_size}
        if spec.unlearn_lr is not None:
            params["lr"] = spec.unlearn_lr
        elif spec.model == "tiny":
            params["lr"] = TINY_UNLEARN_LR[name]
    params |= dict(spec.method_params.get(name, {}))
    params["seed"] = spec.seed
    try:
        return REGISTRY[name](**params)
    except TypeError as exc:
        raise ObliviateError(f"method {name!r}: bad parameters {params}: {exc}") from None


def check_context(lm: LM, seqs: list[Any]) -> None:
    """Refuse (one line, before any training) sequences longer than the model's context
    (``n_positions`` / ``max_position_embeddings`` of its config): the position embedding would
    fail mid-run with a bare ``IndexError``."""
    config = getattr(lm.model, "config", None)
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    longest = max((len(s.ids) for s in seqs), default=0)
    if isinstance(limit, int) and longest > limit:
        raise ObliviateError(
            f"the longest question + answer is {longest} tokens but the model's context is "
            f"{limit} positions (its config's n_positions / max_position_embeddings); use a "
            "model with a longer context"
        )


def run(spec: LLMSpec) -> dict[str, Any]:
    """Fine-tune the target, retrain the oracle, unlearn with each method, evaluate all."""
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    data = build_data(spec)
    base = build_base(spec, data)
    timing["base_seconds"] = time.perf_counter() - t0
    kept = list(data.split("retain")) + (list(data.split("world")) if spec.replay_world else [])
    train_items = list(data.split("forget")) + kept
    forget = encode(base, data.split("forget"))
    retain = encode(base, kept)
    check_context(base, forget + retain + encode(base, data.split("holdout")))
    t = time.perf_counter()
    target = LM(copy.deepcopy(base.model), base.tokenizer, base.device, base.prefix)
    fine_tune(
        target,
        encode(base, train_items),
        n_epochs=spec.n_epochs,
        lr=spec.lr,
        batch_size=spec.batch_size,
        seed=spec.seed,
    )
    timing["target_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    oracle = make_method(spec, "retrain").unlearn(target, forget, retain, base=base)
    timing["retrain_seconds"] = time.perf_counter() - t

    def measure(lm: LM, reference: dict[str, Any] | None) -> dict[str, Any]:
        t = time.perf_counter()
        out = evaluate(
            LMScorer(lm),
            lm,
            data,
            reference=reference,
            generate=spec.generate,
            max_retain=spec.max_retain,
        )
        timing.setdefault("eval_seconds", 0.0)
        timing["eval_seconds"] += time.perf_counter() - t
        return out

    reference = measure(oracle, None)
    results = {"retrain": against(reference, reference), "target": measure(target, reference)}
    seconds = {"retrain": timing["retrain_seconds"], "target": timing["target_seconds"]}
    for name in spec.methods:
        t = time.perf_counter()
        model = make_method(spec, name).unlearn(target, forget, retain, base=base)
        seconds[name] = time.perf_counter() - t
        results[name] = measure(model, reference)
        del model
    rows = []
    for name, res in results.items():
        row: dict[str, Any] = {"method": name, "seed": spec.seed, "seconds": seconds[name]}
        row |= summary(res)
        rows.append(row)
    timing["total_seconds"] = time.perf_counter() - t0
    if base.prefix is not None:
        timing["prefix_computed"] = base.prefix.n_computed
        timing["prefix_reused"] = base.prefix.n_reused
    return {"spec": asdict(spec), "rows": rows, "results": results, "timing": timing}
