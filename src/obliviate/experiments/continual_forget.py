"""Run kind ``continual_forget``: a sequence of class-forget requests on one model.

Continual forgetting (Zhao et al., CVPR 2024): requests ``class:c_1, ..., class:c_T`` arrive one
after another; request ``t`` is applied to the model request ``t-1`` returned, with the training
rows of the classes not yet forgotten as its retain set (the rows of ``c_1 .. c_{t-1}`` are gone:
they are neither forgotten again nor retained). Any registered unlearner can serve: GS-LoRA /
GS-LoRA++ (built for it) or a single-request method simply applied again at each request.

After every request the run measures, on the test split (and on the training rows):

``forgotten_acc``   accuracy on the rows of every class forgotten so far (lower is better;
                    the oracle's is 0 on a class it never saw);
``per_class``       accuracy on each forgotten class;
``remaining_acc``   accuracy on the rows of the classes not yet forgotten;
``oracle_*``        the same for the oracle: the recipe retrained from scratch on the training
                    rows of the remaining classes (cached like the forget kind's oracles);
``forget_train_acc``, ``remaining_train_acc`` (and the oracle's): the same on training rows;
``seconds``         the request's unlearning wall time (``oracle_seconds``: the retraining's);
``learned``         the method's JSON-able learned figures (GS-LoRA: ``group_norms_``,
                    ``zeroed_groups_``).

Before any request, record 0 is the original model. The original and the oracles come from
:func:`obliviate.experiments.forget.trained` (the same recipe and cache as ``obliviate forget``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from obliviate.data.datasets import load_dataset
from obliviate.errors import ObliviateError
from obliviate.experiments import _spec as S
from obliviate.experiments.forget import ForgetSpec, learned_state, make_method, trained
from obliviate.provenance import provenance
from obliviate.training import accuracy
from obliviate.training import precision as precision_scope
from obliviate.unlearning.base import ForgetRequest

SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("final.forgotten_acc", "forgotten acc"),
    ("final.oracle_forgotten_acc", "oracle forgotten"),
    ("final.remaining_acc", "remaining acc"),
    ("final.oracle_remaining_acc", "oracle remaining"),
    ("seconds", "s"),
)
"""The figures ``obliviate report`` / ``compare`` show (after the last request)."""

METHOD_KEYS: tuple[str, ...] = ("dataset", "sequence", "method")
METHOD_FIELD = "method"
SHARED_MODELS_IGNORE: tuple[str, ...] | None = ("method", "params")

RECORD_KEYS = (
    "forgotten_acc",
    "oracle_forgotten_acc",
    "remaining_acc",
    "oracle_remaining_acc",
    "forget_train_acc",
    "oracle_forget_train_acc",
    "remaining_train_acc",
    "oracle_remaining_train_acc",
    "seconds",
)
"""The per-request figures :func:`aggregate` summarises over seeds."""


def label(run: Mapping[str, Any]) -> str:
    return f"{run['method']} {run['dataset']} [{run['sequence']}]"


def parse_sequence(text: Any, where: str = "sequence") -> tuple[int, ...]:
    """``"class:1,class:3"`` -> ``(1, 3)``. Raises :class:`ObliviateError` on anything but a
    non-empty comma-separated list of distinct ``class:C`` requests (C >= 0)."""
    if not isinstance(text, str) or not text.strip():
        raise ObliviateError(
            f"{where} must be comma-separated class requests, e.g. 'class:1,class:3', got {text!r}"
        )
    classes = []
    for part in (p.strip() for p in text.split(",")):
        head, _, tail = part.partition(":")
        if head != "class" or not tail.isdigit():
            raise ObliviateError(
                f"{where}: {part!r} is not a class request; write class:C (e.g. 'class:1,class:3')"
            )
        classes.append(int(tail))
    if len(set(classes)) != len(classes):
        raise ObliviateError(f"{where} forgets a class twice: {text!r}; list each class once")
    return tuple(classes)


def _sequence(name: str, value: Any) -> None:
    parse_sequence(value, name)


@dataclass(frozen=True)
class ContinualForgetSpec:
    """One continual-forgetting run.

    ``dataset``; ``sequence``: the requests in order, ``"class:1,class:3,..."``; ``method``: a key
    of ``UNLEARNERS`` applied at every request, ``params`` its hyperparameters (``seed`` defaults
    to the run seed); ``seed``: drives the recipe (original and oracles) and the method;
    ``model`` ... ``weight_decay``: the recipe (``None``: the dataset's forget recipe, as
    :class:`~obliviate.experiments.forget.ForgetSpec`); ``device``, ``precision``; ``cache_dir``:
    where trained originals/oracles are kept; ``data_dir``, ``limit``: for ``load_dataset``.
    Bad values raise :class:`~obliviate.errors.ObliviateError` naming the field.
    """

    dataset: str = S.option("digits", check=S.dataset, alias="datasets", required=True)
    sequence: str = S.option(
        "class:1,class:3,class:5,class:7", check=_sequence, alias="sequences", required=True
    )
    method: str = S.option("gs_lora", check=S.unlearner, alias="methods", required=True)
    params: Mapping[str, Any] = S.option(default_factory=dict, check=S.table)
    seed: int = S.option(0, check=S.any_int, alias="seeds")
    device: str = S.option("cpu", check=S.device)
    precision: str = S.option("fp32", check=S.precision)
    model: str | None = S.option(None, check=S.model)
    hidden: tuple[int, ...] | None = S.option(None, check=S.widths)
    n_epochs: int | None = S.option(None, check=S.positive_int)
    batch_size: int | None = S.option(None, check=S.positive_int)
    lr: float | None = S.option(None, check=S.positive_number)
    optimizer: str | None = S.option(None, check=S.optimizer)
    momentum: float | None = S.option(None, check=S.momentum)
    weight_decay: float | None = S.option(None, check=S.nonnegative_number)
    cache_dir: str | None = S.option(None)
    data_dir: str | None = S.option(None)
    limit: int | None = S.option(None, check=S.positive_int)

    def __post_init__(self) -> None:
        S.validate(self)
        self.forget_spec()  # validates the method's params and the recipe fields

    def forget_spec(self) -> Any:
        """The :class:`~obliviate.experiments.forget.ForgetSpec` of the first request (its
        recipe, method and params are this run's)."""
        first = parse_sequence(self.sequence)[0]
        return ForgetSpec(
            dataset=self.dataset,
            forget=f"class:{first}",
            method=self.method,
            seed=self.seed,
            device=self.device,
            precision=self.precision,
            params=self.params,
            model=self.model,
            hidden=self.hidden,
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            cache_dir=self.cache_dir,
            data_dir=self.data_dir,
            limit=self.limit,
        )

    def to_dict(self) -> dict[str, Any]:
        return S.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContinualForgetSpec:
        return S.from_dict(cls, data, "continual_forget")


Spec = ContinualForgetSpec


def _acc(model: Any, data: Any) -> float | None:
    return float(accuracy(model, data)) if len(data) else None


def run(spec: ContinualForgetSpec, *, echo: Any = None) -> dict[str, Any]:
    """Run the sequence (see the module docstring); ``echo(record)`` is called after every
    request. Returns ``{"requests": [record 0 (original), record 1, ...], "final": the last
    record, "seconds": total unlearning seconds, "method", "spec", "provenance"}``.

    Raises :class:`ObliviateError` for a class the dataset does not have or a sequence that
    forgets every class."""
    fs = spec.forget_spec()
    classes = parse_sequence(spec.sequence)
    train, test = load_dataset(spec.dataset, data_dir=spec.data_dir, limit=spec.limit)
    n = train.n_classes
    bad = [c for c in classes if c >= n]
    if bad:
        raise ObliviateError(
            f"sequence: class {bad[0]} is not a class of {spec.dataset} (0..{n - 1})"
        )
    if len(classes) >= n:
        raise ObliviateError(
            f"sequence forgets all {n} classes of {spec.dataset}; leave at least one"
        )
    recipe = fs.resolved_recipe()
    on = {"device": spec.device, "precision": spec.precision}
    original, _, _ = trained(recipe, train, n, spec.cache_dir, "original", **on)

    def rows(data: Any, cls: list[int], inside: bool) -> Any:
        mask = torch.isin(data.y, torch.tensor(cls, dtype=data.y.dtype, device=data.y.device))
        return data.subset(torch.nonzero(mask if inside else ~mask).reshape(-1))

    def record(
        t: int, model: Any, oracle: Any, gone: list[int], seconds: float, osec: float
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"request": t, "forgotten": list(gone)}
        for who, m in (("", model), ("oracle_", oracle)):
            out[f"{who}forgotten_acc"] = _acc(m, rows(test, gone, True)) if gone else None
            out[f"{who}remaining_acc"] = _acc(m, rows(test, gone, False))
            out[f"{who}forget_train_acc"] = _acc(m, rows(train, gone, True)) if gone else None
            out[f"{who}remaining_train_acc"] = _acc(m, rows(train, gone, False))
        out["per_class"] = {str(c): _acc(model, rows(test, [c], True)) for c in gone}
        out["oracle_per_class"] = {str(c): _acc(oracle, rows(test, [c], True)) for c in gone}
        out["seconds"], out["oracle_seconds"] = seconds, osec
        return out

    records = [record(0, original, original, [], 0.0, 0.0)]
    if echo is not None:
        echo(records[0])
    model, total = original, 0.0
    gone: list[int] = []
    for t, c in enumerate(classes, start=1):
        current = rows(train, gone, False)  # the rows not yet forgotten
        ids = current.ids[current.y == c]
        request = ForgetRequest.from_ids(current, ids, recipe)
        method = make_method(fs)
        start = time.perf_counter()
        with precision_scope(spec.precision):
            model = method.unlearn(model, request)
        seconds = time.perf_counter() - start
        total += seconds
        gone.append(c)
        assert request.retain is not None
        oracle, osec, _ = trained(recipe, request.retain, n, spec.cache_dir, "oracle", **on)
        records.append(record(t, model, oracle, gone, seconds, osec))
        records[-1]["learned"] = learned_state(method)  # e.g. GS-LoRA's group norms
        if echo is not None:
            echo(records[-1])
    return {
        "method": spec.method,
        "requests": records,
        "final": records[-1],
        "seconds": total,
        "spec": spec.to_dict(),
        "provenance": provenance(seed=spec.seed, device=spec.device, precision=spec.precision),
    }


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per request: ``{"request", "forgotten", "mean": {key: ...}, "std": {key: ...}}`` of every
    key in :data:`RECORD_KEYS` over ``runs`` (runs of one method over seeds; population std,
    ``None`` where a figure is missing)."""
    import statistics

    if not runs:
        return []
    out = []
    for i, first in enumerate(runs[0]["requests"]):
        mean: dict[str, float | None] = {}
        std: dict[str, float | None] = {}
        for k in RECORD_KEYS:
            vals = [r["requests"][i][k] for r in runs if r["requests"][i][k] is not None]
            mean[k] = statistics.fmean(vals) if vals else None
            std[k] = statistics.pstdev(vals) if len(vals) > 1 else (0.0 if vals else None)
        out.append(
            {"request": first["request"], "forgotten": first["forgotten"], "mean": mean, "std": std}
        )
    return out


__all__ = [
    "RECORD_KEYS",
    "ContinualForgetSpec",
    "aggregate",
    "label",
    "parse_sequence",
    "run",
]
