"""``obliviate forget``: unlearn a forget set with one method and measure it against the oracle."""

from __future__ import annotations

import math
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

import typer

from obliviate.cli import _common as _c


def reused_note(results: list[dict[str, Any]]) -> str:
    """`` (retraining's time from the cache ...)`` when some run's oracle (and so its training
    time) was reused rather than trained now, naming the seeds when not all were; ``""``
    otherwise, and for runs with nothing to forget (their oracle is the original)."""
    runs = [r for r in results if r.get("n_forget")]
    reused = [r for r in runs if r.get("oracle_timed") == "earlier"]
    if not reused:
        return ""
    which = ""
    if len(reused) < len(runs):
        seeds = ", ".join(str(r["spec"]["seed"]) for r in reused)
        which = f" for seed{'s' if len(reused) > 1 else ''} {seeds}"
    return (
        f" (retraining's time{which} from the cache: measured when the oracle was trained, "
        "maybe under another load)"
    )


def speedup_text(wall: list[float], cpu: list[float], cell: Callable[..., str]) -> str:
    """``speed-up vs retraining 12x (CPU time 11x)`` with enough significant digits to be
    meaningful (a method slower than retraining reads ``0.042x``, not ``0.0x``, and says so); a
    plain "not measurable" when no run has a finite positive figure."""
    finite = [v for v in wall if math.isfinite(v) and v > 0]
    if not finite:
        return "speed-up vs retraining not measurable (a time of 0 s)"
    low = min(finite)
    fmt = "{:.0f}" if low >= 10 else "{:.1f}" if low >= 1 else "{:.2g}"
    text = f"speed-up vs retraining {cell(wall, fmt)}x (CPU time {cell(cpu, fmt)}x)"
    if statistics.mean(finite) < 1:
        text += ": slower than retraining from scratch"
    return text


def collapse_warning(method: str, results: list[dict], collapsed: list[dict]) -> str:
    """The text of the one ``warning:`` line for runs whose unlearned model collapsed
    (:func:`obliviate.unlearning.evaluate.collapse`)."""
    seeds = ", ".join(str(r["spec"]["seed"]) for r in collapsed)
    c = [r["collapse"] for r in collapsed]
    return (
        f"{method} collapsed on seed{'s' if len(c) > 1 else ''} {seeds} of {len(results)}: "
        f"retain accuracy {statistics.mean(x['retain_acc'] for x in c):.3f} against the "
        f"oracle's {statistics.mean(x['oracle_retain_acc'] for x in c):.3f} (chance "
        f"{statistics.mean(x['chance'] for x in c):.3f}, collapse below "
        f"{statistics.mean(x['threshold'] for x in c):.3f}); its forget accuracy is damage, "
        "not forgetting (try a smaller lr or fewer steps)"
    )


def register(app: typer.Typer) -> None:
    @app.command("forget")
    def forget(
        dataset: str = typer.Option("digits", help="dataset name (obliviate list datasets)"),
        forget_spec: str = typer.Option(
            "class:3",
            "--forget",
            help="random:K | random:P% | class:C | subclass:C:K | source:FILE | ids:1,2,3",
        ),
        method: str = typer.Option("retrain", help="unlearning method (obliviate list unlearners)"),
        seed: int = _c.seed_option(help="seed of the recipe, the forget-set draw and the method"),
        seeds: str = _c.seeds_option(),
        set_: list[str] = typer.Option(
            None, "--set", help="method hyperparameter key=value (repeatable)"
        ),
        epochs: int = typer.Option(None, min=1, help="override the recipe's training epochs"),
        quality: int = typer.Option(
            0,
            min=0,
            help="N >= 3 (0: off): NeurIPS-2023 forgetting quality, N unlearned vs N independently "
            "retrained models, with the noise floor of exact unlearning (32 a side recommended)",
        ),
        relearn_cap: int = typer.Option(200, min=0, help="cap on relearn-attack steps"),
        config: str = typer.Option(
            None,
            help="named configuration of tuned hyperparameters (e.g. scrub@mnist1d, from "
            "obliviate tune) or a .toml path; --set overrides single values",
        ),
        robustness: bool = typer.Option(
            False,
            "--robustness",
            help="add the robustness columns: recovery after int8 quantisation and after "
            "fine-tuning on related samples, linear probe (unlearned and oracle)",
        ),
        cache: str = typer.Option(
            None,
            help="cache folder for trained originals/oracles (default $OBLIVIATE_CACHE or ~/.cache/obliviate)",
        ),
        out: str = _c.out_option("write the result(s) to this JSON file (atomically)"),
        as_json: bool = _c.json_option(),
        quiet: bool = _c.quiet_option(),
        data_dir: str = typer.Option(
            None, help="folder with the dataset's files (mnist, fashion-mnist)"
        ),
        device: str = _c.device_option(),
        precision: str = _c.precision_option(),
    ) -> None:
        """Train (or load) the original and the retrained oracle, unlearn, and print the comparison."""
        import math
        import statistics

        import torch
        from rich.table import Table

        from obliviate.cli._common import parse_seeds, parse_sets
        from obliviate.experiments.forget import CACHE_ENV, ForgetSpec, run_forget
        from obliviate.io import write_json_atomic
        from obliviate.unlearning import unlearner_class

        torch.set_num_threads(
            1
        )  # the small models here run fastest (and fairest to time) on one thread
        params = parse_sets(unlearner_class(method), set_)
        if out:  # checked before the (long) training, not after it
            _c.check_out_target(out)
        cache_dir = (
            cache
            or os.environ.get(CACHE_ENV)
            or os.path.join(os.path.expanduser("~"), ".cache", "obliviate")
        )
        results = []
        for s in parse_seeds(seed, seeds):
            spec = ForgetSpec(
                dataset=dataset,
                forget=forget_spec,
                method=method,
                seed=s,
                params=params,
                n_epochs=epochs,
                quality=quality,
                relearn_cap=relearn_cap,
                config=config,
                robustness=robustness,
                cache_dir=cache_dir,
                data_dir=data_dir,
                device=device,
                precision=precision,
            )
            results.append(run_forget(spec))

        def cell(values: list[float], fmt: str = "{:.3f}") -> str:
            vals = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
            if not vals:
                return "-"
            if len(vals) == 1:
                return fmt.format(vals[0])
            return f"{fmt.format(statistics.mean(vals))} ± {fmt.format(statistics.stdev(vals))}"

        r0 = results[0]
        table = Table(
            title=f"forget {forget_spec} on {dataset} with {method} ({r0['n_forget']} ids, "
            f"{len(results)} seed{'s' if len(results) > 1 else ''})"
        )
        for col in (
            "model",
            "retain acc",
            "forget acc",
            "test acc",
            "MIA AUC (loss)",
            "MIA AUC (entropy)",
            "MIA AUC (logistic)",
        ):
            table.add_column(col)
        for who in ("original", "oracle", "unlearned"):
            rs = [r[who] for r in results]
            table.add_row(
                who if who != "unlearned" else method,
                cell([r["retain_acc"] for r in rs]),
                cell([r["forget_acc"] for r in rs]),
                cell([r["test_acc"] for r in rs]),
                cell([r["mia_auc"] for r in rs]),
                cell([r["mia"]["entropy_auc"] for r in rs]),
                cell([r["mia"]["logistic_auc"] for r in rs]),
            )
        console = _c.console(quiet=as_json)  # the table and its lines (not with --json)
        console.print(table)
        console.print(
            f"JS to oracle: forget {cell([r['js_to_oracle']['forget'] for r in results], '{:.4f}')}, "
            f"test {cell([r['js_to_oracle']['test'] for r in results], '{:.4f}')}  |  relearn steps: "
            f"{cell([float(r['relearn_steps']) for r in results], '{:.0f}')} (oracle "
            f"{cell([float(r['relearn_steps_oracle']) for r in results], '{:.0f}')}, cap {relearn_cap})  |  "
            f"time {cell([r['seconds'] for r in results], '{:.3f}')} s, "
            + (
                speedup_text(
                    [r["speedup"] for r in results], [r["speedup_cpu"] for r in results], cell
                )
                if any(r.get("n_forget") for r in results)
                else "no speed-up: nothing to forget (the oracle is the original)"
            )
            + reused_note(results)
        )
        if robustness:
            rb = [r["robustness"] for r in results]

            def pair(key: str) -> str:
                return (
                    f"{cell([x[key]['unlearned']['after'] for x in rb])} (oracle "
                    f"{cell([x[key]['oracle']['after'] for x in rb])})"
                )

            console.print(
                f"robustness: forget acc after int8 quantisation {pair('quantization')}  |  after "
                f"{rb[0]['related_steps']} steps on {rb[0]['related_k']} related samples "
                f"{pair('related_finetune')}  |  linear probe on forget set "
                f"{cell([x['probe']['unlearned'] for x in rb if x['probe']['unlearned'] is not None])}"
                f" (oracle {cell([x['probe']['oracle'] for x in rb if x['probe']['oracle'] is not None])})"
            )
        if quality:
            console.print(
                f"forgetting quality (N={quality} a side, independent seeds): F "
                f"{cell([r['quality']['F'] for r in results])}, noise floor (retrain vs retrain) "
                f"{cell([r['quality'].get('noise_floor', {}).get('F', float('nan')) for r in results])}, "
                f"score {cell([r['quality']['score'] for r in results])}; finite epsilon <= "
                f"{results[0]['quality'].get('max_finite_epsilon', float('nan')):.2f} at this N"
            )
        collapsed = [r for r in results if r.get("collapsed")]
        if collapsed:  # one line on stderr, also with --json
            print(f"warning: {collapse_warning(method, results, collapsed)}", file=sys.stderr)
        for r in results:
            if r["learned"]:
                console.print(f"seed {r['spec']['seed']} learned: {r['learned']}")
        payload = results[0] if len(results) == 1 else {"runs": results}
        if as_json:
            _c.emit_json(payload)
        if out:
            with _c.writing(out):
                write_json_atomic(out, payload, allow_nan=True)
            _c.console(quiet=quiet, stderr=as_json).print(f"wrote {out}")
