"""The programmatic entry point of "forget on request": :class:`ForgetSpec` -> :func:`run_forget`.

``run_forget(spec)`` loads the dataset, builds the forget request, trains (or loads from the
cache) the original model and the retrained oracle, runs the unlearning method, evaluates it
against the oracle and returns a JSON-ready dict (issue #4): ``original``, ``oracle``,
``unlearned`` (each ``retain_acc``, ``forget_acc``, ``test_acc``, ``mia_auc``, ``mia``),
``gaps``, ``js_to_oracle``, ``relearn_steps``, ``seconds`` (the method's wall time),
``oracle_seconds`` (retraining's), ``speedup`` (their ratio), the same three in CPU time
(``cpu_seconds``, ``oracle_cpu_seconds``, ``speedup_cpu``: steadier on a shared machine), ``learned`` (the method's learned figures, e.g.
Newton's certificate), ``spec``, ``provenance`` and, with ``quality=N``, ``quality``.

Original and oracle depend only on (dataset, recipe, seed) and (that, forget ids); they are
trained once and reused across methods: in memory within a process, and on disk under
``cache_dir`` (file names are hashes of what determines the weights; writes are atomic; loads
use ``torch.load(weights_only=True)``).

Default recipes (``default_recipe``): on digits an MLP with one hidden layer of 128 units,
Adam (lr 1e-3), batch 32, 30 epochs: the original fits its training set exactly (train accuracy
1.0, test about 0.97), so the forget set is memorised and forgetting it is measurable.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from obliviate._hyper import param_names
from obliviate._rng import derive_seed
from obliviate._validation import check_number
from obliviate.data.dataset import Dataset
from obliviate.data.datasets import load_dataset
from obliviate.data.forget_sets import build_request
from obliviate.models import ModelSpec
from obliviate.provenance import provenance
from obliviate.training import Recipe, TrainConfig
from obliviate.unlearning import unlearner_class
from obliviate.unlearning.base import ForgetRequest
from obliviate.unlearning.evaluate import evaluate_unlearning, forgetting_quality

CACHE_ENV = "OBLIVIATE_CACHE"

_DEFAULTS: dict[str, Recipe] = {
    "digits": Recipe(
        ModelSpec("mlp", (128,)), TrainConfig(n_epochs=30, batch_size=32, lr=1e-3, optimizer="adam")
    ),
    "synthetic": Recipe(
        ModelSpec("mlp", (64,)), TrainConfig(n_epochs=30, batch_size=32, lr=1e-3, optimizer="adam")
    ),
    "mnist1d": Recipe(
        ModelSpec("mlp", (256, 256)),
        TrainConfig(n_epochs=30, batch_size=64, lr=1e-3, optimizer="adam"),
    ),
    "mnist": Recipe(
        ModelSpec("mlp", (256,)), TrainConfig(n_epochs=5, batch_size=128, lr=1e-3, optimizer="adam")
    ),
    "fashion-mnist": Recipe(
        ModelSpec("mlp", (256,)), TrainConfig(n_epochs=5, batch_size=128, lr=1e-3, optimizer="adam")
    ),
}


def default_recipe(dataset: str, seed: int = 0) -> Recipe:
    """The default recipe for ``dataset`` with ``seed`` as both init and data-order seed."""
    base = _DEFAULTS.get(dataset, _DEFAULTS["digits"])
    return seeded(base, seed)


def seeded(recipe: Recipe, seed: int) -> Recipe:
    """``recipe`` with ``seed`` as its model-init seed and its data-order seed."""
    return Recipe(replace(recipe.model, seed=seed), replace(recipe.train, seed=seed))


@dataclass(frozen=True)
class ForgetSpec:
    """Everything that determines one forget run.

    ``dataset``: a dataset name (``load_dataset``); ``forget``: a forget-set spec
    (:mod:`obliviate.data.forget_sets`); ``method``: a key of ``UNLEARNERS``; ``params``: the
    method's hyperparameters (a dict; ``seed`` defaults to the run seed); ``seed``: drives the
    recipe (init, data order), the forget-set draw and the method; ``recipe``: None for
    :func:`default_recipe`; ``n_epochs``: overrides the recipe's epochs; ``quality``: N > 0 adds
    the NeurIPS-2023 forgetting quality over N unlearned vs N oracle models; ``relearn_cap``:
    cap of the relearn attack; ``cache_dir``: where trained originals/oracles are kept (None:
    in memory only); ``data_dir``, ``limit``: passed to ``load_dataset``.
    """

    dataset: str = "digits"
    forget: str = "class:3"
    method: str = "retrain"
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    recipe: Recipe | None = None
    n_epochs: int | None = None
    quality: int = 0
    relearn_cap: int = 200
    cache_dir: str | None = None
    data_dir: str | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        check_number("seed", self.seed, integer=True)
        check_number("quality", self.quality, low=0, integer=True)
        if self.quality == 1:
            raise_quality()
        check_number("relearn_cap", self.relearn_cap, low=0, integer=True)
        if self.n_epochs is not None:
            check_number("n_epochs", self.n_epochs, low=1, integer=True)
        unlearner_class(self.method)  # unknown names list the valid ones

    def resolved_recipe(self) -> Recipe:
        r = default_recipe(self.dataset, self.seed) if self.recipe is None else self.recipe
        if self.n_epochs is not None:
            r = Recipe(r.model, replace(r.train, n_epochs=self.n_epochs))
        return r

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        r = self.resolved_recipe()
        d["recipe"] = {"model": asdict(r.model), "train": r.train.to_dict()}
        d["params"] = dict(self.params)
        return d


def raise_quality() -> None:
    from obliviate.errors import ObliviateError

    raise ObliviateError(
        "quality=1 cannot estimate anything; use quality >= 2 (e.g. 16) or 0 to skip it"
    )


# ---- caching ---------------------------------------------------------------------------------
_MEMO: dict[str, tuple[dict[str, torch.Tensor], float, float]] = {}


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            h.update(p.detach().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:24]


def data_fingerprint(data: Dataset) -> str:
    """A hash of a dataset's rows (features, labels, ids)."""
    return _digest(data.x, data.y, data.ids, data.n_classes)


def _recipe_dict(r: Recipe) -> dict[str, Any]:
    return {"model": asdict(r.model), "train": r.train.to_dict()}


def trained(
    recipe: Recipe, data: Dataset, n_classes: int, cache_dir: str | None, kind: str
) -> tuple[nn.Module, float, float]:
    """``recipe.fit(data)``, reused from memory or ``cache_dir`` when the same recipe was already
    trained on the same rows; returns (model, wall seconds, CPU seconds the training took when it ran)."""
    key = f"{kind}-{_digest(_recipe_dict(recipe), data_fingerprint(data), n_classes, torch.__version__)}"
    model = recipe.build(data.sample_shape, n_classes)
    if key in _MEMO:
        state, seconds, cpu = _MEMO[key]
        model.load_state_dict(state)
        return model.eval(), seconds, cpu
    path = Path(cache_dir).expanduser() / f"{key}.pt" if cache_dir else None
    if path is not None and path.exists():
        blob = torch.load(path, weights_only=True)
        model.load_state_dict(blob["state"])
        seconds = float(blob["seconds"])
        cpu = float(blob.get("cpu_seconds", blob["seconds"]))
    else:
        start, start_cpu = time.perf_counter(), time.process_time()
        model = recipe.fit(data, n_classes=n_classes)
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        if path is not None:
            _atomic_save(
                {
                    "state": model.state_dict(),
                    "seconds": torch.tensor(seconds),
                    "cpu_seconds": torch.tensor(cpu),
                },
                path,
            )
    _MEMO[key] = ({k: v.clone() for k, v in model.state_dict().items()}, seconds, cpu)
    return model.eval(), seconds, cpu


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(obj: Any, path: str | Path) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (temp file + rename)."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.write("\n")
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


# ---- running ---------------------------------------------------------------------------------
@dataclass
class Prepared:
    """The data, request and trained original/oracle of a spec (shared by every method)."""

    train: Dataset
    test: Dataset
    recipe: Recipe
    request: ForgetRequest
    original: nn.Module
    oracle: nn.Module
    original_seconds: float
    oracle_seconds: float
    oracle_cpu_seconds: float


def _data(spec: ForgetSpec) -> tuple[Dataset, Dataset]:
    return load_dataset(spec.dataset, data_dir=spec.data_dir, limit=spec.limit)


def prepare(spec: ForgetSpec, *, data: tuple[Dataset, Dataset] | None = None) -> Prepared:
    """Load data, build the request, train or load the original and the oracle."""
    train, test = data if data is not None else _data(spec)
    recipe = spec.resolved_recipe()
    request = build_request(train, spec.forget, seed=spec.seed, recipe=recipe)
    original, t_orig, c_orig = trained(recipe, train, train.n_classes, spec.cache_dir, "original")
    assert request.retain is not None
    if len(request.forget):
        oracle, t_oracle, c_oracle = trained(
            recipe, request.retain, train.n_classes, spec.cache_dir, "oracle"
        )
    else:
        oracle, t_oracle, c_oracle = original, t_orig, c_orig
    return Prepared(train, test, recipe, request, original, oracle, t_orig, t_oracle, c_oracle)


def make_method(spec: ForgetSpec, seed: int | None = None) -> Any:
    """The unlearner of ``spec`` with its params; ``seed`` (default: the run seed) fills the
    method's ``seed`` hyperparameter unless ``params`` sets it."""
    cls = unlearner_class(spec.method)
    params = dict(spec.params)
    if "seed" in param_names(cls) and "seed" not in params:
        params["seed"] = spec.seed if seed is None else seed
    return cls(**params)


def learned_state(unlearner: Any) -> dict[str, Any]:
    """An unlearner's learned figures (attributes ending in ``_``) that are JSON-friendly."""
    out = {}
    for k, v in vars(unlearner).items():
        if (
            k.endswith("_")
            and not k.startswith("_")
            and isinstance(v, (int, float, str, bool, dict, list))
        ):
            out[k] = v
    return out


def run_forget(spec: ForgetSpec, *, prepared: Prepared | None = None) -> dict[str, Any]:
    """Run one forget experiment (see the module docstring) and return its JSON-ready result."""
    p = prepared if prepared is not None else prepare(spec)
    method = make_method(spec)
    start, start_cpu = time.perf_counter(), time.process_time()
    unlearned = method.unlearn(p.original, p.request)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    result = evaluate_unlearning(
        p.original,
        p.oracle,
        unlearned,
        p.request,
        p.test,
        relearn_cap=spec.relearn_cap,
        seed=spec.seed,
    )
    result.update(
        {
            "method": spec.method,
            "guarantee": type(method).guarantee,
            "n_forget": len(p.request.forget),
            "n_retain": len(p.request.retain) if p.request.retain is not None else None,
            "seconds": seconds,
            "oracle_seconds": p.oracle_seconds,
            "speedup": p.oracle_seconds / seconds if seconds > 0 else float("inf"),
            "cpu_seconds": cpu,
            "oracle_cpu_seconds": p.oracle_cpu_seconds,
            "speedup_cpu": p.oracle_cpu_seconds / cpu if cpu > 0 else float("inf"),
            "learned": learned_state(method),
            "spec": spec.to_dict(),
            "provenance": provenance(seed=spec.seed),
        }
    )
    if spec.quality:
        result["quality"] = quality(spec, p)
    return result


def quality(spec: ForgetSpec, p: Prepared) -> dict[str, Any]:
    """NeurIPS-2023 forgetting quality: ``spec.quality`` originals (seeds derived from the run
    seed) are each unlearned once; their outputs are compared with as many oracles trained with
    the same seeds (paired models: the seed noise both sides share cancels, so exact retraining
    scores F = 1). Deviation from the challenge, which unlearned one fixed original N times
    against N independently retrained models (N = 512)."""
    if len(p.request.forget) == 0:
        return {"F": float("nan"), "score": float("nan"), "n_models": 0, "note": "empty forget set"}
    base = p.recipe
    unlearned, oracles = [], []
    assert p.request.retain is not None
    for i in range(spec.quality):
        s = derive_seed(spec.seed, "quality", i) % (2**31)
        r = seeded(base, s)
        orig, _, _ = trained(r, p.train, p.train.n_classes, spec.cache_dir, "original")
        orc, _, _ = trained(r, p.request.retain, p.train.n_classes, spec.cache_dir, "oracle")
        req = ForgetRequest(
            forget=p.request.forget, retain=p.request.retain, train=p.request.train, recipe=r
        )
        unlearned.append(make_method(spec, seed=s).unlearn(orig, req))
        oracles.append(orc)
    return forgetting_quality(unlearned, oracles, p.request, p.test)


__all__ = [
    "ForgetSpec",
    "Prepared",
    "default_recipe",
    "make_method",
    "prepare",
    "run_forget",
    "write_json_atomic",
]
