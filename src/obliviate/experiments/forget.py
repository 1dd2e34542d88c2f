"""Run kind ``forget``: forget on request, measured against the retrained oracle.

:func:`run` (also exported as ``run_forget``) takes a :class:`ForgetSpec`, loads the dataset,
builds the forget request, trains (or loads from the cache) the original model and the
retrained oracle, runs the unlearning method, evaluates it against the oracle and returns a
JSON-ready dict (issue #4): ``original``, ``oracle``, ``unlearned`` (each ``retain_acc``,
``forget_acc``, ``test_acc``, ``mia_auc``, ``mia``), ``gaps``, ``js_to_oracle``,
``relearn_steps``, ``seconds`` (the method's wall time), ``oracle_seconds`` (retraining's),
``speedup`` (their ratio, None when there is nothing to forget; the method is timed after an untimed :func:`warm_up`, in the warm
state the oracle was timed in), the same three in CPU time (``cpu_seconds``, ``oracle_cpu_seconds``,
``speedup_cpu``: steadier on a shared machine), ``oracle_timed`` (``"now"``: the oracle was
trained, and timed, when this run's spec was prepared (by this run, or by the :func:`prepare`
whose result was passed to it); ``"earlier"``: it came from the cache or from an earlier run in
this process, and its seconds were measured then, maybe under another load), ``learned`` (the method's learned figures, e.g.
Newton's certificate), ``spec``, ``provenance`` and, with ``quality=N``, ``quality``.

Original and oracle depend only on (dataset, recipe, seed) and (that, forget ids); they are
trained once and reused across methods: in memory within a process, and on disk under
``cache_dir`` (file names are hashes of what determines the weights: the recipe, the
:func:`~obliviate.data.dataset.data_fingerprint` of the rows, the class count and the torch
version; writes are atomic; loads use ``torch.load(weights_only=True)``).

Unset recipe fields come from the dataset's forget recipe (:mod:`obliviate.recipes`;
on digits an MLP(128), Adam 1e-3, batch 32, 30 epochs, so the original memorises its training
set); a dataset without one needs them set.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import time
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from obliviate import recipes
from obliviate._hyper import param_names
from obliviate._rng import derive_seed, generator
from obliviate.data.dataset import data_fingerprint
from obliviate.data.datasets import load_dataset
from obliviate.data.forget_sets import EmptyForgetSetWarning
from obliviate.errors import ObliviateError
from obliviate.experiments import _spec as S
from obliviate.experiments.configs import check_config, config_params
from obliviate.io import atomic_save_torch, state_sha256
from obliviate.metrics.unlearning import min_quality_models
from obliviate.models import ModelSpec
from obliviate.population import fit_population
from obliviate.provenance import bits_context, provenance
from obliviate.training import Recipe, TrainConfig, make_optimizer, model_device
from obliviate.training import precision as precision_scope
from obliviate.unlearning import unlearner_class
from obliviate.unlearning.base import ForgetRequest, build_request
from obliviate.unlearning.evaluate import evaluate_unlearning, forgetting_quality

if TYPE_CHECKING:
    from torch import nn

    from obliviate.data.dataset import Dataset
    from obliviate.training import Recipe
    from obliviate.unlearning.base import ForgetRequest

CACHE_ENV = "OBLIVIATE_CACHE"

SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("unlearned.forget_acc", "forget acc"),
    ("unlearned.retain_acc", "retain acc"),
    ("unlearned.test_acc", "test acc"),
    ("unlearned.mia_auc", "MIA AUC"),
    ("oracle.forget_acc", "oracle forget acc"),
    ("quality.score", "quality"),
    ("seconds", "s"),
)
"""The figures ``obliviate report`` / ``compare`` show: (dotted result key, column name)."""

METHOD_KEYS: tuple[str, ...] = ("dataset", "forget", "method")
METHOD_FIELD = "method"
SHARED_MODELS_IGNORE: tuple[str, ...] | None = (
    "method",
    "params",
    "quality",
    "config",
    "robustness",
)
"""Grid points equal but for these keys share the trained original and oracle (the runner
finishes one of them before starting the others, so those models are trained once)."""


def label(run: Mapping[str, Any]) -> str:
    params = ",".join(f"{k}={v}" for k, v in sorted(run.get("params", {}).items()))
    config = f"[{run['config']}]" if run.get("config") else ""
    return f"{run['method']}{config}{'(' + params + ')' if params else ''} {run['dataset']}/{run['forget']}"


def _quality(name: str, value: Any) -> None:
    S.nonnegative_int(name, value)
    low = min_quality_models()
    if 0 < value < low:
        raise ObliviateError(
            f"{name}={value} resolves nothing (the largest finite epsilon at N models a side, "
            f"log(N(1-delta)-1), is not above 0 below N = {low}); use {name} >= {low} (32 is "
            "the benchmarks' N) or 0 to skip it"
        )


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ObliviateError(f"{name} must be true or false, got {value!r}")


def _config(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ObliviateError(
            f"{name} must be a named configuration (e.g. 'scrub@mnist1d') or a .toml path, "
            f"got {value!r}"
        )


@dataclass(frozen=True)
class ForgetSpec:
    """Everything that determines one forget run.

    ``dataset``: a dataset name (``load_dataset``); ``forget``: a forget-set spec
    (:mod:`obliviate.data.forget_sets`); ``method``: a key of ``UNLEARNERS``; ``params``: the
    method's hyperparameters (a dict; ``seed`` defaults to the run seed); ``seed``: drives the
    recipe (init, data order), the forget-set draw and the method; ``model`` ... ``weight_decay``:
    the recipe of the original and the oracle (``None``: the dataset's forget recipe);
    ``quality``: N >= 3 (:func:`~obliviate.metrics.unlearning.min_quality_models`; 0: off)
    adds the NeurIPS-2023 forgetting quality over N unlearned models (each from its own
    original) vs N independently retrained ones, with the noise floor (:func:`quality`; 32 is
    the benchmarks' N); ``relearn_cap``: cap of the relearn attack;
    ``robustness``: add the robustness columns (:mod:`obliviate.unlearning.robustness`: recovery after int8
    quantisation and after fine-tuning on related samples, linear probe; unlearned and oracle);
    ``config``: a named configuration of tuned hyperparameters (``"scrub@mnist1d"``, shipped
    under ``obliviate/configs/``, or a ``.toml`` path; :mod:`obliviate.experiments.configs`)
    under ``params`` (``params`` wins); its method must be ``method``;
    ``cache_dir``: where trained originals/oracles are kept (None: in memory only); ``data_dir``, ``limit``: passed to
    ``load_dataset``. Bad values raise :class:`~obliviate.errors.ObliviateError`.
    """

    dataset: str = S.option("digits", check=S.dataset, alias="datasets", required=True)
    forget: str = S.option("class:3", check=S.forget_request, alias="forgets", required=True)
    method: str = S.option("retrain", check=S.unlearner, alias="methods", required=True)
    seed: int = S.option(0, check=S.any_int, alias="seeds")
    device: str = S.option("cpu", check=S.device)
    precision: str = S.option("fp32", check=S.precision)
    params: Mapping[str, Any] = S.option(default_factory=dict, check=S.table)
    model: str | None = S.option(None, check=S.model)
    hidden: tuple[int, ...] | None = S.option(None, check=S.widths)
    n_epochs: int | None = S.option(None, check=S.positive_int)
    batch_size: int | None = S.option(None, check=S.positive_int)
    lr: float | None = S.option(None, check=S.positive_number)
    optimizer: str | None = S.option(None, check=S.optimizer)
    momentum: float | None = S.option(None, check=S.momentum)
    weight_decay: float | None = S.option(None, check=S.nonnegative_number)
    quality: int = S.option(0, check=_quality)
    relearn_cap: int = S.option(200, check=S.nonnegative_int)
    robustness: bool = S.option(False, check=_boolean)
    config: str | None = S.option(None, check=_config)
    cache_dir: str | None = S.option(None)
    data_dir: str | None = S.option(None)
    limit: int | None = S.option(None, check=S.positive_int)

    def __post_init__(self) -> None:
        S.validate(self)
        if self.config is not None:
            check_config(self.config, self.method, self.dataset, self.forget, self.seed)
        # a dataset without a forget recipe fails here, before any work
        recipes.fill("forget", self.dataset, self._recipe_fields())

    def _recipe_fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in recipes.TRAIN_FIELDS}

    def resolved_recipe(self) -> Recipe:
        """The :class:`~obliviate.training.Recipe` of the original and the oracle: the set
        fields over the dataset's forget recipe, seeded (init and data order) by ``seed``.
        Computed once per spec."""
        cached = self.__dict__.get("_recipe")
        if cached is None:
            r = recipes.fill("forget", self.dataset, self._recipe_fields())
            cached = Recipe(
                ModelSpec(name=r["model"], hidden=r["hidden"], seed=self.seed),
                TrainConfig(
                    n_epochs=r["n_epochs"],
                    batch_size=r["batch_size"],
                    lr=r["lr"],
                    optimizer=r["optimizer"],
                    momentum=r["momentum"],
                    weight_decay=r["weight_decay"],
                    seed=self.seed,
                ),
            )
            object.__setattr__(self, "_recipe", cached)
        return cached

    def to_dict(self) -> dict[str, Any]:
        """Every field, plus ``recipe`` (the resolved model and training config)."""
        d = S.to_dict(self)
        r = self.resolved_recipe()
        d["recipe"] = {"model": asdict(r.model), "train": r.train.to_dict()}
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForgetSpec:
        """Build a spec from a dict (a ``"kind": "forget"`` entry is ignored; a ``recipe``
        entry as :meth:`to_dict` writes it is ignored too: the flat fields hold it)."""
        data = {k: v for k, v in data.items() if k != "recipe"}
        return S.from_dict(cls, data, "forget")


Spec = ForgetSpec


def default_recipe(dataset: str, seed: int = 0) -> Recipe:
    """The default forget recipe of ``dataset`` with ``seed`` as init and data-order seed."""
    return ForgetSpec(dataset=dataset, seed=seed).resolved_recipe()


def seeded(recipe: Recipe, seed: int) -> Recipe:
    """``recipe`` with ``seed`` as its model-init seed and its data-order seed."""

    return Recipe(replace(recipe.model, seed=seed), replace(recipe.train, seed=seed))


# ---- caching ---------------------------------------------------------------------------------
_MEMO: dict[str, tuple[dict[str, Any], float, float]] = {}


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"|")
    return h.hexdigest()[:24]


def _recipe_dict(r: Recipe) -> dict[str, Any]:
    return {"model": asdict(r.model), "train": r.train.to_dict()}


def _cache_path(cache_dir: str | None, key: str) -> Path | None:
    if not cache_dir:
        return None
    folder = Path(cache_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ObliviateError(
            f"--cache {str(folder)!r} is a file; give a folder for the model cache"
        )
    return folder / f"{key}.pt"


def _load_entry(path: Path, key: str) -> tuple[dict[str, Any], float, float]:
    """A cache entry, checked: it must load, name ``key`` and match its content hash."""
    import torch

    fix = f"delete {str(path)!r} (it is recomputed on the next run)"
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
        state = blob["state"]
        seconds = float(blob["seconds"])
        cpu = float(blob.get("cpu_seconds", blob["seconds"]))
    except (
        RuntimeError,
        OSError,
        EOFError,
        KeyError,
        TypeError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as exc:
        raise ObliviateError(
            f"the cache entry {str(path)!r} is unreadable ({type(exc).__name__}); {fix}"
        ) from None
    if blob.get("key") != key:
        raise ObliviateError(
            f"the cache entry {str(path)!r} holds another model (key {blob.get('key')!r}); {fix}"
        )
    if blob.get("sha256") != state_sha256(state):
        raise ObliviateError(f"the cache entry {str(path)!r} was altered (content hash); {fix}")
    return state, seconds, cpu


def _model_key(
    recipe: Recipe, data: Dataset, n_classes: int, kind: str, device: str, precision: str
) -> str:
    """The memory and disk cache key of a trained original/oracle: everything that determines
    its bits (the recipe, the rows, the class count and the numeric context, device type and
    precision included: a GPU or a bf16 run gives other bits)."""
    context = bits_context(device=device, precision=precision)
    return f"{kind}-{_digest(_recipe_dict(recipe), data_fingerprint(data), n_classes, context)}"


def _reused(key: str, cache_dir: str | None) -> bool:
    """Whether :func:`trained` would reuse the model of ``key`` (from this process's memory or
    from ``cache_dir``) instead of training it, i.e. report an earlier training's seconds."""
    path = _cache_path(cache_dir, key)
    return key in _MEMO or (path is not None and path.exists())


def trained(
    recipe: Recipe,
    data: Dataset,
    n_classes: int,
    cache_dir: str | None,
    kind: str,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    key: str | None = None,
) -> tuple[nn.Module, float, float]:
    """``recipe.fit(data)`` on ``device`` at ``precision``, reused from memory or ``cache_dir``
    when the same recipe was already trained on the same rows on the same kind of device at the
    same precision; returns (model, wall seconds, CPU seconds the training took when it ran).
    Cache entries hold CPU tensors (loaded onto any device). ``key``: the cache key when the
    caller already computed it (:func:`_model_key`; hashing the rows again costs time)."""
    import torch

    if key is None:
        key = _model_key(recipe, data, n_classes, kind, device, precision)
    model = recipe.build(data.sample_shape, n_classes, device=device)
    if key in _MEMO:
        state, seconds, cpu = _MEMO[key]
        model.load_state_dict(state)
        return model.eval(), seconds, cpu
    path = _cache_path(cache_dir, key)
    if path is not None and path.exists():
        state, seconds, cpu = _load_entry(path, key)
        model.load_state_dict(state)
    else:
        start, start_cpu = time.perf_counter(), time.process_time()
        with precision_scope(precision):
            model = recipe.fit(data, n_classes=n_classes, device=device)
        _synchronize(device)
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        if path is not None:
            cpu_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            atomic_save_torch(
                {
                    "key": key,
                    "sha256": state_sha256(cpu_state),
                    "state": cpu_state,
                    "seconds": torch.tensor(seconds, dtype=torch.float64),
                    "cpu_seconds": torch.tensor(cpu, dtype=torch.float64),
                },
                path,
            )
    _MEMO[key] = ({k: v.clone() for k, v in model.state_dict().items()}, seconds, cpu)
    return model.eval(), seconds, cpu


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
    oracle_reused: bool = False
    """The oracle (and so its training time) came from the cache or an earlier run in this
    process: its seconds were measured then, maybe under another load."""


def prepare(spec: ForgetSpec, *, data: tuple[Dataset, Dataset] | None = None) -> Prepared:
    """Load data, build the request, train or load the original and the oracle."""

    if data is None:
        data = load_dataset(spec.dataset, data_dir=spec.data_dir, limit=spec.limit)
    train, test = data
    recipe = spec.resolved_recipe()
    request = build_request(train, spec.forget, seed=spec.seed, recipe=recipe)
    on = {"device": spec.device, "precision": spec.precision}
    key = _model_key(recipe, train, train.n_classes, "original", spec.device, spec.precision)
    reused = _reused(key, spec.cache_dir)
    original, t_orig, c_orig = trained(
        recipe, train, train.n_classes, spec.cache_dir, "original", **on, key=key
    )
    assert request.retain is not None
    if len(request.forget):
        retain = request.retain
        key = _model_key(recipe, retain, train.n_classes, "oracle", spec.device, spec.precision)
        reused = _reused(key, spec.cache_dir)
        oracle, t_oracle, c_oracle = trained(
            recipe, retain, train.n_classes, spec.cache_dir, "oracle", **on, key=key
        )
    else:  # nothing to forget: the oracle is the original
        oracle, t_oracle, c_oracle = original, t_orig, c_orig
    return Prepared(
        train, test, recipe, request, original, oracle, t_orig, t_oracle, c_oracle, reused
    )


def make_method(spec: ForgetSpec, seed: int | None = None) -> Any:
    """The unlearner of ``spec`` with its params; ``seed`` (default: the run seed) fills the
    method's ``seed`` hyperparameter unless ``params`` sets it."""

    cls = unlearner_class(spec.method)
    params = {**(config_params(spec.config) if spec.config else {}), **spec.params}
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


VALIDATION_SHARE = 0.2
"""Share of each class of the test split held out for methods that calibrate on held-out rows
(SCRUB+R's rewind reference): the authors' 20 % per class (``meghdadk/SCRUB``, ``datasets.py``)."""


def with_validation(p: Prepared, seed: int) -> Prepared:
    """``p`` with a seeded ``VALIDATION_SHARE`` of each class of ``p.test`` moved into
    ``request.validation`` and out of ``test``, so that the rows a method calibrates on never
    score it (every metric of the run, the original's and the oracle's included, uses the rest).
    The original and the oracle never trained on test rows; a class with under 5 rows gives none.
    """
    import torch

    g = generator(seed, "forget", "validation")
    y = p.test.y.cpu()
    held = [
        idx[torch.randperm(len(idx), generator=g)[: int(VALIDATION_SHARE * len(idx))]]
        for idx in (torch.nonzero(y == c).reshape(-1) for c in torch.unique(y))
    ]
    val = torch.sort(torch.cat(held)).values
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[val] = False
    request = replace(p.request, validation=p.test.subset(val))
    return replace(p, request=request, test=p.test.subset(torch.nonzero(keep).reshape(-1)))


def warm_up(model: nn.Module, data: Dataset, config: TrainConfig, *, n_rows: int = 8) -> None:
    """One untimed optimiser step of a throwaway copy of ``model`` on ``n_rows`` rows of
    ``data``, with ``config``'s optimiser, so the timed unlearning starts in the warm state the
    oracle's timing had.

    The first optimiser step of a process pays one-time costs (PyTorch imports
    ``torch._dynamo`` and sympy lazily at the first ``Optimizer.step``: about 1.5-3 s of CPU
    time, 800 modules; first-touch allocations and kernel set-up); the oracle's time was taken
    after the original's training (or read from a cache written by a process that had paid
    them), so without this the first timed method ran cold and ``retrain`` scored 0.36x against
    itself. The copy runs in eval mode (no Dropout draw, no BatchNorm update) inside
    ``torch.random.fork_rng``, so no global random state moves: the method's bits are the same
    with or without the warm-up. ``model`` is untouched."""
    import torch
    import torch.nn.functional as F

    if len(data) == 0:
        return
    device = model_device(model)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        m = copy.deepcopy(model).eval()
        params = [q for q in m.parameters() if q.requires_grad]
        if not params:
            return
        rows = torch.arange(min(n_rows, len(data)))
        x, y = data.x[rows].to(device), data.y[rows].to(device)
        opt = make_optimizer(params, config)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x).float(), y.long()).backward()
        opt.step()


def _ratio(oracle: float, method: float) -> float:
    """Retraining's time over the method's (inf for a method that took no measurable time)."""
    return oracle / method if method > 0 else float("inf")


def _synchronize(device: str) -> None:
    """Wait for the kernels queued on a CUDA ``device`` (a no-op elsewhere), so that a timed
    stretch ends when its work has, not when its last kernel was queued."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))


def run(spec: ForgetSpec, *, prepared: Prepared | None = None) -> dict[str, Any]:
    """Run one forget experiment (see the module docstring) and return its JSON-ready result.
    ``prepared`` (from :func:`prepare` of a spec equal but for the method) skips loading and
    training. A method that calibrates on held-out rows (``uses_validation``, e.g. SCRUB with
    ``rewind=True`` and no ``rewind_target``) gets them from the test split
    (:func:`with_validation`), and the run reports on the remaining test rows (``validation``
    in the result says so). Bad input raises :class:`~obliviate.errors.ObliviateError`."""

    p = prepared if prepared is not None else prepare(spec)
    method = make_method(spec)
    if getattr(method, "uses_validation", False):
        p = with_validation(p, spec.seed)
    with precision_scope(spec.precision):
        warm_up(p.original, p.request.retain or p.request.forget, p.recipe.train)
    _synchronize(spec.device)
    start, start_cpu = time.perf_counter(), time.process_time()
    with precision_scope(spec.precision):
        unlearned = method.unlearn(p.original, p.request)
    _synchronize(spec.device)
    seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    result = evaluate_unlearning(
        p.original,
        p.oracle,
        unlearned,
        p.request,
        p.test,
        relearn_cap=spec.relearn_cap,
        seed=spec.seed,
        robustness=spec.robustness,
    )
    result.update(
        {
            "method": spec.method,
            "guarantee": type(method).guarantee,
            "n_forget": len(p.request.forget),
            "n_retain": len(p.request.retain) if p.request.retain is not None else None,
            "seconds": seconds,
            "oracle_seconds": p.oracle_seconds,
            # nothing to forget: no retraining to compare with (the oracle is the original)
            "speedup": _ratio(p.oracle_seconds, seconds) if len(p.request.forget) else None,
            "cpu_seconds": cpu,
            "oracle_cpu_seconds": p.oracle_cpu_seconds,
            "speedup_cpu": _ratio(p.oracle_cpu_seconds, cpu) if len(p.request.forget) else None,
            "oracle_timed": "earlier" if p.oracle_reused else "now",
            "learned": learned_state(method),
            "spec": spec.to_dict(),
            "provenance": provenance(seed=spec.seed, device=spec.device, precision=spec.precision),
        }
    )
    if p.request.validation is not None:
        result["validation"] = {
            "n_rows": len(p.request.validation),
            "n_test_rows": len(p.test),
            "source": f"{VALIDATION_SHARE:.0%} of each class of the test split, seeded; "
            "every metric here uses the other test rows",
        }
    if spec.quality:
        result["quality"] = quality(spec, p)
    return result


run_forget = run


def quality_seeds(seed: int, n: int) -> tuple[list[int], list[int]]:
    """The seeds of the forgetting-quality populations of a run with ``seed``: ``n`` for the
    originals (model i is trained, then unlearned, with seed ``a_i``) and ``n`` for the
    independently retrained oracles (``b_j``); derived from ``seed``, 31-bit, and disjoint
    (checked)."""
    a = [derive_seed(seed, "quality", "original", i) % (2**31) for i in range(n)]
    b = [derive_seed(seed, "quality", "retrained", j) % (2**31) for j in range(n)]
    if set(a) & set(b) or len(set(a)) < n or len(set(b)) < n:  # 2^-31-rare: fail loudly
        raise ObliviateError(f"seed={seed} derives colliding quality seeds; use another seed")
    return a, b


_POP_MEMO: dict[str, list[dict[str, Any]]] = {}


def population(
    recipe: Recipe, seeds: list[int], data: Dataset, n_classes: int, kind: str
) -> list[nn.Module]:
    """``seeded(recipe, s).fit(data)`` for every seed in ``seeds``, trained together by
    :func:`obliviate.population.fit_population` (equal to one-by-one training within float
    tolerance, so kept in a memory cache of its own, never in the bitwise model cache)."""
    recipes = [seeded(recipe, s) for s in seeds]
    key = f"pop-{kind}-{_digest([_recipe_dict(r) for r in recipes], data_fingerprint(data), n_classes, bits_context())}"
    models: list[nn.Module] = [r.build(data.sample_shape, n_classes) for r in recipes]
    if key in _POP_MEMO:
        for m, state in zip(models, _POP_MEMO[key], strict=True):
            m.load_state_dict(state)
        return [m.eval() for m in models]
    models = fit_population(recipes, data, n_classes)
    _POP_MEMO[key] = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    return models


def quality(spec: ForgetSpec, p: Prepared) -> dict[str, Any]:
    """NeurIPS-2023 forgetting quality on the challenge's protocol, with independent seeds on
    both sides: ``N = spec.quality`` originals (seeds ``a_i``, :func:`quality_seeds`) are each
    unlearned once by the method (its ``seed`` is ``a_i`` too), and the N unlearned models are
    compared with N models retrained from scratch on the retain set with seeds ``b_j``
    disjoint from the ``a_i``. Beside it, ``noise_floor``: the same figure for exact unlearning
    (N retrained with seeds ``a_i`` against the same N with seeds ``b_j``), the F that a
    perfect method scores at this N; ``retrain`` scores it (within float tolerance), not 1.

    Originals and oracles are trained as populations (:func:`population`); the unlearners run
    one per original. Each unlearned model has its own original, so the original's seed noise
    is part of the unlearned side as the retrained side's is part of the oracles'. The
    resolution at this N (``max_finite_epsilon``, ``n_reachable_bins``, ``H_levels``) comes
    with the result; the challenge used N = 512 a side.
    """
    if len(p.request.forget) == 0:  # the identity: nothing to score, no population trained
        warnings.warn(
            f"forgetting quality skipped: {spec.forget!r} selects no training sample, so "
            "unlearning is the identity",
            EmptyForgetSetWarning,
            stacklevel=2,
        )
        return {"F": float("nan"), "score": float("nan"), "n_models": 0, "note": "empty forget set"}
    assert p.request.retain is not None
    n_classes = p.train.n_classes
    a, b = quality_seeds(spec.seed, spec.quality)
    originals = population(p.recipe, a, p.train, n_classes, "original")
    oracles = population(p.recipe, b, p.request.retain, n_classes, "oracle")
    exact = population(p.recipe, a, p.request.retain, n_classes, "oracle")
    unlearned = []
    for s, orig in zip(a, originals, strict=True):
        req = ForgetRequest(
            forget=p.request.forget,
            retain=p.request.retain,
            train=p.request.train,
            recipe=seeded(p.recipe, s),
            validation=p.request.validation,
        )
        unlearned.append(make_method(spec, seed=s).unlearn(orig, req))
    out = forgetting_quality(unlearned, oracles, p.request, p.test)
    floor = forgetting_quality(exact, oracles, p.request, p.test)
    out["noise_floor"] = {
        k: floor[k]
        for k in ("F", "F_stderr", "F_challenge_code", "score", "mean_epsilon", "n_separated")
    }
    out["protocol"] = (
        f"{spec.quality} unlearned models, each from its own original (seeds a_i), against "
        f"{spec.quality} retrained with disjoint seeds b_j; noise_floor: retrained (a_i) against "
        "retrained (b_j)"
    )
    return out


__all__ = [
    "CACHE_ENV",
    "SUMMARY_COLUMNS",
    "ForgetSpec",
    "Prepared",
    "Spec",
    "default_recipe",
    "label",
    "make_method",
    "prepare",
    "population",
    "quality",
    "quality_seeds",
    "run",
    "run_forget",
    "seeded",
    "warm_up",
]
