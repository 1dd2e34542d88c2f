"""Named configurations: tuned hyperparameters of an unlearner on a dataset (issue #14, item 3).

A configuration is a small TOML file::

    method = "scrub"
    dataset = "mnist1d"

    [params]          # the unlearner's hyperparameters (constructor keywords)
    lr = 0.0042
    n_epochs = 3

    [tune]            # how they were found (obliviate tune): objective, seed, trials, splits
    ...

Those shipped with the package live in ``obliviate/configs/`` and are named ``METHOD@DATASET``
(``scrub@mnist1d``); ``obliviate tune --save FILE`` writes one. A run uses one with
``obliviate forget --config scrub@mnist1d`` (or a path to a ``.toml`` file), or ``config =
"scrub@mnist1d"`` in a bench spec's ``forget`` block; ``params`` / ``--set`` given beside it
override single values. The run's spec records the configuration's name, so every table built
from it can say which was used.
"""

from __future__ import annotations

import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from obliviate.errors import ObliviateError

SUFFIX = ".toml"


def shipped() -> list[str]:
    """Names of the configurations shipped with the package (``METHOD@DATASET``), sorted."""
    folder = resources.files("obliviate") / "configs"
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in folder.iterdir() if p.name.endswith(SUFFIX))


def _locate(name: str) -> tuple[str, Any]:
    if name.endswith(SUFFIX) or "/" in name or "\\" in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ObliviateError(f"configuration file {name!r} does not exist; give a .toml file")
        return path.read_text(encoding="utf-8"), path
    res = resources.files("obliviate") / "configs" / f"{name}{SUFFIX}"
    if not res.is_file():
        known = ", ".join(shipped()) or "none"
        raise ObliviateError(
            f"unknown configuration {name!r}; shipped: {known} (or give a path to a .toml file "
            "written by obliviate tune --save)"
        )
    return res.read_text(encoding="utf-8"), res


def load_config(name: str) -> dict[str, Any]:
    """The configuration ``name`` (``METHOD@DATASET`` shipped with the package, or a path to a
    ``.toml`` file) as a dict with ``method`` (str), ``dataset`` (str), ``params`` (dict) and
    ``tune`` (dict, may be empty). Raises :class:`ObliviateError` for an unknown name, an
    unreadable file or a file without ``method`` / ``params``."""
    text, where = _locate(name)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ObliviateError(f"configuration {str(where)!r} is not valid TOML: {exc}") from None
    if not isinstance(data.get("method"), str) or not isinstance(data.get("params"), dict):
        raise ObliviateError(
            f'configuration {str(where)!r} needs a method = "..." line and a [params] table'
        )
    return {
        "method": data["method"],
        "dataset": data.get("dataset", ""),
        "params": dict(data["params"]),
        "tune": dict(data.get("tune", {})),
    }


def check_config(
    name: str,
    method: str,
    dataset: str | None = None,
    forget: str | None = None,
    seed: int | None = None,
) -> None:
    """Raise :class:`ObliviateError` unless ``name`` loads, is a configuration of ``method`` and
    may be used for a reported run on ``dataset`` / ``forget`` / ``seed`` (each checked when
    given): the configuration's dataset, a forget request that is none of the validation forget
    sets it was tuned on (``tune.val_forgets``), and a seed among those whose reported forget
    sets tuning left out (``tune.report_seeds_excluded``) — "never tune on a reported split".
    A configuration tuned on independent draws (``tune.protocol = "draw"``,
    :mod:`obliviate.experiments.tune`) records neither: it used no reported row, so only its
    dataset is checked."""
    cfg = load_config(name)
    if cfg["method"] != method:
        raise ObliviateError(
            f"configuration {name!r} is for method {cfg['method']!r}, not {method!r}; "
            f"use --method {cfg['method']} or another configuration"
        )
    if dataset is not None and cfg["dataset"] and cfg["dataset"] != dataset:
        raise ObliviateError(
            f"configuration {name!r} was tuned on dataset {cfg['dataset']!r}, not {dataset!r}; "
            f"tune one for {dataset} (obliviate tune --dataset {dataset} --method {method})"
        )
    tune = cfg["tune"]
    val_forgets = tune.get("val_forgets") or ([tune["val_forget"]] if "val_forget" in tune else [])
    if forget is not None and forget in val_forgets:
        raise ObliviateError(
            f"configuration {name!r} was tuned by scoring forget sets {', '.join(val_forgets)}: "
            f"reporting {forget} with it would report on a tuning split; report another request"
        )
    excluded = tune.get("report_seeds_excluded")
    if seed is not None and excluded is not None and seed not in excluded:
        raise ObliviateError(
            f"configuration {name!r} kept the forget sets of seeds {excluded[0]}..{excluded[-1]} "
            f"out of tuning; seed {seed}'s forget set may overlap its tuning rows: report one "
            "of those seeds or tune again with --report-seeds covering it"
        )


def config_params(name: str) -> dict[str, Any]:
    """The ``params`` table of configuration ``name`` (:func:`load_config`)."""
    return load_config(name)["params"]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ObliviateError(f"cannot write {value!r} ({type(value).__name__}) to a configuration")


def dumps_config(
    method: str, dataset: str, params: dict[str, Any], tune: dict[str, Any], comment: str = ""
) -> str:
    """The TOML text of a configuration (scalars and lists of scalars only)."""
    lines = [f"# {line}" for line in comment.splitlines()] if comment else []
    lines += [f"method = {_toml_value(method)}", f"dataset = {_toml_value(dataset)}", ""]
    lines.append("[params]")
    lines += [f"{k} = {_toml_value(v)}" for k, v in sorted(params.items())]
    lines += ["", "[tune]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in tune.items()]
    return "\n".join(lines) + "\n"


__all__ = ["check_config", "config_params", "dumps_config", "load_config", "shipped"]
