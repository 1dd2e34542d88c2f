"""Run kind ``llm``: unlearn facts from a causal language model, measured against the oracle.

One grid point = one method on one model and seed: fine-tune the target on fictitious-people QA
(or the user's JSONL), retrain the retain-only oracle, unlearn with ``method``, measure with
OpenUnlearning's metrics (:mod:`obliviate.llm.metrics`). The result dict:

``metrics``       flat ``{name: agg_value}`` of the unlearned model (forget quality, privleak
                  and the rest measured against the oracle);
``target``, ``retrain``  the same for the fine-tuned target and the oracle;
``seconds``       the method's wall time; ``timing`` every phase's;
``spec``, ``provenance``.

Needs the ``llm`` extra (transformers, peft, rouge-score); importing this module does not
import transformers (the models are built inside :func:`run`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from obliviate.errors import ObliviateError
from obliviate.experiments import _spec as S
from obliviate.provenance import provenance

SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("metrics.forget_Q_A_Prob", "forget prob"),
    ("metrics.forget_value_accuracy", "forget value acc"),
    ("metrics.forget_quality", "forget quality"),
    ("metrics.forget_quality_same_wording", "FQ same wording"),
    ("metrics.privleak", "privleak"),
    ("metrics.retain_Q_A_Prob", "retain prob"),
    ("metrics.model_utility", "model utility"),
    ("retrain.forget_Q_A_Prob", "oracle forget prob"),
    ("seconds", "s"),
)
"""The figures ``obliviate report`` / ``compare`` show: (dotted result key, column name)."""

METHOD_KEYS: tuple[str, ...] = ("model", "method")
METHOD_FIELD: str | None = "method"
SHARED_MODELS_IGNORE: tuple[str, ...] | None = None


def label(run: Mapping[str, Any]) -> str:
    params = ",".join(f"{k}={v}" for k, v in sorted(run.get("params", {}).items()))
    model = run.get("model", "tiny")  # a spec block may leave the model at its default
    return f"{run['method']}{'(' + params + ')' if params else ''} {model}"


def _method(name: str, value: Any) -> None:
    from obliviate.llm.methods import REGISTRY

    if not isinstance(value, str) or value not in REGISTRY:
        raise ObliviateError(f"{name}: unknown method {value!r}; valid: {', '.join(REGISTRY)}")


def _mode(name: str, value: Any) -> None:
    if value not in ("top", "lora", "full"):
        raise ObliviateError(f"{name} must be top, lora or full, got {value!r}")


@dataclass(frozen=True)
class LLMRunSpec:
    """One LLM unlearning run; the fields mirror :class:`obliviate.llm.run.LLMSpec` (see there),
    with one ``method`` (and its ``params``) per grid point."""

    method: str = S.option("grad_diff", check=_method, alias="methods", required=True)
    params: Mapping[str, Any] = S.option(default_factory=dict, check=S.table)
    model: str = S.option("tiny", alias="models")
    mode: str = S.option("full", check=_mode)
    top_k: int = S.option(1, check=S.positive_int)
    n_people: int = S.option(10, check=S.positive_int)
    n_attributes: int = S.option(3, check=S.positive_int)
    n_forget: int = S.option(2, check=S.positive_int)
    n_holdout: int = S.option(2, check=S.nonnegative_int)
    n_world: int = S.option(6, check=S.nonnegative_int)
    data_seed: int = S.option(0, check=S.any_int)
    data_file: str | None = S.option(None)
    n_epochs: int = S.option(40, check=S.positive_int)
    lr: float = S.option(3e-3, check=S.positive_number)
    batch_size: int = S.option(8, check=S.positive_int)
    unlearn_epochs: int = S.option(5, check=S.positive_int)
    unlearn_lr: float | None = S.option(None, check=S.positive_number)
    seed: int = S.option(0, check=S.any_int, alias="seeds")
    device: str = S.option("cpu")
    generate: bool = S.option(True)
    max_retain: int | None = S.option(None, check=S.positive_int)

    def __post_init__(self) -> None:
        S.validate(self)

    def to_dict(self) -> dict[str, Any]:
        return S.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LLMRunSpec:
        return S.from_dict(cls, data, "llm")


Spec = LLMRunSpec


def run(spec: LLMRunSpec) -> dict[str, Any]:
    """Target, oracle and ``spec.method`` on one seed; the result dict of the module docstring."""
    from obliviate.llm.run import LLMSpec
    from obliviate.llm.run import run as run_llm

    methods = () if spec.method == "retrain" else (spec.method,)
    inner = LLMSpec(
        model=spec.model,
        methods=methods,
        method_params={spec.method: S.constructor_params(spec.params)} if spec.params else {},
        mode=spec.mode,
        top_k=spec.top_k,
        n_people=spec.n_people,
        n_attributes=spec.n_attributes,
        n_forget=spec.n_forget,
        n_holdout=spec.n_holdout,
        n_world=spec.n_world,
        data_seed=spec.data_seed,
        data_file=spec.data_file,
        n_epochs=spec.n_epochs,
        lr=spec.lr,
        batch_size=spec.batch_size,
        unlearn_epochs=spec.unlearn_epochs,
        unlearn_lr=spec.unlearn_lr,
        seed=spec.seed,
        device=spec.device,
        generate=spec.generate,
        max_retain=spec.max_retain,
    )
    out = run_llm(inner)
    rows = {r["method"]: r for r in out["rows"]}
    mine = rows[spec.method]

    def flat(row: dict[str, Any]) -> dict[str, float]:
        return {k: v for k, v in row.items() if k not in ("method", "seed")}

    return {
        "metrics": flat(mine),
        "target": flat(rows["target"]),
        "retrain": flat(rows["retrain"]),
        "seconds": mine["seconds"],
        "timing": out["timing"],
        "spec": spec.to_dict(),
        "provenance": provenance(seed=spec.seed),
    }


run_llm_kind = run

__all__ = ["METHOD_FIELD", "METHOD_KEYS", "SUMMARY_COLUMNS", "LLMRunSpec", "Spec", "label", "run"]
