"""``obliviate demo`` (``make demo``): the main job, one section after another.

The demo is a tuple of sections, :data:`DEMO_SECTIONS`, each named ``"module:function"``. A
section is a function ``section(console: rich.console.Console) -> None`` that runs its part and
prints its tables to ``console``. To extend the demo, write such a function in your own module
and append its name to :data:`DEMO_SECTIONS` (a one-line edit); sections run in that order.

Sections that produce results store them in the results-store format
(:mod:`obliviate.bench.results`: ``results.jsonl``) under their own folder of :func:`demo_dir`
(``./runs/demo`` or ``$OBLIVIATE_DEMO_DIR``), so that a later section (e.g. the HTML report)
can read what earlier ones produced. A section starts from an empty folder of its own, so every
demo run is computed afresh.

The first section, :func:`continual_section`, runs naive fine-tuning, EWC, LwF, replay (memory
200) and joint training on the embedded digits data, class-incremental (5 experiences of 2
classes) and domain-incremental (5 feature permutations), 3 seeds each, with every strategy's
default hyperparameters and the digits default recipe (:mod:`obliviate.experiments`), and prints
one table per scenario: catastrophic forgetting (naive: high learning accuracy, low final ACC)
and how much each strategy mitigates it.

:func:`unlearning_section`: on digits (default forget recipe: MLP(128), Adam 1e-3, 30 epochs),
seed 0, forget class 3 and a random 10 % of the training set with a few methods, and print one
table per request with the retrained oracle alongside (retain / forget / test accuracy,
loss-threshold MIA AUC, JS divergence to the oracle on the forget set, wall time and speed-up vs
retraining). Results are also written as JSON to ``<demo dir>/forget/results.json``.

:func:`lifecycle_section`: learning and deletion requests in one stream (issue 11): replay,
DER++ and EWC on digits with deletions after experiences 2, 3 and 4, one table per strategy with
retention and forgetting against the lifecycle oracle after every event.

:func:`report_section` (last): the HTML report of everything the sections above left under
:func:`demo_dir` (:func:`obliviate.report.demo.collect`), written to ``<demo dir>/report.html``.

Sections live here, in the CLI layer, because they print and choose where files go; what they
run is the experiments layer (:mod:`obliviate.experiments`, :mod:`obliviate.bench`).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import typer

from obliviate.cli import _common as _c
from obliviate.errors import ObliviateError

DEMO_SECTIONS: tuple[str, ...] = (
    "obliviate.cli.demo:continual_section",
    "obliviate.cli.demo:unlearning_section",
    "obliviate.cli.demo:lifecycle_section",
    "obliviate.cli.demo:report_section",  # keep last: the report of every section above
)
"""The demo's sections, in order: ``"module:function"``, each ``function(console) -> None``."""

DEMO_ENV = "OBLIVIATE_DEMO_DIR"
SEEDS = (0, 1, 2)
SCENARIOS = ("class-incremental", "domain-permutation")
STRATEGIES = ("naive", "ewc", "lwf", "replay", "joint")
REPLAY_MEMORY = 200

CONTINUAL_TEMPLATE = f"""\
name = "demo-continual"
description = "obliviate demo: forgetting and its mitigation on digits"
seeds = [{{seeds}}]

[[learn]]
datasets = ["digits"]
scenarios = [{", ".join(f'"{s}"' for s in SCENARIOS)}]
n_experiences = 5
strategies = [{", ".join(f'"{s}"' for s in STRATEGIES)}]

[learn.params.replay]
memory_size = {REPLAY_MEMORY}
"""


def continual_spec(seed: int = 0) -> str:
    """The continual section's grid, in the benchmark-spec format (``obliviate bench``), with
    the seeds ``seed, seed + 1, seed + 2`` (:func:`seeds`)."""
    return CONTINUAL_TEMPLATE.replace("{seeds}", ", ".join(map(str, seeds(seed, SEEDS))))


def seeds(base: int, default: tuple[int, ...]) -> tuple[int, ...]:
    """A section's seeds for ``obliviate demo --seed base``: ``default`` shifted by ``base``
    (``--seed 0``, the default, is the demo as documented)."""
    return tuple(base + s for s in default)


CONTINUAL_SPEC = continual_spec(0)
"""The continual section's grid with the default seeds."""


def demo_dir() -> Path:
    """Where demo sections keep their results: ``$OBLIVIATE_DEMO_DIR`` or ``./runs/demo``."""
    return Path(os.environ.get(DEMO_ENV) or "runs/demo")


def fresh_section_dir(name: str) -> Path:
    """An empty folder ``demo_dir()/name`` for one section (its old contents removed)."""
    out = demo_dir() / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def workers() -> int:
    """Worker processes for the demo's grids: the CPUs available to us, at most 2 (the demo's
    target machine has 2 cores)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        n = os.cpu_count() or 1
    return max(1, min(2, n))


#: set by the command: ``quiet`` hides the progress bar; ``seed`` shifts every section's seeds
_OPTIONS: dict[str, Any] = {"quiet": False, "seed": 0}


def continual_section(console: Any) -> None:
    """Catastrophic forgetting and its mitigation: naive, EWC, LwF, replay(200), joint on
    digits, class-incremental and domain-permutation, 3 seeds; one table per scenario."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from obliviate.bench.results import read
    from obliviate.bench.runner import run_grid
    from obliviate.bench.specs import parse_spec

    out = fresh_section_dir("learn")
    spec = continual_spec(_OPTIONS["seed"])
    (out / "spec.toml").write_text(spec)
    _, runs = parse_spec(spec, "demo-continual")
    console.rule("[bold]Continual learning: forgetting and its mitigation")
    console.print(
        f"digits (8x8, 10 classes), 5 experiences, {len(SEEDS)} seeds; MLP(100), SGD lr 0.01 momentum 0.9, "
        f"batch 32, 5 epochs per experience; {len(runs)} runs on {workers()} worker(s)"
    )
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=_OPTIONS["quiet"],
    ) as bar:
        task = bar.add_task("training", total=len(runs))
        counts = run_grid(runs, out, workers=workers(), on_result=lambda rec: bar.advance(task))
    records = read(out)
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        first = failed[0]
        raise RuntimeError(
            f"{len(failed)} demo run(s) failed; first: {first.get('label')}: {first.get('error')}"
        )
    for scenario in SCENARIOS:
        console.print(continual_table(records, scenario))
        console.print(verdict(records, scenario))
    console.print(
        f"[dim]{counts['ok']} runs in {time.perf_counter() - started:.0f} s; results: {out / 'results.jsonl'}. "
        "ACC: mean final accuracy over experiences; BWT: backward transfer; forgetting: max earlier "
        "minus final accuracy; LA: accuracy right after learning each experience (mean ± sample std "
        "over seeds).[/dim]"
    )


def _by_strategy(records: list[dict[str, Any]], scenario: str) -> dict[str, dict[str, Any]]:
    from obliviate.experiments import aggregate

    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        if rec["spec"]["scenario"] == scenario:
            groups.setdefault(rec["spec"]["strategy"], []).append(rec["metrics"])
    return {s: aggregate(groups[s]) for s in STRATEGIES if s in groups}


def continual_table(records: list[dict[str, Any]], scenario: str) -> Any:
    """A rich table of ACC, BWT, forgetting, LA and time per strategy (mean ± std over seeds)."""
    from rich.table import Table

    from obliviate.cli.learn import fmt

    table = Table(title=f"digits / {scenario} (5 experiences, {len(SEEDS)} seeds)")
    for name, justify in (
        ("strategy", "left"),
        ("ACC", "right"),
        ("BWT", "right"),
        ("forgetting", "right"),
        ("LA", "right"),
        ("time (s)", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for strategy, agg in _by_strategy(records, scenario).items():
        m, s = agg["mean"], agg["std"]
        label = f"replay ({REPLAY_MEMORY})" if strategy == "replay" else strategy
        table.add_row(
            label,
            fmt(m["acc"], s["acc"]),
            fmt(m["bwt"], s["bwt"]),
            fmt(m["forgetting"], s["forgetting"]),
            fmt(m["learning_accuracy"], s["learning_accuracy"]),
            fmt(m["seconds"], s["seconds"], digits=1),
        )
    return table


def verdict(records: list[dict[str, Any]], scenario: str) -> str:
    """One sentence read off the table: how much naive forgets and which strategy helps most."""
    aggs = _by_strategy(records, scenario)
    naive = aggs["naive"]["mean"]
    methods = {k: v["mean"]["acc"] for k, v in aggs.items() if k not in ("naive", "joint")}
    best = max(methods, key=lambda k: methods[k])
    joint = aggs["joint"]["mean"]["acc"] if "joint" in aggs else None
    text = (
        f"naive fine-tuning learns each experience (LA {naive['learning_accuracy']:.2f}) but ends at "
        f"ACC {naive['acc']:.2f}: it forgets {naive['forgetting']:.2f} on average. "
        f"Best mitigation here: {best} (ACC {methods[best]:.2f})"
    )
    if joint is not None:
        text += f"; joint training, the upper bound, reaches {joint:.2f}"
    return text + ".\n"


# ---- the unlearning section -------------------------------------------------------------------

FORGET_REQUESTS = ("class:3", "random:10%")
FORGET_METHODS = ("neggrad_plus", "ssd", "scrub", "bad_teacher", "newton")
FORGET_SEED = 0
RELEARN_CAP = 100


def unlearning_section(console: Any) -> None:
    """Class and random forgetting on digits: a few methods next to the retrained oracle."""
    from rich.table import Table

    from obliviate.experiments.forget import ForgetSpec, prepare, run_forget
    from obliviate.io import write_json_atomic
    from obliviate.unlearning import UNLEARNERS

    out = fresh_section_dir("forget")
    methods = [m for m in FORGET_METHODS if m in UNLEARNERS]
    console.rule("[bold]Unlearning: forget on request, measured against the retrained oracle")
    console.print(
        f"digits, MLP(128) trained 30 epochs (Adam 1e-3), seed {FORGET_SEED + _OPTIONS['seed']}; each method's default "
        "hyperparameters; the oracle is retrained from scratch without the forget set"
    )
    started = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    for request in FORGET_REQUESTS:
        base = ForgetSpec(
            dataset="digits",
            forget=request,
            seed=FORGET_SEED + _OPTIONS["seed"],
            relearn_cap=RELEARN_CAP,
        )
        p = prepare(base)
        rows = [
            run_forget(
                ForgetSpec(
                    dataset="digits",
                    forget=request,
                    method=m,
                    seed=FORGET_SEED + _OPTIONS["seed"],
                    relearn_cap=RELEARN_CAP,
                ),
                prepared=p,
            )
            for m in methods
        ]
        results[request] = rows
        table = Table(
            title=f"forget {request} ({len(p.request.forget)} of {len(p.train)} training samples)"
        )
        for col in (
            "model",
            "retain acc",
            "forget acc",
            "test acc",
            "MIA AUC",
            "JS to oracle",
            "seconds",
            "speed-up",
        ):
            table.add_column(col, justify="right" if col != "model" else "left")
        o, g = rows[0]["original"], rows[0]["oracle"]
        table.add_row(
            "original",
            f"{o['retain_acc']:.3f}",
            f"{o['forget_acc']:.3f}",
            f"{o['test_acc']:.3f}",
            f"{o['mia_auc']:.3f}",
            f"{rows[0]['js_to_oracle']['original_forget']:.4f}",
            "-",
            "-",
        )
        table.add_row(
            "oracle (retrain)",
            f"{g['retain_acc']:.3f}",
            f"{g['forget_acc']:.3f}",
            f"{g['test_acc']:.3f}",
            f"{g['mia_auc']:.3f}",
            "0",
            f"{p.oracle_seconds:.2f}",
            "1.0x",
        )
        for m, r in zip(methods, rows, strict=True):
            u = r["unlearned"]
            table.add_row(
                m,
                f"{u['retain_acc']:.3f}",
                f"{u['forget_acc']:.3f}",
                f"{u['test_acc']:.3f}",
                f"{u['mia_auc']:.3f}",
                f"{r['js_to_oracle']['forget']:.4f}",
                f"{r['seconds']:.2f}",
                f"{r['speedup']:.0f}x",
            )
        console.print(table)
    write_json_atomic(out / "results.json", results, allow_nan=True)
    console.print(
        "Class forgetting: the target is the oracle's forget accuracy (0: it never saw a 3); random "
        "forgetting: the target is the oracle's forget accuracy and MIA AUC, not 0 and not 0.5. "
        f"Section took {time.perf_counter() - started:.0f} s; the full table of every method over 3 seeds: "
        "docs/unlearning.md (python benchmarks/unlearning_table.py)."
    )


# ---- the lifecycle section ---------------------------------------------------------------------

LIFECYCLE_SEEDS = (0,)
LIFECYCLE_STRATEGIES = ("replay", "derpp", "ewc")
LIFECYCLE_SCHEDULE = "2:random:5%; 3:experience-class:0; 4:random:5%"
LIFECYCLE_TEMPLATE = f"""\
name = "demo-lifecycle"
description = "obliviate demo: learning and deletion requests in one stream on digits"
seeds = [{{seeds}}]

[[lifecycle]]
datasets = ["digits"]
scenarios = ["class-incremental"]
n_experiences = 5
strategies = [{", ".join(f'"{s}"' for s in LIFECYCLE_STRATEGIES)}]
schedule = "{LIFECYCLE_SCHEDULE}"
paths = ["approximate", "exact"]
method = "neggrad_plus"
n_shards = 2
"""


def lifecycle_spec(seed: int = 0) -> str:
    """The lifecycle section's grid (the acceptance run of issue 11 with one seed, ``seed``;
    three seeds: ``benchmarks/specs/lifecycle_digits.toml``)."""
    return LIFECYCLE_TEMPLATE.replace("{seeds}", ", ".join(map(str, seeds(seed, LIFECYCLE_SEEDS))))


LIFECYCLE_SPEC = lifecycle_spec(0)
"""The lifecycle section's grid with the default seed."""


def lifecycle_section(console: Any) -> None:
    """Learning and deletion in one stream: replay, DER++ and EWC on digits (5 class-incremental
    experiences; 5 % of the seen samples deleted after experiences 2 and 4, the first class of
    experience 0 after experience 3), approximate path (purge + NegGrad+) and exact path (sharded
    continual learning, 2 shards), seed 0; one table per strategy and path with retention and
    forgetting against the lifecycle oracle after every event."""
    from obliviate.bench.results import read
    from obliviate.bench.runner import run_grid
    from obliviate.bench.specs import parse_spec
    from obliviate.cli.lifecycle import events_table
    from obliviate.experiments.lifecycle import aggregate_events

    out = fresh_section_dir("lifecycle")
    spec = lifecycle_spec(_OPTIONS["seed"])
    (out / "spec.toml").write_text(spec)
    _, runs = parse_spec(spec, "demo-lifecycle")
    console.rule("[bold]Lifecycle: learning and deletion requests in one stream")
    console.print(
        f"digits, 5 class-incremental experiences; deletions: {LIFECYCLE_SCHEDULE} "
        "(AFTER:REQUEST, AFTER = experiences learned); approximate path: each deletion purges the "
        "strategy's memory and runs NegGrad+ on what the learner still holds; exact path: 2 shards "
        "learn the stream, a deletion rolls the affected shards back and replays them without the "
        f"ids; {len(runs)} runs on {workers()} "
        "worker(s), each with its lifecycle oracle (the stream learned without the deleted samples)"
    )
    started = time.perf_counter()
    counts = run_grid(runs, out, workers=workers())
    records = read(out)
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        first = failed[0]
        raise RuntimeError(
            f"{len(failed)} demo run(s) failed; first: {first.get('label')}: {first.get('error')}"
        )
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault((r["run"]["strategy"], r["run"]["path"]), []).append(r["metrics"])
    paths = {"approximate": "approximate path: purge + NegGrad+", "exact": "exact path: 2 shards"}
    for name in LIFECYCLE_STRATEGIES:
        for path, what in paths.items():
            if (name, path) not in by:
                continue
            equal = all(
                e.get("bitwise_equal_oracle", False) for m in by[name, path] for e in m["events"]
            )
            note = (
                f"; every checkpoint sha256 equal to the oracle's: {equal}"
                if path == "exact"
                else ""
            )
            console.print(
                events_table(
                    f"{name} ({what}{note}): after every event, seed(s) "
                    f"{','.join(map(str, seeds(_OPTIONS['seed'], LIFECYCLE_SEEDS)))}",
                    aggregate_events(by[name, path]),
                    len(by[name, path]),
                )
            )
    console.print(
        f"[dim]{counts['ok']} runs in {time.perf_counter() - started:.0f} s; results: "
        f"{out / 'results.jsonl'}. retention: mean test accuracy over the experiences learned so "
        "far; forget acc: accuracy on every sample deleted so far; oracle: the same figure of the "
        "stream learned without them from the start; forget s vs re-run s: the deletion's cost "
        "against learning the stream again without the samples.[/dim]"
    )


# ---- the report section ------------------------------------------------------------------------


def report_section(console: Any) -> None:
    """Write the demo's HTML report (``<demo dir>/report.html``) and print its path."""
    from obliviate.io import atomic_write_text
    from obliviate.report.demo import collect
    from obliviate.report.html import build_report

    folder = demo_dir()
    records = collect(folder) if folder.exists() else []
    console.rule("[bold]Report")
    if not records:
        console.print(f"no demo results under {folder}; no report written")
        return
    target = folder / "report.html"
    atomic_write_text(target, build_report(records, source=str(folder), title="obliviate demo"))
    target.chmod(0o644)
    console.print(
        f"HTML report ({len(records)} runs, plots embedded, opens offline in any browser):"
    )
    console.print(str(target.resolve()), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        quiet: bool = typer.Option(
            False, "--quiet", "-q", help="no progress bar; the tables and the report still print"
        ),
        seed: int = _c.seed_option(
            help="shifts every section's seeds: continual seed..seed+2, forgetting and lifecycle "
            "seed (0: the documented demo)"
        ),
    ) -> None:
        """The main job: continual learning (and later sections) on the embedded digits data."""
        import importlib

        _OPTIONS["quiet"] = quiet
        _OPTIONS["seed"] = seed
        if seed + len(SEEDS) > _c.SEED_LIMIT:
            raise ObliviateError(
                f"--seed {seed}: the continual section uses seeds {seed}..{seed + len(SEEDS) - 1}; "
                f"give at most {_c.SEED_LIMIT - len(SEEDS)}"
            )
        import torch

        from obliviate.cli.learn import make_console

        torch.set_num_threads(1)
        console = make_console()
        started = time.perf_counter()
        for name in DEMO_SECTIONS:
            module, _, func = name.partition(":")
            getattr(importlib.import_module(module), func)(console)
        console.print(f"demo finished in {time.perf_counter() - started:.0f} s")
